//! Sampling where a process spends its CPU with Linux `perf` (Debian's linux-perf), for the
//! benchmark's profiles. Hardware counters are often missing on virtual machines, so samples are
//! taken on the `cpu-clock` software event, which works wherever `perf` may observe the process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::system::find_program;

/// Samples per second.
const FREQUENCY: &str = "499";

/// A `perf record` of one process, running until [`Recording::finish`].
#[derive(Debug)]
pub struct Recording {
    perf: PathBuf,
    child: Child,
    data: PathBuf,
}

impl Recording {
    /// Starts sampling `pid` into `data`; fails if `perf` is missing.
    pub fn start(pid: u32, data: &Path) -> anyhow::Result<Self> {
        let perf = find_program("perf", "linux-perf")?;
        let child = Command::new(&perf)
            .args(["record", "-e", "cpu-clock", "-F", FREQUENCY, "-p"])
            .arg(pid.to_string())
            .arg("-o")
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start perf record")?;
        Ok(Self {
            perf,
            child,
            data: data.to_owned(),
        })
    }

    /// Stops sampling; returns the `top` symbols with their share of the samples (percent).
    pub fn finish(mut self, top: usize) -> anyhow::Result<Vec<(f64, String)>> {
        let pid = i32::try_from(self.child.id()).context("perf pid")?;
        kill(Pid::from_raw(pid), Signal::SIGINT).context("stop perf record")?;
        let status = self.child.wait()?;
        if !self.data.exists() {
            bail!("perf record wrote nothing ({status})");
        }
        let output = Command::new(&self.perf)
            .args([
                "report",
                "--no-children",
                "--sort",
                "dso,symbol",
                "--stdio",
                "-q",
            ])
            .args(["-g", "none", "-i"])
            .arg(&self.data)
            .stderr(Stdio::null())
            .output()
            .context("perf report")?;
        Ok(symbols(&String::from_utf8_lossy(&output.stdout), top))
    }
}

/// The first `top` lines of `perf report --sort dso,symbol -q`
/// (`  44.26%  mariadbd  [.] Item_func_quote::val_str  -  -`), as `(44.26, "mariadbd
/// Item_func_quote::val_str")`. An address without a symbol (a function the binary does not
/// export, e.g. most of InnoDB in Debian's stripped mariadbd) keeps its offset.
fn symbols(report: &str, top: usize) -> Vec<(f64, String)> {
    report
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let share: f64 = words.next()?.strip_suffix('%')?.parse().ok()?;
            let object = words.next()?;
            let _privilege = words.next()?;
            let symbol: Vec<&str> = words.take_while(|word| *word != "-").collect();
            let symbol = symbol.join(" ");
            let symbol = match symbol.strip_prefix("0x") {
                Some(hex) => format!("0x{} (no symbol)", hex.trim_start_matches('0')),
                None => symbol,
            };
            Some((share, format!("{object} {symbol}")))
        })
        .take(top)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_become_shares_and_symbols() {
        let report = "    44.26%  mariadbd   [.] Item_func_quote::val_str      -      -   \n\
                      \n\
                      13.20%  mariadbd   [.] 0x0000000000d93e0f   -   -\n\
                      7.21%  [kernel.kallsyms]  [k] irqentry_exit_to_user_mode  -  -\n\
                      1.00%  libc.so.6  [.] __memmove_avx_unaligned_erms  -  -\n";
        assert_eq!(
            symbols(report, 3),
            vec![
                (44.26, "mariadbd Item_func_quote::val_str".to_owned()),
                (13.2, "mariadbd 0xd93e0f (no symbol)".to_owned()),
                (
                    7.21,
                    "[kernel.kallsyms] irqentry_exit_to_user_mode".to_owned()
                ),
            ]
        );
    }
}

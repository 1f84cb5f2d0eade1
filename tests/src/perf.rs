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
                "symbol",
                "--stdio",
                "-q",
                "-i",
            ])
            .arg(&self.data)
            .stderr(Stdio::null())
            .output()
            .context("perf report")?;
        Ok(symbols(&String::from_utf8_lossy(&output.stdout), top))
    }
}

/// The first `top` lines of `perf report --sort symbol -q` (`  44.26%  [.] name`).
fn symbols(report: &str, top: usize) -> Vec<(f64, String)> {
    report
        .lines()
        .filter_map(|line| {
            let (share, rest) = line.trim().split_once('%')?;
            let share: f64 = share.trim().parse().ok()?;
            let name = rest
                .trim()
                .trim_start_matches("[.]")
                .trim_start_matches("[k]");
            Some((share, name.trim().to_owned()))
        })
        .take(top)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_become_shares_and_symbols() {
        let report = "    44.26%  [.] Item_func_quote::val_str\n\
                      \n\
                      7.21%  [k] irqentry_exit_to_user_mode\n\
                      1.00%  [.] crc32c_3way\n";
        assert_eq!(
            symbols(report, 2),
            vec![
                (44.26, "Item_func_quote::val_str".to_owned()),
                (7.21, "irqentry_exit_to_user_mode".to_owned()),
            ]
        );
    }
}

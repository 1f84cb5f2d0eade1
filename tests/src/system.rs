//! Finding system binaries and free ports.

use std::net::TcpListener;
use std::path::PathBuf;

/// Directories searched for server binaries besides `PATH` (Debian puts `mariadbd` in sbin).
const EXTRA_DIRS: &[&str] = &["/usr/sbin", "/usr/local/sbin", "/sbin"];

/// Why the harness cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A required program is not installed.
    #[error(
        "{program} not found on PATH or in /usr/sbin; install it with \
         `sudo apt-get install -y {package}` (or run `make test`, which installs it)"
    )]
    MissingProgram {
        /// The program looked for.
        program: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },
}

/// The full path of `program`, or an error naming the Debian package to install.
pub fn find_program(program: &'static str, package: &'static str) -> Result<PathBuf, Error> {
    let path_dirs = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or(Error::MissingProgram { program, package })
}

/// A TCP port on 127.0.0.1 that was free a moment ago, below the kernel's ephemeral range when
/// it can: a port the kernel hands out (`bind(0)`) is also one it may give the next outgoing
/// connection before the server under test binds it ("Address already in use"), and a test
/// run makes thousands of connections.
pub fn free_port() -> std::io::Result<u16> {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let low = 10_000_u16;
    if ephemeral_start > low + 1_000 {
        let span = u128::from(ephemeral_start - low);
        for _ in 0..100 {
            let offset = uuid::Uuid::new_v4().as_u128() % span;
            let port = low + u16::try_from(offset).unwrap_or(0);
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_program_names_the_package() {
        let error = find_program("surely-not-a-program-shoal", "shoal-pkg").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("surely-not-a-program-shoal"), "{message}");
        assert!(
            message.contains("apt-get install -y shoal-pkg"),
            "{message}"
        );
    }

    #[test]
    fn finds_sh() {
        assert!(find_program("sh", "dash").unwrap().is_file());
    }
}

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

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
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

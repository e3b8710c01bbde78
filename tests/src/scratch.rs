//! Scratch space for tests: one unique directory under the system temp directory, removed with
//! everything in it when dropped, so that a test run leaves nothing behind. Whatever a test or
//! a process it starts writes (policy files, SQLite state with its `-wal` and `-shm`, maildirs,
//! certificates) goes into one of these, owned by the value that needs it for as long as it is
//! used.

use std::path::{Path, PathBuf};

/// A directory of its own, removed recursively on drop.
#[derive(Debug)]
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    /// Creates `cmk-guard-{what}-XXXXXX` under the system temp directory; `what` says whose it
    /// is if one is ever left behind (a test process killed before its drops ran).
    pub fn new(what: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(&format!("cmk-guard-{what}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a scratch directory for {what}: {e}"));
        Scratch(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// `name` inside the directory (nothing is created).
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// Writes `contents` to `name` inside the directory and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(name);
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// A `CMKGUARD_STATE` value for a SQLite file `name` inside the directory.
    pub fn sqlite_state(&self, name: &str) -> String {
        format!("sqlite:{}", self.join(name).display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_and_everything_in_it_is_removed_on_drop() {
        let scratch = Scratch::new("scratch-test");
        let dir = scratch.path().to_path_buf();
        assert!(dir.starts_with(std::env::temp_dir()));
        let file = scratch.write("nested.txt", "x");
        std::fs::create_dir(scratch.join("sub")).unwrap();
        std::fs::write(scratch.join("sub/state.db-wal"), "y").unwrap();
        assert!(file.is_file());
        drop(scratch);
        assert!(!dir.exists(), "{} is left", dir.display());
    }

    #[test]
    fn every_scratch_directory_is_new() {
        let a = Scratch::new("scratch-test");
        let b = Scratch::new("scratch-test");
        assert_ne!(a.path(), b.path());
    }
}

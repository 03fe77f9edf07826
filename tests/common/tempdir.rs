//! A fresh, empty directory per test, removed on drop.

use std::path::PathBuf;

/// `$TMP/rota-<prefix>-<test>-<pid>`, emptied at creation and removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory for `test` of the suite `prefix`.
    pub fn new(prefix: &str, test: &str) -> Self {
        let name = format!("rota-{prefix}-{test}-{}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// A path inside the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The names in the directory, sorted.
    pub fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

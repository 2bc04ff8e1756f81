//! `--pid-file FILE`: the master's pid, for init scripts and `kill -USR2 $(cat FILE)`.
//!
//! During a binary upgrade the old master renames its file to `FILE.oldbin` (as nginx
//! does), so `FILE` names the new master as soon as it writes it; if the upgrade fails
//! the old master moves it back. A file is removed on exit only while it still holds
//! our pid, so an old master never deletes its successor's file.

use std::io;
use std::path::{Path, PathBuf};

pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes this process's pid to `path`.
    pub fn write(path: &Path) -> io::Result<PidFile> {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot write the pid file {}: {e}", path.display()),
            )
        })?;
        Ok(PidFile {
            path: path.to_path_buf(),
        })
    }

    fn oldbin(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".oldbin");
        PathBuf::from(p)
    }

    /// Before starting a new binary: `FILE` -> `FILE.oldbin`.
    pub fn set_aside(&self) {
        if let Err(e) = std::fs::rename(&self.path, self.oldbin()) {
            tracing::warn!(path = %self.path.display(), "cannot rename the pid file: {e}");
        }
    }

    /// The upgrade failed: `FILE.oldbin` -> `FILE` (written again if it is gone).
    pub fn restore(&self) {
        if std::fs::rename(self.oldbin(), &self.path).is_err() {
            let _ = std::fs::write(&self.path, format!("{}\n", std::process::id()));
        }
    }

    fn ours(path: &Path) -> bool {
        std::fs::read_to_string(path)
            .is_ok_and(|s| s.trim().parse::<u32>().ok() == Some(std::process::id()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        for p in [self.path.clone(), self.oldbin()] {
            if PidFile::ours(&p) {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_aside_restore_and_removal() {
        let dir = std::env::temp_dir().join(format!("sy-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sy.pid");
        let f = PidFile::write(&path).unwrap();
        let me = format!("{}\n", std::process::id());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), me);
        f.set_aside();
        assert!(!path.exists());
        assert_eq!(
            std::fs::read_to_string(dir.join("sy.pid.oldbin")).unwrap(),
            me
        );
        f.restore();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), me);
        // A successor's file is left alone.
        f.set_aside();
        std::fs::write(&path, "1\n").unwrap();
        drop(f);
        assert!(path.exists());
        assert!(!dir.join("sy.pid.oldbin").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Watching the config file: a change (or SIGHUP) -> load -> validate -> swap.
//!
//! The watcher follows the file's *directory*, not the file: editors that write a new
//! file and rename it over the old one, and Kubernetes ConfigMaps that swap a `..data`
//! symlink, replace the inode, which a watch on the file itself would lose. Any event
//! in the directory makes the control loop re-read the file; it reloads only if the
//! bytes changed, so unrelated files in the directory cost a read, nothing more.

use std::path::{Path, PathBuf};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Keeps the directory watch alive; dropping it stops watching.
pub struct FileWatch {
    _watcher: notify::RecommendedWatcher,
}

/// Watches the directory holding `path`; each event sends `()` on `tx`.
pub fn watch(path: &Path, tx: mpsc::UnboundedSender<()>) -> notify::Result<FileWatch> {
    let dir: PathBuf = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            // Opening and reading the file (which the reload itself does) must not
            // count as a change, or the watch would trigger itself forever.
            Ok(e) if matches!(e.kind, notify::EventKind::Access(_)) => {}
            Ok(_) => {
                let _ = tx.send(());
            }
            Err(e) => tracing::warn!("config file watch error: {e}"),
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(FileWatch { _watcher: watcher })
}

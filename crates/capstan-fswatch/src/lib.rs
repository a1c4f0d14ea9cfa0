//! Debounced recursive file watching: calls back once per burst of changes, after the paths
//! have been quiet for `debounce` (or at most `10 × debounce` after the burst began, so a
//! constantly changing directory still gets reloaded).

pub use notify::Error;
use notify::{RecursiveMode, Watcher};
use std::path::PathBuf;
use std::time::Duration;

/// Watches `paths` (files or directories, recursively) and calls `on_change` after each burst
/// of changes. Returns when `on_change` returns `false`, or with an error when watching fails.
pub async fn watch(
    paths: &[PathBuf],
    debounce: Duration,
    mut on_change: impl FnMut() -> bool,
) -> Result<(), notify::Error> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // The receiver only goes away when watching stops; nothing to do then.
        let _ = tx.send(event.is_ok());
    })?;
    for path in paths {
        watcher.watch(path, RecursiveMode::Recursive)?;
    }
    while rx.recv().await.is_some() {
        let deadline = tokio::time::Instant::now() + debounce * 10;
        loop {
            let quiet = tokio::time::Instant::now() + debounce;
            match tokio::time::timeout_at(quiet.min(deadline), rx.recv()).await {
                Ok(Some(_)) if tokio::time::Instant::now() < deadline => continue,
                Ok(None) => return Ok(()),
                _ => break,
            }
        }
        if !on_change() {
            return Ok(());
        }
    }
    Ok(())
}

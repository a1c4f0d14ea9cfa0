//! Debounced file watching: calls back once per burst of changes, after the paths have been
//! quiet for `debounce` (or at most `10 × debounce` after the burst began, so a constantly
//! changing directory still gets reloaded).
//!
//! Only changes count (create, modify, remove, rename): access events are ignored, because the
//! reload itself opens and reads every file, and counting those would make each reload trigger
//! the next. Two events say a write is complete, and end the quiet period at once: a file
//! closed after writing, and a file renamed into place (editors' and tools' atomic replace).
//! A burst of such writes still reloads once per write, never in the middle of one.

pub use notify::Error;
use notify::{EventKind, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What to watch.
#[derive(Clone, Debug)]
pub enum Target {
    /// A directory and everything under it (or a single file).
    Tree(PathBuf),
    /// One file, watched through its directory so that editors' write-and-rename is seen.
    File(PathBuf),
}

fn is_change(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
    ) || is_complete(kind)
}

/// A write that is finished: the writer closed the file, or moved it into place.
fn is_complete(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
    matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
    )
}

fn concerns(targets: &[Target], paths: &[PathBuf]) -> bool {
    targets.iter().any(|t| match t {
        Target::Tree(_) => true,
        Target::File(file) => {
            paths.is_empty()
                || paths
                    .iter()
                    .any(|p| p == file || p.file_name() == file.file_name())
        }
    })
}

/// Watches `targets` and calls `on_change` after each burst of changes. Returns when
/// `on_change` returns `false`, or with an error when watching fails.
pub async fn watch(
    targets: &[Target],
    debounce: Duration,
    mut on_change: impl FnMut() -> bool,
) -> Result<(), notify::Error> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let owned = targets.to_vec();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let (relevant, complete) = match &event {
            Ok(e) => (
                is_change(&e.kind) && concerns(&owned, &e.paths),
                is_complete(&e.kind),
            ),
            // Errors (queue overflow) may hide changes: reload to be safe.
            Err(_) => (true, false),
        };
        if relevant {
            // The receiver only goes away when watching stops; nothing to do then.
            let _ = tx.send(complete);
        }
    })?;
    for target in targets {
        match target {
            Target::Tree(path) => watcher.watch(path, RecursiveMode::Recursive)?,
            Target::File(file) => {
                let dir = file
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                watcher.watch(dir, RecursiveMode::NonRecursive)?
            }
        }
    }
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + debounce * 10;
        let mut complete = first;
        while !complete {
            let quiet = tokio::time::Instant::now() + debounce;
            match tokio::time::timeout_at(quiet.min(deadline), rx.recv()).await {
                Ok(Some(done)) if tokio::time::Instant::now() < deadline => complete = done,
                Ok(None) => return Ok(()),
                _ => break,
            }
        }
        // Whatever else already arrived belongs to this reload.
        while rx.try_recv().is_ok() {}
        if !on_change() {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn reading_files_does_not_trigger_a_reload_but_writing_does() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, "a").unwrap();
        let reloads = Arc::new(AtomicUsize::new(0));
        let counter = reloads.clone();
        let reader = file.clone();
        let task = tokio::spawn(async move {
            watch(
                &[Target::Tree(dir.path().to_path_buf())],
                Duration::from_millis(20),
                move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    // What a reload does: read every file.
                    let _ = std::fs::read_to_string(&reader);
                    true
                },
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        std::fs::write(&file, "b").unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        for _ in 0..5 {
            let _ = std::fs::read_to_string(&file);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        task.abort();
        assert_eq!(
            reloads.load(Ordering::SeqCst),
            1,
            "one write, one reload; reads trigger nothing"
        );
    }

    /// Watches `target`, counting reloads.
    fn counting(
        target: Target,
        debounce: Duration,
    ) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<Result<(), Error>>) {
        let reloads = Arc::new(AtomicUsize::new(0));
        let counter = reloads.clone();
        let task = tokio::spawn(async move {
            watch(&[target], debounce, move || {
                counter.fetch_add(1, Ordering::SeqCst);
                true
            })
            .await
        });
        (reloads, task)
    }

    /// Waits (at most 10 s) until `reloads` reaches `n`.
    async fn wait_for(reloads: &AtomicUsize, n: usize) -> bool {
        for _ in 0..200 {
            if reloads.load(Ordering::SeqCst) >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_file_target_ignores_its_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("registry.yaml");
        std::fs::write(&file, "a").unwrap();
        let (reloads, task) = counting(Target::File(file.clone()), Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(200)).await;
        std::fs::write(dir.path().join("other.yaml"), "x").unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(reloads.load(Ordering::SeqCst), 0);
        std::fs::write(dir.path().join(".tmp"), "new").unwrap();
        std::fs::rename(dir.path().join(".tmp"), &file).unwrap();
        let replaced = wait_for(&reloads, 1).await;
        task.abort();
        assert!(replaced, "replacing the file must reload");
    }

    /// A finished write (closed, or renamed into place) is applied without waiting out the
    /// quiet period; an open, unfinished one waits. (The quiet period here is 60 s, so this
    /// checks the behaviour, not a speed: the bounds are generous.)
    #[tokio::test]
    async fn finished_writes_end_the_quiet_period() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("registry.json");
        std::fs::write(&file, "a").unwrap();
        let (reloads, task) = counting(Target::File(file.clone()), Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Written and closed.
        std::fs::write(&file, "b").unwrap();
        assert!(
            wait_for(&reloads, 1).await,
            "a closed write is applied at once"
        );
        // Written elsewhere and renamed into place.
        std::fs::write(dir.path().join(".tmp"), "c").unwrap();
        std::fs::rename(dir.path().join(".tmp"), &file).unwrap();
        assert!(
            wait_for(&reloads, 2).await,
            "a rename into place is applied at once"
        );
        // Still open: waits for the quiet period (60 s), so nothing within a second.
        let mut open = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        open.write_all(b"d").unwrap();
        open.flush().unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            reloads.load(Ordering::SeqCst),
            2,
            "an unfinished write waits"
        );
        drop(open);
        assert!(wait_for(&reloads, 3).await, "closing it finishes the write");
        task.abort();
    }
}

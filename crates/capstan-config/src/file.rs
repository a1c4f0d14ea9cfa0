//! The file config source: a set of directories of YAML/JSON, loaded recursively, validated,
//! and hot-reloaded on change.
//!
//! An invalid object is logged with its errors and skipped; the rest apply. When an object that
//! was valid becomes invalid (a bad edit), or its file becomes unreadable, the last good version
//! stays in the store: an invalid config never reaches a proxy, and a proxy keeps its last good one.

use crate::store::{ConfigChange, ConfigKey, ConfigStore};
use capstan_api::batch::check_across_objects;
use capstan_api::decode::{check_documents, CheckOptions, ObjectResult, Verdict};
use capstan_api::{IstioObject, Kind};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Largest file read.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Most files read from one source.
const MAX_FILES: usize = 100_000;

/// An object that was rejected, and where it was.
#[derive(Debug)]
pub struct Rejected {
    /// The file.
    pub file: PathBuf,
    /// What validation said.
    pub result: ObjectResult,
    /// True when the last good version of the object was kept in its place.
    pub kept_last_good: bool,
}

/// The outcome of one load.
#[derive(Debug, Default)]
pub struct Load {
    /// Objects that will be in the store (valid ones and kept last-good ones).
    pub objects: Vec<IstioObject>,
    /// Objects that were rejected.
    pub rejected: Vec<Rejected>,
    /// Files or directories that could not be read.
    pub read_errors: Vec<(PathBuf, String)>,
}

/// A directory-of-YAML config source.
pub struct FileSource {
    name: String,
    dirs: Vec<PathBuf>,
    opts: CheckOptions,
    /// Objects of the previous load, by file, for keeping last good versions.
    previous: BTreeMap<PathBuf, Vec<IstioObject>>,
}

fn read_limited(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{e} (is it UTF-8 text?)"))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("file is larger than {MAX_FILE_BYTES} bytes"));
    }
    Ok(text)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<(PathBuf, String)>) {
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => {
            errors.push((dir.to_path_buf(), e.to_string()));
            return;
        }
    };
    entries.sort();
    for path in entries {
        if out.len() >= MAX_FILES {
            errors.push((
                dir.to_path_buf(),
                format!("more than {MAX_FILES} files; the rest are ignored"),
            ));
            return;
        }
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect_files(&path, out, errors);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
}

fn key_of_rejected(r: &ObjectResult) -> Option<ConfigKey> {
    let kind = Kind::ALL
        .iter()
        .copied()
        .find(|k| Some(k.name()) == r.kind.as_deref())?;
    (!r.name.is_empty()).then(|| ConfigKey {
        kind,
        namespace: r.namespace.clone(),
        name: r.name.clone(),
    })
}

impl FileSource {
    /// A source reading `dirs` (directories or single files).
    pub fn new(dirs: Vec<PathBuf>, opts: CheckOptions) -> FileSource {
        let name = format!(
            "file:{}",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        FileSource {
            name,
            dirs,
            opts,
            previous: BTreeMap::new(),
        }
    }

    /// The source's name in the store.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads and validates every file now.
    pub fn load(&mut self) -> Load {
        let mut load = Load::default();
        let mut files = Vec::new();
        for dir in &self.dirs {
            if dir.is_file() {
                files.push(dir.clone());
            } else {
                collect_files(dir, &mut files, &mut load.read_errors);
            }
        }
        let mut results: Vec<ObjectResult> = Vec::new();
        let mut origins: Vec<PathBuf> = Vec::new();
        let mut unreadable = Vec::new();
        for file in files {
            match read_limited(&file) {
                Ok(text) => {
                    let found = check_documents(&text, &self.opts);
                    origins.extend(std::iter::repeat_n(file.clone(), found.len()));
                    results.extend(found);
                }
                Err(e) => {
                    load.read_errors.push((file.clone(), e));
                    unreadable.push(file);
                }
            }
        }
        check_across_objects(&mut results);
        let mut current: BTreeMap<PathBuf, Vec<IstioObject>> = BTreeMap::new();
        for file in unreadable {
            if let Some(previous) = self.previous.get(&file) {
                current.insert(file, previous.clone());
            }
        }
        for (result, file) in results.into_iter().zip(origins) {
            match result.verdict {
                Verdict::Skipped => {}
                Verdict::Valid => {
                    if let Some(object) = result.object {
                        current.entry(file).or_default().push(*object);
                    }
                }
                Verdict::Invalid => {
                    let last_good = key_of_rejected(&result).and_then(|key| {
                        self.previous
                            .get(&file)?
                            .iter()
                            .find(|o| ConfigKey::of(o) == key)
                            .cloned()
                    });
                    let kept_last_good = last_good.is_some();
                    if let Some(object) = last_good {
                        current.entry(file.clone()).or_default().push(object);
                    }
                    load.rejected.push(Rejected {
                        file,
                        result,
                        kept_last_good,
                    });
                }
            }
        }
        load.objects = current.values().flatten().cloned().collect();
        self.previous = current;
        load
    }

    /// Loads now and applies the result to `store`, logging every rejected object.
    pub fn sync(&mut self, store: &ConfigStore) -> (Load, Option<ConfigChange>) {
        let mut load = self.load();
        for (path, error) in &load.read_errors {
            tracing::error!(path = %path.display(), %error, "cannot read config");
        }
        for r in &load.rejected {
            let errors: Vec<String> = r.result.errors.iter().map(|d| d.to_string()).collect();
            tracing::error!(
                file = %r.file.display(),
                line = r.result.line,
                kind = r.result.kind.as_deref().unwrap_or("?"),
                namespace = %r.result.namespace,
                name = %r.result.name,
                kept_last_good = r.kept_last_good,
                errors = ?errors,
                "invalid config object rejected"
            );
        }
        let change = store.replace_source(&self.name, std::mem::take(&mut load.objects));
        if let Some(change) = &change {
            tracing::info!(
                revision = change.revision,
                events = change.events.len(),
                "config updated from files"
            );
        }
        (load, change)
    }

    /// Syncs once, then watches the paths and re-syncs after each burst of changes (see
    /// [`capstan_fswatch::watch`]). Runs until everyone else has dropped the store, or watching fails.
    pub async fn run(
        mut self,
        store: Arc<ConfigStore>,
        debounce: Duration,
    ) -> Result<(), capstan_fswatch::Error> {
        self.sync(&store);
        let targets: Vec<capstan_fswatch::Target> = self
            .dirs
            .iter()
            .cloned()
            .map(capstan_fswatch::Target::Tree)
            .collect();
        capstan_fswatch::watch(&targets, debounce, || {
            self.sync(&store);
            Arc::strong_count(&store) > 1
        })
        .await
    }
}

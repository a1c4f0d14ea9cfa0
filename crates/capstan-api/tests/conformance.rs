//! Istio's own YAML (samples and its validation dataset, unmodified, in `../shared/conformance/istio`)
//! must get Istio's verdict: everything under `valid/` validates, every Istio document under
//! `invalid/` is rejected. Non-Istio kinds are skipped.

use capstan_api::{check_text, CheckOptions, Verdict};
use std::path::{Path, PathBuf};

/// `../shared/conformance/istio` beside the repository (CI lays `shared/` there too);
/// `CAPSTAN_SHARED_DIR` overrides the `shared` folder.
fn corpus_dir() -> PathBuf {
    let shared = std::env::var_os("CAPSTAN_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let dir = shared.join("conformance/istio");
    assert!(
        dir.is_dir(),
        "the Istio conformance corpus is missing at {} (set CAPSTAN_SHARED_DIR to the shared/ folder)",
        dir.display()
    );
    dir
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("corpus directory is readable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn check_dir(sub: &str, expected: Verdict) -> usize {
    let files = yaml_files(&corpus_dir().join(sub));
    assert!(!files.is_empty(), "no files under {sub}");
    let mut failures = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("corpus file is UTF-8");
        for r in check_text(&text, &CheckOptions::default()) {
            if r.verdict == Verdict::Skipped {
                continue;
            }
            checked += 1;
            if r.verdict != expected {
                failures.push(format!(
                    "{}:{} {} {}: expected {expected:?}, got {:?}; errors: {:?}",
                    file.display(),
                    r.line,
                    r.kind.as_deref().unwrap_or("?"),
                    r.name,
                    r.verdict,
                    r.errors.iter().map(|d| d.to_string()).collect::<Vec<_>>()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {checked} documents got the wrong verdict:\n{}", failures.len(), failures.join("\n"));
    checked
}

#[test]
fn upstream_valid_documents_validate() {
    let n = check_dir("valid", Verdict::Valid);
    assert!(n >= 20, "expected the whole valid corpus to be checked, saw {n} objects");
}

#[test]
fn upstream_invalid_documents_are_rejected() {
    let n = check_dir("invalid", Verdict::Invalid);
    assert!(n >= 6, "expected the whole invalid corpus to be checked, saw {n} objects");
}

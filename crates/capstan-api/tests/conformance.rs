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
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn check_dir(sub: &str, expected: Verdict, opts: &CheckOptions) -> usize {
    let files = yaml_files(&corpus_dir().join(sub));
    assert!(!files.is_empty(), "no files under {sub}");
    let mut failures = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("corpus file is UTF-8");
        for r in check_text(&text, opts) {
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
    assert!(
        failures.is_empty(),
        "{} of {checked} documents got the wrong verdict:\n{}",
        failures.len(),
        failures.join("\n")
    );
    checked
}

fn without_delegation() -> CheckOptions {
    CheckOptions {
        virtual_service_delegate: false,
        ..CheckOptions::default()
    }
}

#[test]
fn upstream_valid_documents_validate() {
    for opts in [CheckOptions::default(), without_delegation()] {
        let n = check_dir("valid", Verdict::Valid, &opts);
        assert!(
            n >= 20,
            "expected the whole valid corpus to be checked, saw {n} objects"
        );
    }
}

/// The invalid dataset was taken from Istio commits that predate VirtualService delegation:
/// two of its VirtualServices are invalid only because they have no hosts. Current Istio (and
/// Capstan by default) reads a host-less VirtualService as a delegate, so these documents get
/// Istio's verdict of their time with delegation off (`PILOT_ENABLE_VIRTUAL_SERVICE_DELEGATE=false`).
#[test]
fn upstream_invalid_documents_are_rejected() {
    let n = check_dir("invalid", Verdict::Invalid, &without_delegation());
    assert!(
        n >= 6,
        "expected the whole invalid corpus to be checked, saw {n} objects"
    );
}

/// With delegation on, every invalid document but the two host-less VirtualServices is still
/// rejected, and those two are accepted as delegates (with the no-hosts rule being the only reason).
#[test]
fn with_delegation_only_the_host_less_virtual_services_are_accepted() {
    let dir = corpus_dir().join("invalid");
    let mut accepted = Vec::new();
    for file in yaml_files(&dir) {
        let text = std::fs::read_to_string(&file).expect("corpus file is UTF-8");
        for r in check_text(&text, &CheckOptions::default()) {
            if r.verdict == Verdict::Valid {
                accepted.push(
                    file.file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default()
                        .to_string(),
                );
            }
        }
    }
    accepted.sort();
    assert_eq!(
        accepted,
        vec![
            "networking-v1alpha3-VirtualService-invalid.yaml",
            "networking-v1beta-VirtualService-invalid.yaml"
        ]
    );
    for name in &accepted {
        let text = std::fs::read_to_string(dir.join("galley").join(name)).expect("corpus file");
        let strict = check_text(&text, &without_delegation());
        let errors: Vec<&str> = strict[0]
            .errors
            .iter()
            .map(|d| d.message.as_str())
            .collect();
        assert_eq!(
            errors,
            vec!["virtual service must have at least one host"],
            "{name}"
        );
    }
}

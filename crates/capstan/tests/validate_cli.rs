//! `capstan validate` end to end: files, directories, stdin, JSON output, exit status.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const GOOD_VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n  namespace: default\nspec:\n  hosts:\n  - reviews\n  http:\n  - route:\n    - destination:\n        host: reviews\n        subset: v1\n      weight: 80\n    - destination:\n        host: reviews\n        subset: v3\n      weight: 20\n";
const BAD_VS: &str = "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: broken\n  namespace: default\nspec:\n  hosts:\n  - reviews\n  http:\n  - route:\n    - destination:\n        host: reviews\n      weight: -10\n";
const CONFIGMAP: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n";

fn capstan(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("capstan binary runs");
    {
        let mut input = child.stdin.take().expect("stdin is piped");
        input
            .write_all(stdin.unwrap_or("").as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("capstan exits")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn reports_every_document_and_fails_on_one_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mixed.yaml");
    std::fs::write(&file, format!("{GOOD_VS}---\n{CONFIGMAP}---\n{BAD_VS}")).unwrap();
    let out = capstan(&["validate", "-f", file.to_str().unwrap()], None);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(
        stdout.contains("valid    ") && stdout.contains("VirtualService default/reviews"),
        "{stdout}"
    );
    assert!(
        stdout.contains("skipped") && stdout.contains("ConfigMap"),
        "{stdout}"
    );
    assert!(
        stdout.contains("invalid")
            && stdout.contains("mixed.yaml:")
            && stdout.contains("(document 2)"),
        "{stdout}"
    );
    assert!(stdout.contains("1 valid, 1 invalid, 1 skipped"), "{stdout}");
    assert!(stderr.contains("spec.http[0].route[0].weight"), "{stderr}");
    assert!(
        !stdout.contains("error:"),
        "errors belong on stderr: {stdout}"
    );
}

#[test]
fn directories_are_searched_recursively_and_all_valid_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
    std::fs::write(dir.path().join("a/b/vs.yml"), GOOD_VS).unwrap();
    std::fs::write(
        dir.path().join("a/cm.json"),
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("README.md"), "not config").unwrap();
    let out = capstan(&["validate", "-f", dir.path().to_str().unwrap()], None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("1 valid, 0 invalid, 1 skipped"));
}

#[test]
fn reads_stdin_and_writes_json() {
    let out = capstan(
        &["validate", "-f", "-", "--output", "json"],
        Some(&format!("{BAD_VS}---\n{GOOD_VS}")),
    );
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(report["summary"]["invalid"], 1);
    assert_eq!(report["summary"]["valid"], 1);
    let first = &report["results"][0];
    assert_eq!(first["file"], "<stdin>");
    assert_eq!(first["verdict"], "invalid");
    assert_eq!(first["kind"], "VirtualService");
    assert_eq!(first["line"], 1);
    assert_eq!(first["errors"][0]["path"], "spec.http[0].route[0].weight");
}

#[test]
fn missing_files_fail_with_the_reason() {
    let out = capstan(&["validate", "-f", "/nonexistent/capstan.yaml"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no such file or directory"));
}

#[test]
fn json_input_and_lists_are_understood() {
    let list = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[{},{}]}}",
        serde_json::to_string(&serde_yaml_json(GOOD_VS)).unwrap(),
        serde_json::to_string(&serde_yaml_json(BAD_VS)).unwrap()
    );
    let out = capstan(&["validate", "-f", "-"], Some(&list));
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("items[0]") && stdout.contains("items[1]"),
        "{stdout}"
    );
}

fn serde_yaml_json(yaml: &str) -> serde_json::Value {
    serde_yaml_ng::from_str(yaml).expect("fixture is YAML")
}

//! Differential validation against Istio: run `istioctl validate` (built from istio.io/istio by
//! `tests/infra/install-tools.sh istio`) and `capstan validate` on the same Istio documents,
//! compare verdicts, and check the disagreements against the reviewed list in
//! `tests/testdata/validation-differences.yaml` (documented in docs/compatibility.md).

pub mod mutate;

use anyhow::{anyhow, bail, Context as _, Result};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// One tool's opinion of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opinion {
    /// `valid` or `invalid` (`skipped` for capstan: it did not treat the object as Istio's).
    pub verdict: String,
    /// Error lines (empty when valid).
    pub errors: Vec<String>,
    /// Warning lines (reported, never compared).
    pub warnings: Vec<String>,
}

/// One Istio object and what both tools said about it.
#[derive(Clone, Debug)]
pub struct Compared {
    /// Stable identity used in the differences file.
    pub id: String,
    /// `Kind ns/name` for the report.
    pub what: String,
    /// The object's YAML/JSON text, for the report of a fuzzed case.
    pub text: Option<String>,
    pub capstan: Opinion,
    pub istioctl: Opinion,
}

impl Compared {
    /// Whether the verdicts differ (warnings are not compared).
    pub fn disagrees(&self) -> bool {
        self.capstan.verdict != self.istioctl.verdict
    }
}

/// An Istio document to compare: one YAML document of a source file.
#[derive(Clone, Debug)]
pub struct Case {
    pub id: String,
    pub what: String,
    pub text: String,
}

// ------------------------------------------------------------------------------------------
// Finding the inputs.

/// The repository root (crates/capstan/../..).
pub fn repo_root() -> PathBuf {
    capstan_e2e::repo_root()
}

/// `shared/` beside the repository (CI lays it there too); `CAPSTAN_SHARED_DIR` overrides it.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("CAPSTAN_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared"))
}

/// `.yaml`/`.yml`/`.json` files under `dir`, sorted.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Whether a parsed document is an Istio object (any `*.istio.io` group): those are compared;
/// Kubernetes kinds, which istioctl checks for naming conventions only, are not.
pub fn is_istio(value: &Value) -> bool {
    value
        .get("apiVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.split_once('/'))
        .is_some_and(|(group, _)| group == "istio.io" || group.ends_with(".istio.io"))
}

/// `Kind ns/name` of a parsed object.
pub fn describe(value: &Value) -> String {
    let get = |k: &str| {
        value
            .get("metadata")
            .and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("?");
    let ns = get("namespace");
    format!(
        "{kind} {}/{}",
        if ns.is_empty() { "(default)" } else { &ns },
        get("name")
    )
}

/// The Istio documents of `file`, named `<label>#<document index>`. Documents that do not
/// parse are not Istio objects we can identify and are left out.
pub fn cases_in(file: &Path, label: &str) -> Result<Vec<Case>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut out = Vec::new();
    for doc in capstan_api::decode::split_documents(&text) {
        let Ok(value) = capstan_api::decode::parse_document(doc.text) else {
            continue;
        };
        if !is_istio(&value) {
            continue;
        }
        out.push(Case {
            id: format!("{label}#{}", doc.index),
            what: describe(&value),
            text: doc.text.to_owned(),
        });
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// Running the tools.

/// Runs both validators with no cluster: istioctl gets an empty HOME and a KUBECONFIG that
/// does not exist, so an attempt to reach a cluster would fail the comparison.
pub struct Validators {
    pub istioctl: PathBuf,
    pub capstan: PathBuf,
    home: tempfile::TempDir,
}

const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

impl Validators {
    pub fn new(istioctl: PathBuf, capstan: PathBuf) -> Result<Self> {
        Ok(Validators {
            istioctl,
            capstan,
            home: tempfile::tempdir()?,
        })
    }

    fn istioctl_command(&self) -> Command {
        let mut cmd = Command::new(&self.istioctl);
        cmd.env_clear()
            .env("HOME", self.home.path())
            .env("KUBECONFIG", self.home.path().join("no-such-kubeconfig"))
            .env("PATH", "/usr/bin:/bin");
        cmd
    }

    /// `istioctl version --remote=false -o json`: the build stamps, read with no cluster.
    pub fn istioctl_version(&self) -> Result<String> {
        let mut cmd = self.istioctl_command();
        cmd.args(["version", "--remote=false", "-o", "json"]);
        let out = capstan_e2e::run_ok(&mut cmd, None, TOOL_TIMEOUT)?;
        Ok(out.trim().to_owned())
    }

    /// istioctl's opinion of one document given on stdin.
    pub fn istioctl_one(&self, text: &str) -> Result<Opinion> {
        let mut cmd = self.istioctl_command();
        cmd.args(["validate", "-f", "-"]);
        let out = capstan_e2e::run_with_timeout(&mut cmd, Some(text), TOOL_TIMEOUT)?;
        let all = format!("{}{}", out.stdout, out.stderr);
        let lines = IstioctlOutput::parse(&all);
        let strip = |v: Vec<String>| -> Vec<String> {
            v.into_iter()
                .map(|l| object_prefix(&l).map_or(l.clone(), |(_, m)| m.to_owned()))
                .collect()
        };
        if out.status.success() {
            return Ok(Opinion {
                verdict: "valid".into(),
                errors: Vec::new(),
                warnings: strip(lines.warnings),
            });
        }
        // A rejection names the object ("Kind/ns/name: ...") or the decoding step; anything
        // else (a crash, an attempt to reach a cluster) is a failure of the harness.
        let understood = !lines.errors.is_empty()
            && lines
                .errors
                .iter()
                .all(|l| l.contains("failed to decode file") || object_prefix(l).is_some());
        if !understood {
            bail!(
                "istioctl validate failed ({}) without naming an object:\n{all}",
                out.status
            );
        }
        Ok(Opinion {
            verdict: "invalid".into(),
            errors: strip(lines.errors),
            warnings: strip(lines.warnings),
        })
    }

    /// istioctl's opinions of many documents in one file, by object name. Every object must
    /// have a distinct `metadata.name`; a line naming no listed object fails the run.
    pub fn istioctl_batch(
        &self,
        file: &Path,
        names: &[String],
    ) -> Result<BTreeMap<String, Opinion>> {
        let mut cmd = self.istioctl_command();
        cmd.arg("validate").arg("-f").arg(file);
        let out = capstan_e2e::run_with_timeout(&mut cmd, None, TOOL_TIMEOUT)?;
        let all = format!("{}{}", out.stdout, out.stderr);
        let mut by_name: BTreeMap<String, Opinion> = names
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    Opinion {
                        verdict: "valid".into(),
                        errors: Vec::new(),
                        warnings: Vec::new(),
                    },
                )
            })
            .collect();
        let lines = IstioctlOutput::parse(&all);
        for (section, is_error) in [(&lines.errors, true), (&lines.warnings, false)] {
            // A message that is itself a multierror continues on bullets naming no object.
            let mut last: Option<&str> = None;
            for line in section {
                if line.contains("failed to decode file") {
                    bail!("istioctl could not decode {}: {line}", file.display());
                }
                let (name, message) = match (object_prefix(line), last) {
                    (Some((name, message)), _) if by_name.contains_key(name) => (name, message),
                    (_, Some(name)) => (name, line.as_str()),
                    _ => {
                        bail!("istioctl names no object of the batch: {line}\nfull output:\n{all}")
                    }
                };
                last = Some(name);
                let opinion = by_name.get_mut(name).expect("checked above");
                if is_error {
                    opinion.verdict = "invalid".into();
                    opinion.errors.push(message.to_owned());
                } else {
                    opinion.warnings.push(message.to_owned());
                }
            }
        }
        if out.status.success() == by_name.values().any(|o| o.verdict == "invalid") {
            bail!(
                "istioctl exit status {} does not match the errors it printed:\n{all}",
                out.status
            );
        }
        Ok(by_name)
    }

    fn capstan_json(&self, args: &[&std::ffi::OsStr], stdin: Option<&str>) -> Result<Value> {
        let mut cmd = Command::new(&self.capstan);
        // istioctl puts objects without a namespace in "default"; so does this.
        cmd.args(["validate", "-o", "json", "-n", "default"])
            .args(args);
        let out = capstan_e2e::run_with_timeout(&mut cmd, stdin, TOOL_TIMEOUT)?;
        serde_json::from_str(&out.stdout).with_context(|| {
            format!(
                "capstan validate printed no JSON ({}): {}{}",
                out.status, out.stdout, out.stderr
            )
        })
    }

    /// capstan's opinion of one document given on stdin.
    pub fn capstan_one(&self, text: &str) -> Result<Opinion> {
        let report = self.capstan_json(&["-f".as_ref(), "-".as_ref()], Some(text))?;
        let results = report["results"].as_array().cloned().unwrap_or_default();
        let [result] = results.as_slice() else {
            bail!(
                "capstan reported {} results for one document: {report}",
                results.len()
            );
        };
        Ok(opinion_of(result))
    }

    /// capstan's opinions of every object in one file, by object name.
    pub fn capstan_batch(&self, file: &Path) -> Result<BTreeMap<String, Opinion>> {
        let report = self.capstan_json(&["-f".as_ref(), file.as_os_str()], None)?;
        let mut out = BTreeMap::new();
        for r in report["results"].as_array().into_iter().flatten() {
            let name = r["name"].as_str().unwrap_or_default().to_owned();
            if out.insert(name.clone(), opinion_of(r)).is_some() {
                bail!("capstan reported {name:?} twice");
            }
        }
        Ok(out)
    }
}

/// istioctl's report split into error and warning bullets. Warnings come first (after
/// `"<file>" has warnings:`, or alone when reading stdin), errors after `Error: N errors occurred:`.
#[derive(Debug, Default, PartialEq)]
struct IstioctlOutput {
    errors: Vec<String>,
    warnings: Vec<String>,
}

impl IstioctlOutput {
    fn parse(text: &str) -> IstioctlOutput {
        let mut out = IstioctlOutput::default();
        let mut in_errors = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with("Error:") {
                in_errors = true;
            } else if line.ends_with("has warnings:") {
                in_errors = false;
            } else if let Some(bullet) = line.strip_prefix("* ") {
                if in_errors {
                    out.errors.push(bullet.to_owned());
                } else {
                    out.warnings.push(bullet.to_owned());
                }
            }
        }
        out
    }
}

/// `Kind/namespace/name: message` → (name, message), as istioctl prefixes each error.
fn object_prefix(line: &str) -> Option<(&str, &str)> {
    let (head, message) = line.split_once(": ")?;
    let mut parts = head.split('/');
    let (kind, _ns, name) = (parts.next()?, parts.next()?, parts.next()?);
    let plain = |s: &str| !s.contains(' ');
    (parts.next().is_none() && !kind.is_empty() && plain(kind) && plain(name))
        .then_some((name, message))
}

fn opinion_of(result: &Value) -> Opinion {
    let lines = |key: &str| {
        result[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                format!(
                    "{}: {}",
                    d["path"].as_str().unwrap_or_default(),
                    d["message"].as_str().unwrap_or_default()
                )
            })
            .collect()
    };
    Opinion {
        verdict: result["verdict"].as_str().unwrap_or("?").to_owned(),
        errors: lines("errors"),
        warnings: lines("warnings"),
    }
}

/// Runs `f` over `items` on `workers` threads, keeping the input order.
pub fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut slots: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    let results = std::sync::Mutex::new(&mut slots);
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                results
                    .lock()
                    .expect("no worker panics while holding the lock")[i] = Some(r);
            });
        }
    });
    slots
        .into_iter()
        .map(|r| r.expect("every index was processed"))
        .collect()
}

// ------------------------------------------------------------------------------------------
// The reviewed differences.

/// One reviewed, intended difference (docs/compatibility.md, "Intended validation differences").
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listed {
    /// Case id; `*` matches any run of characters.
    pub id: String,
    /// capstan's verdict in that case.
    pub capstan: String,
    /// istioctl's verdict in that case.
    pub istioctl: String,
    /// Why the difference is intended.
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListedFile {
    differences: Vec<Listed>,
}

/// Path of the machine-readable list.
pub fn differences_path() -> PathBuf {
    repo_root().join("tests/testdata/validation-differences.yaml")
}

/// Reads the reviewed list.
pub fn load_listed() -> Result<Vec<Listed>> {
    let path = differences_path();
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let file: ListedFile =
        serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    for l in &file.differences {
        if l.reason.trim().is_empty() {
            return Err(anyhow!(
                "{}: entry {:?} gives no reason",
                path.display(),
                l.id
            ));
        }
    }
    Ok(file.differences)
}

/// Glob match with `*` only (no escapes): ids contain `[`, `]` and `?` literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// The outcome of checking observed cases against the listed differences.
pub struct Judgement<'a> {
    /// Disagreements no listed entry explains.
    pub unexplained: Vec<&'a Compared>,
    /// Listed entries (in scope) that no observed disagreement matched.
    pub stale: Vec<&'a Listed>,
}

/// Checks observed cases against the listed differences that are `in_scope` of this run.
pub fn judge<'a>(
    compared: &'a [Compared],
    listed: &'a [Listed],
    in_scope: impl Fn(&Listed) -> bool,
) -> Judgement<'a> {
    let listed: Vec<&Listed> = listed.iter().filter(|l| in_scope(l)).collect();
    let mut used = vec![false; listed.len()];
    let mut unexplained = Vec::new();
    for c in compared.iter().filter(|c| c.disagrees()) {
        // Every entry that explains the case counts as occurring (globs may overlap).
        let mut explained = false;
        for (l, u) in listed.iter().zip(used.iter_mut()) {
            if glob_match(&l.id, &c.id)
                && l.capstan == c.capstan.verdict
                && l.istioctl == c.istioctl.verdict
            {
                *u = true;
                explained = true;
            }
        }
        if !explained {
            unexplained.push(c);
        }
    }
    let stale = listed
        .into_iter()
        .zip(used)
        .filter(|(_, u)| !u)
        .map(|(l, _)| l)
        .collect();
    Judgement { unexplained, stale }
}

impl Judgement<'_> {
    /// The failure report (unexplained disagreements, and stale entries when `with_stale`),
    /// or `None` when there is nothing to report.
    pub fn report(&self, with_stale: bool) -> Option<String> {
        let stale: &[&Listed] = if with_stale { &self.stale } else { &[] };
        if self.unexplained.is_empty() && stale.is_empty() {
            return None;
        }
        let mut report = String::new();
        if !self.unexplained.is_empty() {
            let _ = writeln!(
                report,
                "{} disagreement(s) between capstan and istioctl not listed in {}:\n",
                self.unexplained.len(),
                differences_path().display()
            );
            for c in &self.unexplained {
                report.push_str(&render(c));
            }
        }
        if !stale.is_empty() {
            let _ = writeln!(
                report,
                "{} listed difference(s) no longer occur (remove them from the list and docs/compatibility.md):",
                stale.len()
            );
            for l in stale {
                let _ = writeln!(
                    report,
                    "  - id: {:?} (capstan {}, istioctl {})",
                    l.id, l.capstan, l.istioctl
                );
            }
        }
        Some(report)
    }
}

/// A readable block for one compared case.
pub fn render(c: &Compared) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "* {}  [{}]", c.id, c.what);
    for (tool, o) in [("capstan ", &c.capstan), ("istioctl", &c.istioctl)] {
        let _ = writeln!(s, "    {tool}: {}", o.verdict);
        for e in &o.errors {
            let _ = writeln!(s, "        error: {e}");
        }
        for w in &o.warnings {
            let _ = writeln!(s, "        warning: {w}");
        }
    }
    if let Some(text) = &c.text {
        let _ = writeln!(s, "    object: {}", text.trim());
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("a*c", "abbc"));
        assert!(glob_match(
            "fuzz * spec.x[*].y = 1",
            "fuzz f#0 spec.x[3].y = 1"
        ));
        assert!(!glob_match(
            "fuzz * spec.x[*].y = 1",
            "fuzz f#0 spec.x[3].y = 10"
        ));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    fn case(id: &str, capstan: &str, istioctl: &str) -> Compared {
        let opinion = |v: &str| Opinion {
            verdict: v.into(),
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        Compared {
            id: id.into(),
            what: "VirtualService default/x".into(),
            text: None,
            capstan: opinion(capstan),
            istioctl: opinion(istioctl),
        }
    }

    fn listed(id: &str, capstan: &str, istioctl: &str) -> Listed {
        Listed {
            id: id.into(),
            capstan: capstan.into(),
            istioctl: istioctl.into(),
            reason: "r".into(),
        }
    }

    #[test]
    fn judges_unlisted_and_stale_differences() {
        let compared = [
            case("fuzz a#0 VirtualService spec.x = 0", "invalid", "valid"),
            case("fuzz a#0 VirtualService spec.y = 0", "invalid", "valid"),
            case("fuzz a#0 VirtualService spec.z = 0", "valid", "valid"),
        ];
        let list = [
            listed("fuzz * spec.x = 0", "invalid", "valid"),
            // Same id, other direction: does not explain spec.x.
            listed("fuzz * spec.x = 0", "valid", "invalid"),
            listed("fuzz * spec.z = 0", "invalid", "valid"),
        ];
        let j = judge(&compared, &list, |_| true);
        let unexplained: Vec<&str> = j.unexplained.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(unexplained, ["fuzz a#0 VirtualService spec.y = 0"]);
        assert_eq!(
            j.stale.len(),
            2,
            "spec.z agrees now, and the reversed entry never matched"
        );
        let report = j.report(true).expect("a failure report");
        assert!(
            report.contains("spec.y = 0") && report.contains("no longer occur"),
            "{report}"
        );
        assert!(j
            .report(false)
            .is_some_and(|r| !r.contains("no longer occur")));
        assert!(judge(&compared[..1], &list[..1], |_| true)
            .report(true)
            .is_none());
    }

    #[test]
    fn istioctl_prefixes() {
        assert_eq!(
            object_prefix("VirtualService/default/reviews: weight must be positive"),
            Some(("reviews", "weight must be positive"))
        );
        assert_eq!(object_prefix("Gateway//gw: x: y"), Some(("gw", "x: y")));
        assert_eq!(object_prefix("failed to decode file -: yaml: line 3"), None);
    }

    #[test]
    fn istioctl_sections() {
        let text = "\"/tmp/x.yaml\" has warnings: \n\t* VirtualService//a: legacy gateway\n\n\
                    Error: 2 errors occurred:\n\t* VirtualService//b: weight -1 < 0\n\t* Gateway//g: bad\n\n";
        let out = IstioctlOutput::parse(text);
        assert_eq!(out.warnings, ["VirtualService//a: legacy gateway"]);
        assert_eq!(
            out.errors,
            ["VirtualService//b: weight -1 < 0", "Gateway//g: bad"]
        );
        let stdin_warning = IstioctlOutput::parse("\t* Sidecar//s: w\n");
        assert_eq!(stdin_warning.warnings, ["Sidecar//s: w"]);
        assert!(stdin_warning.errors.is_empty());
    }
}

//! `capstan validate` against `istioctl validate` (Istio's own validation, built from
//! istio.io/istio by `tests/infra/install-tools.sh istio`), object by object:
//!
//! - every Istio object the suite can read (the conformance corpus in `../shared`, the Istio
//!   YAML of `examples/`, `tests/testdata/` and the xDS test meshes) must get istioctl's verdict;
//! - a seeded field-by-field mutation of the valid objects (differential fuzzing) likewise.
//!
//! Verdicts (valid / invalid) are compared; warnings are reported, not compared. Every
//! disagreement must be listed, with its reason, in `tests/testdata/validation-differences.yaml`
//! (the table in docs/compatibility.md), and every listed difference must still occur.
//! istioctl comes from `target/tools` (installed on first use) and must report the pinned
//! version; `CAPSTAN_SKIP_INFRA=1` or `CAPSTAN_UNIT_ONLY=1` skips the test loudly.

mod differential;

use anyhow::{bail, Context as _, Result};
use differential::mutate::{self, SplitMix};
use differential::{
    cases_in, judge, load_listed, parallel_map, render, repo_root, shared_dir, yaml_files, Case,
    Compared, Validators,
};
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

/// Seed of the mutation sample (`CAPSTAN_FUZZ_SEED` overrides it to explore).
const DEFAULT_SEED: u64 = 13;
/// Mutants compared per run (`CAPSTAN_FUZZ_CASES` overrides it; 0 means all).
const DEFAULT_CASES: usize = 0;

/// istioctl and its pinned version from `target/tools/env` (written by
/// `tests/infra/install-tools.sh`, which `tests/run.sh` runs first); installed on first use
/// when absent. No cluster is needed.
fn istioctl() -> Result<(PathBuf, String)> {
    let root = repo_root();
    let env_file = root.join("target/tools/env");
    let find = || -> Option<(PathBuf, String)> {
        let vars = capstan_e2e::parse_env_file(&std::fs::read_to_string(&env_file).ok()?);
        let path = PathBuf::from(vars.get("CAPSTAN_TOOLS_BIN")?).join("istioctl");
        let version = vars.get("CAPSTAN_ISTIO_VERSION")?.clone();
        path.exists().then_some((path, version))
    };
    if let Some(found) = find() {
        return Ok(found);
    }
    eprintln!("istioctl not in target/tools: running tests/infra/install-tools.sh istio (a cold build takes ~15 min)");
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(root.join("tests/infra/install-tools.sh"))
        .arg("istio")
        .current_dir(&root);
    capstan_e2e::run_ok(&mut cmd, None, std::time::Duration::from_secs(3 * 3600))?;
    find().with_context(|| {
        format!(
            "istioctl still missing after install-tools.sh istio ({})",
            env_file.display()
        )
    })
}

fn validators(test: &str) -> Result<Option<Validators>> {
    let unit_only = std::env::var("CAPSTAN_UNIT_ONLY").is_ok_and(|v| v == "1");
    if capstan_e2e::skip_infra() || unit_only {
        let why = if unit_only {
            "CAPSTAN_UNIT_ONLY=1"
        } else {
            "CAPSTAN_SKIP_INFRA=1"
        };
        let _ = std::io::stderr().lock().write_all(
            format!("\n!!!!! SKIPPED {test}: {why} is set; istioctl was NOT compared !!!!!\n\n")
                .as_bytes(),
        );
        return Ok(None);
    }
    let (istioctl, pinned) = istioctl()?;
    let v = Validators::new(istioctl, PathBuf::from(env!("CARGO_BIN_EXE_capstan")))?;
    let version: serde_json::Value = serde_json::from_str(&v.istioctl_version()?)?;
    let built = version["clientVersion"]["version"]
        .as_str()
        .unwrap_or_default();
    if built != pinned {
        bail!("istioctl reports version {built:?}, not the pinned {pinned:?}: run tests/infra/install-tools.sh istio");
    }
    Ok(Some(v))
}

/// Every Istio document the suite reads, with ids `shared:<path>#<doc>` / `repo:<path>#<doc>`.
fn corpus() -> Result<Vec<Case>> {
    let shared = shared_dir();
    let conformance = shared.join("conformance/istio");
    let mut cases = Vec::new();
    for file in yaml_files(&conformance).with_context(|| {
        format!(
            "the Istio corpus is missing at {} (set CAPSTAN_SHARED_DIR to the shared/ folder)",
            conformance.display()
        )
    })? {
        let rel = file.strip_prefix(&shared).expect("found under shared/");
        cases.extend(cases_in(&file, &format!("shared:{}", rel.display()))?);
    }
    let root = repo_root();
    for dir in [
        "examples",
        "tests/testdata",
        "crates/capstan-xds/testdata/meshes",
    ] {
        for file in yaml_files(&root.join(dir))? {
            let rel = file
                .strip_prefix(&root)
                .expect("found under the repository");
            cases.extend(cases_in(&file, &format!("repo:{}", rel.display()))?);
        }
    }
    Ok(cases)
}

fn compare_one(v: &Validators, case: &Case) -> Result<Compared> {
    Ok(Compared {
        id: case.id.clone(),
        what: case.what.clone(),
        text: None,
        capstan: v.capstan_one(&case.text)?,
        istioctl: v
            .istioctl_one(&case.text)
            .with_context(|| format!("istioctl on {}", case.id))?,
    })
}

#[test]
fn istio_objects_get_istioctls_verdict() -> Result<()> {
    let Some(v) = validators("istio_objects_get_istioctls_verdict")? else {
        return Ok(());
    };
    let start = Instant::now();
    let cases = corpus()?;
    assert!(
        cases.len() >= 60,
        "only {} Istio objects found: is the corpus there?",
        cases.len()
    );
    let compared: Vec<Compared> = parallel_map(&cases, 2, |c| compare_one(&v, c))
        .into_iter()
        .collect::<Result<_>>()?;
    let differing = compared.iter().filter(|c| c.disagrees()).count();
    let with_warnings: Vec<&Compared> = compared
        .iter()
        .filter(|c| !c.disagrees() && c.capstan.warnings.len() != c.istioctl.warnings.len())
        .collect();
    eprintln!(
        "compared {} Istio objects in {:.1?}: {differing} verdict difference(s); {} with different warning counts (not compared):",
        compared.len(),
        start.elapsed(),
        with_warnings.len()
    );
    for c in with_warnings {
        eprint!("{}", render(c));
    }
    let listed = load_listed()?;
    if let Some(report) = judge(&compared, &listed, |l| !l.id.starts_with("fuzz ")).report(true) {
        panic!("{report}");
    }
    Ok(())
}

fn env_number(key: &str, default: u64) -> Result<u64> {
    match std::env::var(key) {
        Ok(s) => s
            .parse()
            .with_context(|| format!("{key}={s:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// Both tools' opinions of every object of one generated file, by `metadata.name`.
fn judge_batch(
    v: &Validators,
    objects: &[(String, &serde_json::Value)],
) -> Result<Vec<(differential::Opinion, differential::Opinion)>> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("objects.yaml");
    let mut text = String::new();
    for (_, object) in objects {
        text.push_str("---\n");
        text.push_str(&serde_json::to_string(object)?);
        text.push('\n');
    }
    std::fs::write(&file, &text)?;
    let names: Vec<String> = objects.iter().map(|(n, _)| n.clone()).collect();
    let istioctl = v.istioctl_batch(&file, &names)?;
    // capstan's batch check flags a second selector-less Sidecar in a namespace (Istio's
    // analyzer IST0109, not its validation): Sidecars are checked one by one instead.
    let mut capstan = v.capstan_batch(&file)?;
    for (name, object) in objects {
        if object["kind"] == "Sidecar" {
            capstan.insert(
                name.clone(),
                v.capstan_one(&serde_json::to_string(object)?)?,
            );
        }
    }
    names
        .iter()
        .map(|n| match (capstan.remove(n), istioctl.get(n)) {
            (Some(c), Some(i)) => Ok((c, i.clone())),
            _ => bail!("no verdict for {n} from one of the tools"),
        })
        .collect()
}

#[test]
fn mutated_objects_get_istioctls_verdict() -> Result<()> {
    let Some(v) = validators("mutated_objects_get_istioctls_verdict")? else {
        return Ok(());
    };
    let start = Instant::now();
    let seed = env_number("CAPSTAN_FUZZ_SEED", DEFAULT_SEED)?;
    let limit = env_number("CAPSTAN_FUZZ_CASES", DEFAULT_CASES as u64)? as usize;

    // Bases: the objects Istio's own corpus and our examples hold as valid.
    let mut bases = Vec::new();
    for case in corpus()?
        .into_iter()
        .filter(|c| !c.id.contains("/invalid/"))
    {
        let object = capstan_api::decode::parse_document(&case.text)
            .map_err(anyhow::Error::msg)
            .with_context(|| case.id.clone())?;
        bases.push((case.id, object));
    }
    let mut seen = BTreeSet::new();
    let mut all: Vec<(usize, mutate::Mutant)> = Vec::new();
    for (b, (id, object)) in bases.iter().enumerate() {
        all.extend(
            mutate::mutants(id, object, &mut seen)
                .into_iter()
                .map(|m| (b, m)),
        );
    }
    let total = all.len();
    SplitMix::new(seed).shuffle(&mut all);
    if limit > 0 {
        all.truncate(limit);
    }
    // Sorted back by id so the report reads in file order.
    all.sort_by(|a, b| a.1.id.cmp(&b.1.id));

    // One file: the bases (b-<n>) and the mutants (m-<n>), named so istioctl's errors say which.
    let mut named: Vec<(String, serde_json::Value)> = Vec::new();
    for (n, (_, object)) in bases.iter().enumerate() {
        let mut object = object.clone();
        mutate::name(&mut object, &format!("b-{n}"));
        named.push((format!("b-{n}"), object));
    }
    for (n, (_, m)) in all.iter_mut().enumerate() {
        mutate::name(&mut m.object, &format!("m-{n}"));
        named.push((format!("m-{n}"), m.object.clone()));
    }
    let refs: Vec<(String, &serde_json::Value)> =
        named.iter().map(|(n, o)| (n.clone(), o)).collect();
    let opinions = judge_batch(&v, &refs)?;
    let (base_opinions, mutant_opinions) = opinions.split_at(bases.len());

    // A base the tools already disagree on is the corpus test's business; its mutants would
    // only repeat that difference.
    let mut skipped = 0;
    let mut compared = Vec::new();
    for ((b, m), (c, i)) in all.iter().zip(mutant_opinions) {
        let (bc, bi) = &base_opinions[*b];
        if bc.verdict != bi.verdict {
            skipped += 1;
            continue;
        }
        compared.push(Compared {
            id: m.id.clone(),
            what: differential::describe(&m.object),
            text: Some(serde_json::to_string(&m.object["spec"])?),
            capstan: c.clone(),
            istioctl: i.clone(),
        });
    }
    let differing = compared.iter().filter(|c| c.disagrees()).count();
    eprintln!(
        "seed {seed}: compared {} of {total} mutants of {} objects in {:.1?} ({skipped} mutants of \
         objects the tools already disagree on left out); {differing} verdict difference(s); \
         {} invalid for istioctl, {} for capstan",
        compared.len(),
        bases.len(),
        start.elapsed(),
        compared.iter().filter(|c| c.istioctl.verdict == "invalid").count(),
        compared.iter().filter(|c| c.capstan.verdict == "invalid").count(),
    );
    let listed = load_listed()?;
    // The sample depends on the seed and size: listed entries are stale only for the default run.
    let default_run = seed == DEFAULT_SEED && limit == DEFAULT_CASES;
    let report = judge(&compared, &listed, |l| l.id.starts_with("fuzz ")).report(default_run);
    if let Some(report) = report {
        panic!("{report}");
    }
    Ok(())
}

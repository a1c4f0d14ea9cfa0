//! Table-driven case runner shared by the per-kind validation tests.
#![allow(dead_code)]

use capstan_api::{check_text, CheckOptions, Verdict};

/// What a case expects.
pub enum Expect {
    /// No errors and no warnings.
    Valid,
    /// Valid, with warnings: (field path, message substring) each.
    Warnings(&'static [(&'static str, &'static str)]),
    /// Rejected with at least these errors: (field path, message substring) each.
    Errors(&'static [(&'static str, &'static str)]),
}

/// One case: a name, a whole object as YAML, and what validation must say.
pub struct Case {
    pub name: &'static str,
    pub yaml: &'static str,
    pub expect: Expect,
}

/// Runs every case and reports all failures at once.
pub fn run_cases(cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let results = check_text(case.yaml, &CheckOptions::default());
        if results.len() != 1 {
            failures.push(format!(
                "{}: expected exactly one object, got {}",
                case.name,
                results.len()
            ));
            continue;
        }
        let r = &results[0];
        let shown = || {
            let e: Vec<String> = r.errors.iter().map(|d| d.to_string()).collect();
            let w: Vec<String> = r.warnings.iter().map(|d| d.to_string()).collect();
            format!("errors={e:?} warnings={w:?}")
        };
        match &case.expect {
            Expect::Valid => {
                if r.verdict != Verdict::Valid || !r.warnings.is_empty() {
                    failures.push(format!(
                        "{}: expected valid without warnings, got {:?} {}",
                        case.name,
                        r.verdict,
                        shown()
                    ));
                }
            }
            Expect::Warnings(expected) => {
                if r.verdict != Verdict::Valid {
                    failures.push(format!(
                        "{}: expected valid with warnings, got {:?} {}",
                        case.name,
                        r.verdict,
                        shown()
                    ));
                }
                for (path, msg) in expected.iter() {
                    if !r
                        .warnings
                        .iter()
                        .any(|d| d.path == *path && d.message.contains(msg))
                    {
                        failures.push(format!(
                            "{}: missing warning at {path} containing {msg:?}; {}",
                            case.name,
                            shown()
                        ));
                    }
                }
            }
            Expect::Errors(expected) => {
                if r.verdict != Verdict::Invalid {
                    failures.push(format!(
                        "{}: expected invalid, got {:?} {}",
                        case.name,
                        r.verdict,
                        shown()
                    ));
                }
                for (path, msg) in expected.iter() {
                    if !r
                        .errors
                        .iter()
                        .any(|d| d.path == *path && d.message.contains(msg))
                    {
                        failures.push(format!(
                            "{}: missing error at {path} containing {msg:?}; {}",
                            case.name,
                            shown()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Parses `yaml` (one Istio object), serializes it, parses it again: both objects must be equal,
/// and the serialized form must be stable.
pub fn assert_round_trip(yaml: &str) {
    let first = check_text(yaml, &CheckOptions::default());
    assert_eq!(first.len(), 1, "one object expected");
    let obj = first[0]
        .object
        .as_ref()
        .unwrap_or_else(|| panic!("object must be valid to round-trip: {:?}", first[0].errors));
    let json = serde_json::to_string(&obj.to_value()).unwrap();
    let second = check_text(&json, &CheckOptions::default());
    let obj2 = second[0].object.as_ref().unwrap_or_else(|| {
        panic!(
            "re-serialized object must be valid: {:?}\n{json}",
            second[0].errors
        )
    });
    assert_eq!(
        obj, obj2,
        "round trip changed the object; serialized: {json}"
    );
    let yaml2 = serde_yaml_ng::to_string(&obj2.to_value()).unwrap();
    let third = check_text(&yaml2, &CheckOptions::default());
    assert_eq!(
        Some(obj),
        third[0].object.as_ref(),
        "YAML round trip changed the object: {yaml2}"
    );
}

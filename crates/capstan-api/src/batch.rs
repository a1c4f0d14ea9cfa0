//! Checks that span several objects of one batch (a file, a directory, an apply):
//! Istio's analyzers flag these even though each object is valid alone.

use crate::decode::{ObjectResult, Verdict};
use crate::kinds::Spec;
use crate::report::{Diagnostic, Severity};
use std::collections::BTreeMap;

/// Flags more than one Sidecar without `workloadSelector` in a namespace (Istio analyzer
/// IST0109 "MultipleSidecarsWithoutWorkloadSelectors"): the proxy could pick either.
pub fn check_across_objects(results: &mut [ObjectResult]) {
    let mut selectorless: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, r) in results.iter().enumerate() {
        if let Some(object) = &r.object {
            if let Spec::Sidecar(sidecar) = &object.spec {
                if sidecar.workload_selector.is_none() {
                    selectorless
                        .entry(object.metadata.namespace.clone())
                        .or_default()
                        .push(i);
                }
            }
        }
    }
    for (namespace, indexes) in selectorless {
        if indexes.len() < 2 {
            continue;
        }
        let names: Vec<String> = indexes.iter().map(|i| results[*i].name.clone()).collect();
        let shown_ns = if namespace.is_empty() {
            "(default)".to_string()
        } else {
            namespace
        };
        for &i in &indexes[1..] {
            let r = &mut results[i];
            r.verdict = Verdict::Invalid;
            r.object = None;
            r.errors.push(Diagnostic {
                severity: Severity::Error,
                path: "spec.workloadSelector".into(),
                message: format!(
                    "only one Sidecar without workloadSelector is allowed per namespace; namespace {shown_ns} has {} ({})",
                    names.len(),
                    names.join(", ")
                ),
            });
        }
    }
}

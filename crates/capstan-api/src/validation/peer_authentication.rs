//! `PeerAuthentication` validation, following Istio's `ValidatePeerAuthentication`.

use super::common::validate_workload_selector;
use super::{Context, Validate};
use crate::path::Path;
use crate::report::Report;
use crate::security::PeerAuthentication;

impl Validate for PeerAuthentication {
    fn validate(&self, _cx: &Context<'_>, out: &mut Report) {
        let spec = Path::root("spec");
        let empty_selector = self
            .selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_empty());
        if let Some(ports) = &self.port_level_mtls {
            let pp = spec.field("portLevelMtls");
            if ports.is_empty() {
                out.error(
                    &pp,
                    "port level mTLS, if defined, must have at least one element",
                );
            } else if empty_selector {
                out.error(
                    &pp,
                    "mesh/namespace peer authentication cannot have port level mTLS",
                );
            }
            for key in ports.keys() {
                let ok = !key.is_empty()
                    && key.len() <= 5
                    && key.bytes().all(|b| b.is_ascii_digit())
                    && key.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
                if !ok {
                    out.error(
                        &pp.key(key),
                        format!("port must be in range 1..65535, got {key:?}"),
                    );
                }
            }
        }
        if let Some(sel) = &self.selector {
            let sp = spec.field("selector");
            validate_workload_selector(sel, &sp, out);
            if sel.match_labels.is_empty() {
                out.warn(&sp, "workload selector specified without labels");
            }
        }
    }
}

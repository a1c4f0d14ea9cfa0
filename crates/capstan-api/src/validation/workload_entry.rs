//! Placeholder for `WorkloadEntry` validation (being written).

use super::{Context, Validate};
use crate::networking::WorkloadEntry;
use crate::report::Report;

impl Validate for WorkloadEntry {
    fn validate(&self, _cx: &Context<'_>, _out: &mut Report) {}
}

impl Validate for crate::networking::WorkloadGroup {
    fn validate(&self, _cx: &Context<'_>, _out: &mut Report) {}
}

//! Placeholder for `ServiceEntry` validation (being written).

use super::{Context, Validate};
use crate::networking::ServiceEntry;
use crate::report::Report;

impl Validate for ServiceEntry {
    fn validate(&self, _cx: &Context<'_>, _out: &mut Report) {}
}

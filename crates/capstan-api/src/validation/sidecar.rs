//! Placeholder for `Sidecar` validation (being written).

use super::{Context, Validate};
use crate::networking::Sidecar;
use crate::report::Report;

impl Validate for Sidecar {
    fn validate(&self, _cx: &Context<'_>, _out: &mut Report) {}
}

//! Placeholder for `Gateway` validation (being written).

use super::{Context, Validate};
use crate::networking::Gateway;
use crate::report::Report;

impl Validate for Gateway {
    fn validate(&self, _cx: &Context<'_>, _out: &mut Report) {}
}

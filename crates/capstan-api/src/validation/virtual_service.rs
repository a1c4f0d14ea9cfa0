//! Placeholder for `VirtualService` validation (being written).

use super::{Context, Validate};
use crate::networking::VirtualService;
use crate::report::Report;

impl Validate for VirtualService {
    fn validate(&self, _cx: &Context<'_>, _out: &mut Report) {}
}

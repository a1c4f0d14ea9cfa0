//! Placeholder for `PeerAuthentication` validation (being written).

use super::{Context, Validate};
use crate::report::Report;
use crate::security::PeerAuthentication;

impl Validate for PeerAuthentication {
    fn validate(&self, _cx: &Context<'_>, _out: &mut Report) {}
}

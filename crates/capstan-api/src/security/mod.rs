//! `security.istio.io` types: field names, enums and defaults as Istio's API reference defines them.

mod authorization_policy;
mod peer_authentication;
mod request_authentication;

pub use authorization_policy::*;
pub use peer_authentication::*;
pub use request_authentication::*;

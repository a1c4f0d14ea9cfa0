//! Istio's configuration API for Capstan: typed `networking.istio.io` and `security.istio.io`
//! kinds, validation as strict as Istio's (errors with field paths, warnings apart), decoding of
//! multi-document YAML/JSON, and CRD generation. Pure: no I/O, no async.

pub mod batch;
pub mod common;
pub mod crd;
pub mod decode;
pub mod kinds;
pub mod networking;
pub mod object;
pub mod path;
pub mod report;
pub mod security;
pub mod validation;

pub use decode::{check_text, CheckOptions, ObjectResult, Verdict};
pub use kinds::{Kind, Spec};
pub use object::{Decoded, IstioObject, ObjectMeta};
pub use report::{Diagnostic, Report, Severity};

//! Sidecar injection, as Istio's injector does it, without I/O: whether a pod gets the
//! sidecar ([`policy`]), the JSONPatch that adds `istio-init` and `istio-proxy` ([`inject`]),
//! shaped by a data template ([`template`]) and the pod's annotations ([`proxy_config`],
//! [`capture`]), and the AdmissionReview answer ([`review`]). [`capture`] is also what
//! `capstan proxy-init` runs: the options and the nat rules of Istio's `istio-iptables`.
#![deny(missing_docs)]

pub mod capture;
pub mod inject;
pub mod policy;
pub mod proxy_config;
pub mod review;
pub mod template;

pub use capture::CaptureOptions;
pub use inject::{inject, InjectError, Outcome};
pub use review::{
    admit, encode_patch, parse_request, respond, review, Admission, AdmissionRequest, ReviewError,
};
pub use template::InjectionTemplate;

//! Envoy's admin interface on 127.0.0.1:15000 (`/config_dump`, `/clusters`, `/stats`,
//! `/stats/prometheus`, `/ready`, `/quitquitquit`, `/logging`) and Istio's readiness on 15021
//! (`/healthz/ready`).
//!
//! SKELETON: the admin helper owns this module and replaces this file.

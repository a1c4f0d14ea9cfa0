//! Validation results: errors and warnings, each with a field path.

use crate::path::Path;
use serde::Serialize;
use std::fmt;

/// How serious a finding is. Istio rejects objects with errors and admits objects
/// with warnings (reporting them to the user, as `kubectl apply` does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The object is rejected.
    Error,
    /// The object is accepted, but the user should look at it.
    Warning,
}

/// One finding: where (a field path) and what (a message a user can act on).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Field path such as `spec.http[0].route[1].weight`.
    pub path: String,
    /// What is wrong and, where it helps, what is allowed.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Collects the findings of validating one object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Findings that reject the object.
    pub errors: Vec<Diagnostic>,
    /// Findings that do not reject the object.
    pub warnings: Vec<Diagnostic>,
}

impl Report {
    /// Records an error at `path`.
    pub fn error(&mut self, path: &Path<'_>, message: impl Into<String>) {
        self.errors.push(Diagnostic {
            severity: Severity::Error,
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Records a warning at `path`.
    pub fn warn(&mut self, path: &Path<'_>, message: impl Into<String>) {
        self.warnings.push(Diagnostic {
            severity: Severity::Warning,
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Records an error whose path is already rendered (for example from the decoder).
    pub fn error_at(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Diagnostic {
            severity: Severity::Error,
            path: path.into(),
            message: message.into(),
        });
    }

    /// True when the object has no errors (warnings allowed).
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    /// Appends another report's findings.
    pub fn merge(&mut self, other: Report) {
        self.errors.extend(other.errors);
        self.warnings.extend(other.warnings);
    }
}

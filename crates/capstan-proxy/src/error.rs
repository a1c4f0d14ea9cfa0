//! The one error type of compilation: a resource that cannot be applied, with the field at fault.

use std::fmt;

/// Why a resource cannot be applied, naming the field (`filter_chains[0].filters[1]`) and what
/// is wrong with it. Sent back to the control plane as the NACK's `error_detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// Field path inside the resource; empty for the resource as a whole.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl CompileError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        CompileError {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same error one level deeper: `prefix` goes in front of the path.
    #[must_use]
    pub fn within(mut self, prefix: &str) -> Self {
        self.path = if self.path.is_empty() {
            prefix.to_string()
        } else if self.path.starts_with('[') {
            format!("{prefix}{}", self.path)
        } else {
            format!("{prefix}.{}", self.path)
        };
        self
    }
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for CompileError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_nest() {
        let e = CompileError::new("", "bad").within("[2]").within("filters");
        assert_eq!(e.to_string(), "filters[2]: bad");
        let e = CompileError::new("name", "empty").within("filter_chains[0]");
        assert_eq!(e.to_string(), "filter_chains[0].name: empty");
    }
}

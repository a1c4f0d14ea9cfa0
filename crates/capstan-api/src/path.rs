//! Field paths (`spec.http[0].route[1].weight`) built on the stack while validating.
//!
//! A path is a linked list of borrowed segments, so walking a large object allocates
//! nothing; the string is rendered only when a diagnostic is recorded.

use std::fmt;

/// One step of a field path.
#[derive(Clone, Copy, Debug)]
enum Segment<'a> {
    Field(&'a str),
    Index(usize),
    Key(&'a str),
}

/// A field path under construction: a segment plus a reference to its parent.
#[derive(Clone, Copy, Debug)]
pub struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    segment: Segment<'a>,
}

impl Path<'static> {
    /// The root of a path, e.g. `spec`.
    pub const fn root(name: &'static str) -> Path<'static> {
        Path {
            parent: None,
            segment: Segment::Field(name),
        }
    }
}

impl<'a> Path<'a> {
    /// The path to a named field of this object.
    pub fn field(&'a self, name: &'a str) -> Path<'a> {
        Path {
            parent: Some(self),
            segment: Segment::Field(name),
        }
    }

    /// The path to element `i` of this list.
    pub fn index(&'a self, i: usize) -> Path<'a> {
        Path {
            parent: Some(self),
            segment: Segment::Index(i),
        }
    }

    /// The path to the value under `key` in this map (rendered `map[key]`).
    pub fn key(&'a self, key: &'a str) -> Path<'a> {
        Path {
            parent: Some(self),
            segment: Segment::Key(key),
        }
    }

    fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(parent) = self.parent {
            parent.write(f)?;
        }
        match self.segment {
            Segment::Field(name) if self.parent.is_none() => f.write_str(name),
            Segment::Field(name) => write!(f, ".{name}"),
            Segment::Index(i) => write!(f, "[{i}]"),
            Segment::Key(key) => write!(f, "[{key}]"),
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f)
    }
}

#[cfg(test)]
mod tests {
    use super::Path;

    #[test]
    fn renders_fields_indexes_and_keys() {
        let spec = Path::root("spec");
        let http = spec.field("http");
        let first = http.index(0);
        let route = first.field("route");
        let second = route.index(1);
        assert_eq!(
            second.field("weight").to_string(),
            "spec.http[0].route[1].weight"
        );
        let headers = first.field("headers");
        assert_eq!(
            headers.key("x-user").to_string(),
            "spec.http[0].headers[x-user]"
        );
    }
}

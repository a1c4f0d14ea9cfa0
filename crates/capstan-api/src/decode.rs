//! Text (multi-document YAML, JSON, `List` objects) → objects → validation results.
//!
//! Bounded by construction: a document larger than [`MAX_DOCUMENT_BYTES`] is rejected before
//! parsing; nesting deeper than the YAML/JSON parsers' recursion limit (128) and YAML alias
//! expansion beyond the parser's repetition limit are parse errors, not crashes.

use crate::object::{Decoded, IstioObject};
use crate::report::{Diagnostic, Severity};
use serde::Serialize;
use serde_json::Value;

/// Largest single document accepted: the Kubernetes API server rejects request bodies over 3 MiB.
pub const MAX_DOCUMENT_BYTES: usize = 3 * 1024 * 1024;
/// Most items accepted in one `List` object or one file.
pub const MAX_OBJECTS: usize = 100_000;

/// One document of a multi-document text, with where it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawDocument<'a> {
    /// 0-based index among the file's documents (empty ones included, as `kubectl` counts them).
    pub index: usize,
    /// 1-based line where the document's text starts.
    pub line: usize,
    /// The document's text.
    pub text: &'a str,
}

fn is_separator(line: &str) -> bool {
    let line = line.trim_end_matches(['\r', '\n']);
    line == "---" || line.starts_with("--- ") || line.starts_with("---\t") || line == "..."
}

/// Splits YAML text at `---` lines (column 0). Block scalars must be indented, so a `---` at
/// column 0 always separates documents.
pub fn split_documents(text: &str) -> Vec<RawDocument<'_>> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1usize;
    let mut offset = 0usize;
    for (line_index, line) in text.split_inclusive('\n').enumerate() {
        let line_no = line_index + 1;
        if is_separator(line) {
            docs.push(RawDocument {
                index: docs.len(),
                line: start_line,
                text: &text[start..offset],
            });
            start = offset + line.len();
            start_line = line_no + 1;
        }
        offset += line.len();
    }
    docs.push(RawDocument {
        index: docs.len(),
        line: start_line,
        text: &text[start..],
    });
    docs
}

/// True when the text holds nothing but whitespace and comments.
fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#')
    })
}

/// Parses one document (YAML, of which JSON is a subset) into a JSON value.
pub fn parse_document(text: &str) -> Result<Value, String> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(format!(
            "document is {} bytes, over the limit of {} bytes",
            text.len(),
            MAX_DOCUMENT_BYTES
        ));
    }
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        // JSON is the common case from the API server and is much faster to parse as JSON.
        if let Ok(v) = serde_json::from_str::<Value>(text) {
            return Ok(v);
        }
    }
    serde_yaml_ng::from_str::<Value>(text).map_err(|e| format!("invalid YAML: {e}"))
}

/// How one object fared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// An Istio object with no errors (it may have warnings).
    Valid,
    /// Unparseable, undecodable or failing validation.
    Invalid,
    /// Not an Istio kind, or an empty document.
    Skipped,
}

/// The outcome for one object of one document.
#[derive(Clone, Debug, Serialize)]
pub struct ObjectResult {
    /// Document index in its source.
    pub document: usize,
    /// `items[i]` index when the object came from a `List`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<usize>,
    /// 1-based line where the document starts.
    pub line: usize,
    /// Kind, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// Valid, invalid or skipped.
    pub verdict: Verdict,
    /// Errors (field path + message).
    pub errors: Vec<Diagnostic>,
    /// Warnings (field path + message).
    pub warnings: Vec<Diagnostic>,
    /// Why the object was skipped, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The decoded object, when it is a valid Istio object.
    #[serde(skip)]
    pub object: Option<Box<IstioObject>>,
}

impl ObjectResult {
    fn new(doc: &RawDocument<'_>, item: Option<usize>) -> ObjectResult {
        ObjectResult {
            document: doc.index,
            item,
            line: doc.line,
            kind: None,
            namespace: String::new(),
            name: String::new(),
            verdict: Verdict::Skipped,
            errors: Vec::new(),
            warnings: Vec::new(),
            note: None,
            object: None,
        }
    }
}

/// Options for checking text.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// DNS suffix of the mesh.
    pub domain_suffix: String,
    /// Namespace to assume for objects that name none (as `kubectl apply -n`); empty for none.
    pub default_namespace: String,
    /// Istio's `PILOT_ENABLE_VIRTUAL_SERVICE_DELEGATE` (default on): allow VirtualServices without hosts.
    pub virtual_service_delegate: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            domain_suffix: "cluster.local".into(),
            default_namespace: String::new(),
            virtual_service_delegate: true,
        }
    }
}

/// Decodes and validates one already-parsed value (one object, or a `List` of them).
pub fn check_value(
    value: Value,
    doc: &RawDocument<'_>,
    opts: &CheckOptions,
    out: &mut Vec<ObjectResult>,
) {
    if let Value::Object(map) = &value {
        let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
        if kind.ends_with("List") && map.get("items").is_some_and(Value::is_array) {
            let Some(Value::Array(items)) = value.as_object().and_then(|m| m.get("items")).cloned()
            else {
                unreachable!("checked above that items is an array")
            };
            for (i, item) in items.into_iter().take(MAX_OBJECTS).enumerate() {
                out.push(check_object(item, doc, Some(i), opts));
            }
            return;
        }
    }
    out.push(check_object(value, doc, None, opts));
}

fn check_object(
    value: Value,
    doc: &RawDocument<'_>,
    item: Option<usize>,
    opts: &CheckOptions,
) -> ObjectResult {
    let mut result = ObjectResult::new(doc, item);
    match IstioObject::decode(value) {
        Ok(Decoded::Other {
            api_version,
            kind,
            name,
        }) => {
            result.kind = Some(kind.clone());
            result.name = name;
            result.note = Some(format!(
                "skipped: {kind} ({api_version}) is not an Istio kind"
            ));
        }
        Ok(Decoded::Istio(mut object)) => {
            if object.metadata.namespace.is_empty() {
                object.metadata.namespace = opts.default_namespace.clone();
            }
            let report = object.validate(opts);
            result.kind = Some(object.kind.name().to_string());
            result.namespace = object.metadata.namespace.clone();
            result.name = object.metadata.name.clone();
            result.verdict = if report.is_valid() {
                Verdict::Valid
            } else {
                Verdict::Invalid
            };
            result.errors = report.errors;
            result.warnings = report.warnings;
            if result.verdict == Verdict::Valid {
                result.object = Some(object);
            }
        }
        Err(e) => {
            result.kind = e.kind;
            result.name = e.name;
            result.namespace = e.namespace;
            result.verdict = Verdict::Invalid;
            result.errors = e.diagnostics;
        }
    }
    result
}

/// Checks every document of a text, then the rules that span objects ([`crate::batch`]).
/// Never panics on input; one bad document blocks none of the others.
pub fn check_text(text: &str, opts: &CheckOptions) -> Vec<ObjectResult> {
    let mut out = check_documents(text, opts);
    crate::batch::check_across_objects(&mut out);
    out
}

/// Checks every document of a text on its own: parse, decode, validate. Callers that combine
/// several texts run [`crate::batch::check_across_objects`] over the combined results.
pub fn check_documents(text: &str, opts: &CheckOptions) -> Vec<ObjectResult> {
    let mut out = Vec::new();
    for doc in split_documents(text) {
        if out.len() >= MAX_OBJECTS {
            break;
        }
        if is_blank(doc.text) {
            continue;
        }
        match parse_document(doc.text) {
            Ok(Value::Null) => {}
            Ok(value) => check_value(value, &doc, opts, &mut out),
            Err(message) => {
                let mut r = ObjectResult::new(&doc, None);
                r.verdict = Verdict::Invalid;
                r.errors.push(Diagnostic {
                    severity: Severity::Error,
                    path: String::new(),
                    message,
                });
                out.push(r);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_with_line_numbers() {
        let text = "a: 1\n---\nb: 2\nc: 3\n--- # comment\nd: 4\n";
        let docs = split_documents(text);
        assert_eq!(docs.len(), 3);
        assert_eq!((docs[0].line, docs[0].text), (1, "a: 1\n"));
        assert_eq!((docs[1].line, docs[1].text), (3, "b: 2\nc: 3\n"));
        assert_eq!((docs[2].line, docs[2].text), (6, "d: 4\n"));
    }

    #[test]
    fn leading_separator_gives_empty_first_document() {
        let docs = split_documents("---\nkind: A\n");
        assert_eq!(docs.len(), 2);
        assert!(is_blank(docs[0].text));
        assert_eq!(docs[1].line, 2);
    }
}

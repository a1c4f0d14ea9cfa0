//! `capstan validate -f PATH...`: validates Istio objects in files, directories or stdin.
//!
//! Results go to stdout (one line per object, or JSON with `--output json`); errors and
//! warnings go to stderr in text mode. Exit status 0 only if every Istio object is valid
//! and every input could be read.

use anyhow::{bail, Context as _, Result};
use capstan_api::batch::check_across_objects;
use capstan_api::decode::{check_documents, CheckOptions, ObjectResult, Verdict};
use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Largest input file read (larger ones are reported, not read).
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Most files visited under one directory argument.
const MAX_FILES: usize = 100_000;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Human-readable lines.
    Text,
    /// One JSON document with every result.
    Json,
}

/// Arguments of `capstan validate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files or directories (searched recursively for .yaml, .yml, .json) to validate; `-` reads stdin.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    files: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: Output,
    /// Namespace assumed for objects that name none.
    #[arg(short = 'n', long = "namespace", default_value = "")]
    namespace: String,
    /// DNS suffix of the mesh.
    #[arg(long = "domain", default_value = "cluster.local")]
    domain: String,
    /// Reject VirtualServices without hosts instead of reading them as delegates
    /// (Istio with PILOT_ENABLE_VIRTUAL_SERVICE_DELEGATE=false).
    #[arg(long = "no-virtual-service-delegate")]
    no_virtual_service_delegate: bool,
}

/// A result with the file it came from.
#[derive(Serialize)]
struct FileResult<'a> {
    file: &'a str,
    #[serde(flatten)]
    result: &'a ObjectResult,
}

#[derive(Serialize)]
struct Summary {
    valid: usize,
    invalid: usize,
    skipped: usize,
    unreadable: usize,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    results: Vec<FileResult<'a>>,
    read_errors: &'a [ReadError],
    summary: Summary,
}

#[derive(Serialize)]
struct ReadError {
    file: String,
    error: String,
}

/// Expands arguments into files: directories recursively (sorted), `-` as stdin.
fn expand(args: &[String]) -> (Vec<PathBuf>, Vec<ReadError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for arg in args {
        let path = PathBuf::from(arg);
        if arg == "-" || path.is_file() {
            files.push(path);
        } else if path.is_dir() {
            if let Err(e) = walk(&path, &mut files) {
                errors.push(ReadError {
                    file: arg.clone(),
                    error: format!("{e:#}"),
                });
            }
        } else {
            errors.push(ReadError {
                file: arg.clone(),
                error: "no such file or directory".into(),
            });
        }
    }
    (files, errors)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        if files.len() >= MAX_FILES {
            bail!("more than {MAX_FILES} files under {}", dir.display());
        }
        if path.is_dir() {
            walk(&path, files)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            files.push(path);
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .context("reading stdin")?;
    } else {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        file.take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("reading {} (is it UTF-8 text?)", path.display()))?;
    }
    if text.len() as u64 > MAX_FILE_BYTES {
        bail!("file is larger than {MAX_FILE_BYTES} bytes");
    }
    Ok(text)
}

fn label(r: &ObjectResult) -> String {
    let kind = r.kind.as_deref().unwrap_or("(unknown kind)");
    let name = match (r.namespace.as_str(), r.name.as_str()) {
        (_, "") => "(no name)".to_string(),
        ("", n) => n.to_string(),
        (ns, n) => format!("{ns}/{n}"),
    };
    format!("{kind} {name}")
}

fn location(file: &str, r: &ObjectResult) -> String {
    match r.item {
        Some(i) => format!("{file}:{} (document {}, items[{i}])", r.line, r.document),
        None => format!("{file}:{} (document {})", r.line, r.document),
    }
}

/// Runs the command and returns its exit status.
pub fn run(args: &Args) -> ExitCode {
    let (files, mut read_errors) = expand(&args.files);
    let opts = CheckOptions {
        domain_suffix: args.domain.clone(),
        default_namespace: args.namespace.clone(),
        virtual_service_delegate: !args.no_virtual_service_delegate,
    };
    let mut results: Vec<ObjectResult> = Vec::new();
    let mut origins: Vec<String> = Vec::new();
    for path in &files {
        let name = if path.as_os_str() == "-" {
            "<stdin>".to_string()
        } else {
            path.display().to_string()
        };
        match read(path) {
            Ok(text) => {
                let found = check_documents(&text, &opts);
                origins.extend(std::iter::repeat_n(name, found.len()));
                results.extend(found);
            }
            Err(e) => read_errors.push(ReadError {
                file: name,
                error: format!("{e:#}"),
            }),
        }
    }
    // Cross-object rules (one selector-less Sidecar per namespace) span every input of the run.
    check_across_objects(&mut results);

    let count = |v: Verdict| results.iter().filter(|r| r.verdict == v).count();
    let summary = Summary {
        valid: count(Verdict::Valid),
        invalid: count(Verdict::Invalid),
        skipped: count(Verdict::Skipped),
        unreadable: read_errors.len(),
    };
    let failed = summary.invalid > 0 || summary.unreadable > 0;

    match args.output {
        Output::Json => {
            let report = JsonReport {
                results: results
                    .iter()
                    .zip(&origins)
                    .map(|(result, file)| FileResult { file, result })
                    .collect(),
                read_errors: &read_errors,
                summary,
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("report types serialize to JSON")
            );
        }
        Output::Text => {
            for e in &read_errors {
                eprintln!("error: {}: {}", e.file, e.error);
            }
            for (r, file) in results.iter().zip(&origins) {
                let at = location(file, r);
                let what = label(r);
                match r.verdict {
                    Verdict::Valid if r.warnings.is_empty() => println!("valid    {at} {what}"),
                    Verdict::Valid => println!("warning  {at} {what}"),
                    Verdict::Invalid => println!("invalid  {at} {what}"),
                    Verdict::Skipped => println!(
                        "skipped  {at} {what}: {}",
                        r.note.as_deref().unwrap_or("not an Istio kind")
                    ),
                }
                for d in &r.errors {
                    eprintln!("error: {at} {what}: {d}");
                }
                for d in &r.warnings {
                    eprintln!("warning: {at} {what}: {d}");
                }
            }
            println!(
                "{} valid, {} invalid, {} skipped{}",
                summary.valid,
                summary.invalid,
                summary.skipped,
                if summary.unreadable > 0 {
                    format!(", {} unreadable", summary.unreadable)
                } else {
                    String::new()
                }
            );
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

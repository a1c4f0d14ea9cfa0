//! Splits the cost of checking YAML into parse / decode / validate (profiling aid).
use capstan_api::decode::{parse_document, split_documents};
use std::time::Instant;

#[path = "../benches/corpus/mod.rs"]
mod corpus;

fn main() {
    let text = corpus::yaml_corpus(1000);
    let docs = split_documents(&text);
    let n = 20;
    let t = Instant::now();
    for _ in 0..n {
        for d in &docs {
            let _: serde::de::IgnoredAny = serde_yaml_ng::from_str(d.text).expect("yaml");
        }
    }
    println!("libyaml events only: {:?}", t.elapsed() / n);
    let t = Instant::now();
    let mut values = Vec::new();
    for _ in 0..n {
        values = docs
            .iter()
            .map(|d| parse_document(d.text).expect("yaml"))
            .collect::<Vec<_>>();
    }
    let parse = t.elapsed() / n;
    let t = Instant::now();
    let mut objects = Vec::new();
    for _ in 0..n {
        objects = values
            .iter()
            .map(|v| match capstan_api::IstioObject::decode(v.clone()) {
                Ok(capstan_api::Decoded::Istio(o)) => o,
                _ => panic!("decode"),
            })
            .collect::<Vec<_>>();
    }
    let decode = t.elapsed() / n;
    let t = Instant::now();
    for _ in 0..n {
        for o in &objects {
            std::hint::black_box(o.validate(&Default::default()));
        }
    }
    let validate = t.elapsed() / n;
    println!(
        "{} docs: parse {:?}, decode {:?}, validate {:?}",
        docs.len(),
        parse,
        decode,
        validate
    );
}

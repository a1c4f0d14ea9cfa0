//! Hostile input never panics or hangs: oversized documents, deep nesting, alias bombs,
//! garbage bytes, and random mutations of valid objects all end in a clear error.

use capstan_api::{check_text, CheckOptions, Verdict};
use proptest::prelude::*;

fn only_error(text: &str) -> String {
    let results = check_text(text, &CheckOptions::default());
    assert_eq!(results.len(), 1, "one result expected");
    assert_eq!(results[0].verdict, Verdict::Invalid);
    results[0]
        .errors
        .iter()
        .map(|d| d.message.clone())
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn ten_megabyte_document_is_rejected_before_parsing() {
    let mut text = String::from("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: big\nspec:\n  hosts:\n");
    while text.len() < 10 * 1024 * 1024 {
        text.push_str("  - a-very-long-host-name-repeated-many-times.example.com\n");
    }
    let msg = only_error(&text);
    assert!(msg.contains("over the limit"), "{msg}");
}

#[test]
fn ten_thousand_deep_yaml_nesting_is_rejected() {
    let text = format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: deep}}\nspec: {}{}", "[".repeat(10_000), "]".repeat(10_000));
    let msg = only_error(&text);
    assert!(msg.contains("recursion limit"), "{msg}");
}

#[test]
fn ten_thousand_deep_json_nesting_is_rejected() {
    let text = format!(
        "{{\"spec\": {}{}}}",
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    );
    let msg = only_error(&text);
    assert!(msg.contains("recursion limit"), "{msg}");
}

#[test]
fn deep_block_nesting_is_rejected() {
    // Block style needs one more space per level, so 2,000 levels is already ~2 MB.
    let mut text = String::from(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: deep}\nspec:\n",
    );
    for depth in 0..2_000 {
        text.push_str(&" ".repeat(depth + 1));
        text.push_str("a:\n");
    }
    let msg = only_error(&text);
    assert!(msg.contains("recursion limit"), "{msg}");
}

#[test]
fn yaml_alias_bomb_is_rejected() {
    // "Billion laughs": each level references the previous one nine times.
    let mut text = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
    let mut prev = "a";
    for n in names {
        text.push_str(&format!(
            "{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
        prev = n;
    }
    text.push_str("apiVersion: networking.istio.io/v1\nkind: VirtualService\n");
    let msg = only_error(&text);
    assert!(msg.contains("repetition limit"), "{msg}");
}

#[test]
fn non_object_documents_are_rejected_with_a_reason() {
    for text in ["42", "- a\n- b\n", "\"just a string\"", "true"] {
        let msg = only_error(text);
        assert!(msg.contains("expected an object"), "{text}: {msg}");
    }
}

#[test]
fn one_bad_document_blocks_none_of_the_others() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n: : : not yaml [\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {}\n";
    let results = check_text(text, &CheckOptions::default());
    let verdicts: Vec<Verdict> = results.iter().map(|r| r.verdict).collect();
    assert_eq!(
        verdicts,
        vec![Verdict::Skipped, Verdict::Invalid, Verdict::Valid]
    );
    assert_eq!(results[1].line, 5);
    assert!(results[1].errors[0].message.contains("invalid YAML"));
}

const SEED_OBJECTS: &[&str] = &[
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n  namespace: default\nspec:\n  hosts:\n  - reviews\n  http:\n  - match:\n    - headers:\n        end-user:\n          exact: jason\n    route:\n    - destination:\n        host: reviews\n        subset: v2\n  - route:\n    - destination:\n        host: reviews\n        subset: v1\n      weight: 80\n    - destination:\n        host: reviews\n        subset: v3\n      weight: 20\n    timeout: 1.5s\n    retries:\n      attempts: 3\n      perTryTimeout: 100ms\n",
    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\nspec:\n  host: reviews\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        maxConnections: 1\n    outlierDetection:\n      consecutive5xxErrors: 1\n      interval: 1s\n      baseEjectionTime: 3m\n  subsets:\n  - name: v1\n    labels:\n      version: v1\n",
    "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n  - port:\n      number: 443\n      name: https\n      protocol: HTTPS\n    tls:\n      mode: SIMPLE\n      credentialName: cert\n    hosts:\n    - \"*.example.com\"\n",
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny\nspec:\n  action: DENY\n  rules:\n  - from:\n    - source:\n        ipBlocks: [\"1.2.3.4/32\"]\n    to:\n    - operation:\n        methods: [\"POST\"]\n",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = check_text(&text, &CheckOptions::default());
    }

    #[test]
    fn arbitrary_bytes_as_lossy_text_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = check_text(&String::from_utf8_lossy(&bytes), &CheckOptions::default());
    }

    #[test]
    fn mutated_valid_objects_never_panic(
        seed in 0..SEED_OBJECTS.len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), prop::sample::select(vec!["", "-", " ", "\n", ":", "[", "{", "0", "-1", "*", "&a", "*a", "\"", "999999999999999999999", "1e400", "null", "~", "!!binary", "  "])), 1..6),
    ) {
        let mut text = SEED_OBJECTS[seed].to_string();
        for (at, insert) in edits {
            let mut i = at.index(text.len() + 1);
            while !text.is_char_boundary(i) { i -= 1; }
            text.insert_str(i, insert);
        }
        let _ = check_text(&text, &CheckOptions::default());
    }
}

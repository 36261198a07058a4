//! Property tests: whatever bytes arrive, the loader answers with a runbook or with
//! diagnostics it can render, and never panics.

use proptest::prelude::*;
use runbook::runbook::load_bytes;

const EXAMPLES: &[&str] = &[
    include_str!("../../runbooks/demo.yaml"),
    include_str!("../../runbooks/postgres-upgrade.yaml"),
    include_str!("../../runbooks/design-example.yaml"),
];

/// Loads and renders: both must return.
fn check(bytes: &[u8]) {
    if let Err(invalid) = load_bytes("fuzz.yaml", bytes) {
        assert!(!invalid.diagnostics.is_empty());
        let text = invalid.render();
        assert!(text.starts_with("error: "), "{text}");
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Replace { at: usize, with: u8 },
    SwapLines { a: usize, b: usize },
    DuplicateLine { at: usize },
    Truncate { at: usize },
}

/// Bytes that mean something to YAML or to templates, so mutations hit interesting paths.
const SPECIAL: &[u8] = b":-[]{}#&*!|>'\"%@`,?\t\n {}0123456789.~\\";

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (
            any::<usize>(),
            prop::collection::vec(prop::sample::select(SPECIAL), 1..6)
        )
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, with)| Mutation::Replace { at, with }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
        any::<usize>().prop_map(|at| Mutation::DuplicateLine { at }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn apply(mut doc: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let n = doc.len().max(1);
    match m {
        Mutation::Delete { at, len } => {
            let at = at % n;
            let end = (at + len).min(doc.len());
            doc.drain(at.min(doc.len())..end);
        }
        Mutation::Insert { at, bytes } => {
            let at = at % (doc.len() + 1);
            doc.splice(at..at, bytes.iter().copied());
        }
        Mutation::Replace { at, with } => {
            if !doc.is_empty() {
                doc[at % n] = *with;
            }
        }
        Mutation::SwapLines { a, b } => {
            let mut lines: Vec<Vec<u8>> = doc.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect();
            let len = lines.len();
            lines.swap(a % len, b % len);
            doc = lines.join(&b'\n');
        }
        Mutation::DuplicateLine { at } => {
            let mut lines: Vec<Vec<u8>> = doc.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect();
            let i = at % lines.len();
            let line = lines[i].clone();
            lines.insert(i, line);
            doc = lines.join(&b'\n');
        }
        Mutation::Truncate { at } => doc.truncate(at % n),
    }
    doc
}

proptest! {
    // PROPTEST_CASES=100000 for a longer hunt; 512 keeps `cargo test` quick.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check(&bytes);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,512}") {
        check(text.as_bytes());
    }

    #[test]
    fn mutated_examples_never_panic(
        which in 0..EXAMPLES.len(),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        let doc = mutations.iter().fold(EXAMPLES[which].as_bytes().to_vec(), apply);
        check(&doc);
    }
}

#[test]
fn the_unmutated_examples_load() {
    for e in EXAMPLES {
        assert!(load_bytes("example.yaml", e.as_bytes()).is_ok());
    }
}

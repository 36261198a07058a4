//! Every file under `tests/invalid/` is an invalid runbook; `validate` must reject it with
//! exactly the message in the `.expected` file beside it, exit 1, and never panic.
//! `BLESS=1 cargo test --test it invalid_corpus::` rewrites the `.expected` files.

use crate::common;

use std::fs;

#[test]
fn every_invalid_runbook_gets_its_exact_message() {
    let dir = common::root().join("tests/invalid");
    let mut cases: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 40, "the corpus has {} cases", cases.len());
    let bless = std::env::var_os("BLESS").is_some();
    let mut failures = Vec::new();
    for case in &cases {
        let rel = format!("tests/invalid/{case}");
        let out = common::run(&["validate", &rel]);
        assert_eq!(out.code, 1, "{case}: exit code; stderr:\n{}", out.stderr);
        assert_eq!(out.stdout, "", "{case}: stdout");
        let expected_path = dir.join(case.replace(".yaml", ".expected"));
        if bless {
            fs::write(&expected_path, &out.stderr).unwrap();
            continue;
        }
        let expected = fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{case}: no .expected file (run with BLESS=1)"));
        if out.stderr != expected {
            failures.push(format!(
                "--- {case}: expected\n{expected}--- got\n{}",
                out.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_file_over_the_size_limit_is_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    let line = "# padding padding padding padding padding padding padding padding\n";
    let big = line.repeat((17 * 1024 * 1024) / line.len());
    fs::write(&path, big).unwrap();
    let out = common::run_in(dir.path(), &["validate", "huge.yaml"]);
    assert_eq!(out.code, 1);
    let size = fs::metadata(&path).unwrap().len();
    assert_eq!(
        out.stderr,
        format!(
            "error: `huge.yaml` is {size} bytes; files are limited to 16 MiB\n  --> huge.yaml\n\nhuge.yaml: invalid (1 problem)\n"
        )
    );
}

#[test]
fn a_large_file_full_of_problems_reports_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("runbook: big\nsteps:\n");
    for i in 0..5000 {
        text.push_str(&format!("  - id: s{i}\n    kind: bakup\n"));
    }
    fs::write(dir.path().join("big.yaml"), text).unwrap();
    let out = common::run_in(dir.path(), &["validate", "big.yaml"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr.matches("unknown step kind `bakup`").count(),
        5000
    );
    assert!(out.stderr.ends_with("big.yaml: invalid (5000 problems)\n"));
}

#[test]
fn a_missing_file_is_reported() {
    let out = common::run(&["validate", "tests/invalid/no-such-file.yaml"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        "error: cannot read `tests/invalid/no-such-file.yaml`: no such file\n  --> tests/invalid/no-such-file.yaml\n\ntests/invalid/no-such-file.yaml: invalid (1 problem)\n"
    );
}

//! The README is the user's manual: its examples must be true.

use crate::common;

use std::fs;

fn readme() -> String {
    fs::read_to_string(common::root().join("README.md")).unwrap()
}

/// The fenced blocks of a given language, in order.
fn blocks(text: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match &mut current {
            None if line.trim_start() == format!("```{lang}") => current = Some(String::new()),
            Some(block) if line.trim_start() == "```" => {
                out.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    out
}

#[test]
fn every_yaml_block_in_the_readme_validates() {
    let yaml = blocks(&readme(), "yaml");
    assert!(!yaml.is_empty());
    let dir = tempfile::tempdir().unwrap();
    // The files the examples name, where they name them.
    fs::create_dir_all(dir.path().join("runbooks")).unwrap();
    fs::copy(
        common::root().join("runbooks/inventory.ini"),
        dir.path().join("runbooks/inventory.ini"),
    )
    .unwrap();
    for (i, block) in yaml.iter().enumerate() {
        let name = format!("readme-{i}.yaml");
        fs::write(dir.path().join(&name), block).unwrap();
        let out = common::run_in(dir.path(), &["validate", &name]);
        assert_eq!(out.code, 0, "README yaml block {i}:\n{}", out.stderr);
    }
}

#[test]
fn the_error_example_is_what_validate_prints() {
    let text = blocks(&readme(), "text");
    let example = text
        .iter()
        .find(|b| b.starts_with("error: step `migrate` requires unknown step `bakup`"))
        .expect("the README shows the requires error");
    let out = common::run(&["validate", "tests/invalid/requires-unknown.yaml"]);
    assert_eq!(&out.stderr, example);
}

#[test]
fn the_plan_example_matches_the_real_output() {
    let text = blocks(&readme(), "text");
    let example = text
        .iter()
        .find(|b| b.starts_with("$ runbook plan runbooks/demo.yaml"))
        .expect("the README shows a plan");
    // No earlier runs: the README shows the runbook's own durations.
    let out = common::run(&[
        "plan",
        "runbooks/demo.yaml",
        "--store",
        "sqlite:///nonexistent/none.db",
    ]);
    // The README elides lines with `...`; every line it does show must be real.
    for line in example.lines().skip(1).filter(|l| l.trim() != "...") {
        assert!(
            out.stdout.lines().any(|l| l == line),
            "not in the output: {line:?}"
        );
    }
}

#[test]
fn the_committed_schema_is_current() {
    let committed = fs::read_to_string(common::root().join("runbook.schema.json")).unwrap();
    let out = common::run(&["schema"]);
    assert_eq!(
        committed, out.stdout,
        "runbook.schema.json is stale: run `cargo run -- schema > runbook.schema.json`"
    );
}

#[test]
fn ci_runs_the_readme_test_command() {
    let ci = fs::read_to_string(common::root().join(".ci/run")).unwrap();
    let setup = blocks(&readme(), "sh")
        .into_iter()
        .next()
        .expect("set-up commands");
    let test_command = setup
        .lines()
        .find(|l| l.contains("# the tests"))
        .and_then(|l| l.split('#').next())
        .map(str::trim)
        .expect("a test command");
    assert!(
        ci.lines().any(|l| l.trim() == test_command),
        ".ci/run must run `{test_command}`"
    );
}

#[test]
fn the_run_example_matches_the_real_output() {
    let text = blocks(&readme(), "text");
    let example = text
        .iter()
        .find(|b| b.starts_with("$ runbook execute runbooks/sqlite-patch.yaml"))
        .expect("the README shows a run");
    let command = example.lines().next().unwrap();
    let args: Vec<&str> = command.split_whitespace().skip(2).collect();
    // As a new user in a checkout would, but in a scratch directory.
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("runbooks")).unwrap();
    fs::copy(
        common::root().join("runbooks/sqlite-patch.yaml"),
        dir.path().join("runbooks/sqlite-patch.yaml"),
    )
    .unwrap();
    let out = common::run_in(dir.path(), &args);
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    // Times and the generated run id differ from run to run.
    let normal = |line: &str| {
        let line = match line.get(..10) {
            Some(t) if t.as_bytes()[2] == b':' && t.ends_with("  ") => &line[10..],
            _ => line,
        };
        match line.strip_prefix("run sqlite-patch-") {
            Some(_) => "run sqlite-patch-ID".to_owned(),
            None => line.to_owned(),
        }
    };
    let real: Vec<String> = out.stdout.lines().map(normal).collect();
    for line in example.lines().skip(1).filter(|l| l.trim() != "...") {
        assert!(
            real.contains(&normal(line)),
            "not in the output: {line:?}\n{}",
            out.stdout
        );
    }
}

//! The JSON Schema printed by `runbook schema` agrees with the loader: a real JSON Schema
//! validator accepts every example runbook and rejects shapes the loader rejects.

use crate::common;

use runbook::runbook::yaml;
use serde_json::Value;

fn schema() -> Value {
    let out = common::run(&["schema"]);
    assert_eq!(out.code, 0);
    serde_json::from_str(&out.stdout).unwrap()
}

fn as_json(path: &str) -> Value {
    let text = std::fs::read_to_string(common::root().join(path)).unwrap();
    yaml::parse(&text).unwrap().to_json()
}

#[test]
fn the_schema_accepts_every_example_runbook() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    for entry in std::fs::read_dir(common::root().join("runbooks")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.ends_with(".yaml") {
            continue;
        }
        let doc = as_json(&format!("runbooks/{name}"));
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:#?}");
    }
}

#[test]
fn the_schema_rejects_what_the_loader_rejects() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    for case in [
        "unknown-top-field",
        "unknown-step-field",
        "unknown-kind",
        "unknown-on-failure",
        "missing-steps",
        "missing-runbook-id",
        "missing-step-kind",
        "wrong-type-bool",
        "wrong-type-requires",
        "wrong-type-retries",
        "wrong-type-steps",
        "concurrency-negative",
        "bad-duration",
        "duration-without-unit",
    ] {
        let doc = as_json(&format!("tests/invalid/{case}.yaml"));
        assert!(!validator.is_valid(&doc), "{case} passes the schema");
    }
}

//! Fan-out items have names: an item's `name`, else the step's `item_label`, else its
//! value; in log lines, `status`, log file names and the report.

use crate::common;

use common::world::World;

const RUNBOOK: &str = r#"runbook: named-items
steps:
  - id: tenants
    kind: install
    for_each:
      - { name: acme, db: a }
      - { name: mops_platform, db: b }
    max_failures: 1
    run: { shell: "echo migrating {{item.db}}; test {{item.db}} != b" }
  - id: hosts
    kind: install
    for_each: [{ host: web1, port: 80 }, { host: web2, port: 81 }]
    item_label: "{{item.host}}:{{item.port}}"
    run: { shell: "echo {{item.host}}" }
  - id: plain
    kind: install
    for_each: [alpha, beta]
    run: { shell: "echo {{item}}" }
  - { id: note, kind: patch, run: { shell: "echo hello" } }
"#;

#[test]
fn items_are_named_in_logs_status_log_files_and_the_report() {
    let w = World::sqlite();
    w.write("rb.yaml", RUNBOOK);
    let o = w.execute("rb.yaml", "n1");
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    // The terminal: the failing item by its name, not its number.
    assert!(
        o.stdout
            .contains("step tenants: item mops_platform FAILED: `echo migrating 'b'; test 'b' != b` exited with status 1"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("step hosts: item web2:81 succeeded"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("step plain: item beta succeeded"),
        "{}",
        o.stdout
    );
    // Log files: by name where the name is safe in a file name, else by index.
    let logs = w.path("state/logs/n1");
    let log = std::fs::read_to_string(logs.join("tenants.mops_platform.log")).unwrap();
    assert!(log.contains("migrating b"), "{log}");
    assert!(logs.join("tenants.acme.log").exists());
    assert!(logs.join("plain.alpha.log").exists());
    assert!(
        logs.join("hosts.0.log").exists(),
        "`web1:80` is not a file name"
    );
    // `status`, in text and JSON.
    let text = w.run(&["status", "n1"]);
    assert!(
        text.stdout.contains(
            "      item mops_platform FAILED: `echo migrating 'b'; test 'b' != b` exited"
        ),
        "{}",
        text.stdout
    );
    let s = w.status_json("n1");
    let failures = &s["steps"]["tenants"]["items"]["failures"];
    assert_eq!(failures[0]["name"], "mops_platform", "{s}");
    assert_eq!(failures[0]["index"], 1, "{s}");
    // The report: a row per item with its name and outcome.
    let r = w.run(&["report", "n1", "--format", "json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let step = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "hosts")
        .unwrap();
    let names: Vec<&str> = step["items"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web1:80", "web2:81"]);
    // Where each step's log is.
    let note = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "note")
        .unwrap();
    let log = note["log"].as_str().unwrap();
    assert!(log.ends_with("state/logs/n1/note.log"), "{log}");
    assert!(std::fs::read_to_string(log).unwrap().contains("hello"));
    let md = w.run(&["report", "n1"]);
    assert!(md.stdout.contains(&format!("log: {log}")), "{}", md.stdout);
    assert!(
        md.stdout.contains("item mops_platform: failed in"),
        "{}",
        md.stdout
    );
    assert!(
        md.stdout.contains("item acme: succeeded in"),
        "{}",
        md.stdout
    );
}

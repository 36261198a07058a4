//! Host steps over real SSH (`tests/it/common/sshd.rs` starts one `sshd` per host):
//! waves and their gates, a kill in the middle of a wave then resume, a changed host key,
//! an unreachable host, per-host rollback, `copy`, `--limit`, `--retry --only`, a timeout
//! that kills the command on the host, `runbook hosts` and `--dry-run`.

use crate::common;

use common::sshd::Lab;
use common::world::World;

fn runbook(lab: &Lab, steps: &str) -> String {
    format!(
        "runbook: hosts-test\n{}steps:\n{steps}",
        lab.inventory("web")
    )
}

#[test]
fn a_rolling_patch_stops_at_a_failing_gate_and_rolls_back_host_by_host() {
    let lab = Lab::new(4);
    let w = World::sqlite();
    let l = lab.dir.path().display();
    // h2 never becomes healthy: the gate after wave 2 fails, h3 and h4 never start.
    let steps = format!(
        r#"  - id: patch
    kind: patch
    on: web
    waves: [1, 50%, 100%]
    between_waves:
      - shell: "test -f {l}/healthy-{{{{host.name}}}}"
        message: "{{{{host.name}}}} is healthy"
    run: {{ shell: "echo {{{{host.name}}}} >> {l}/patched; echo on $(hostname); [ {{{{host.name}}}} = h2 ] || touch {l}/healthy-{{{{host.name}}}}" }}
    rollback: {{ shell: "echo {{{{host.name}}}} >> {l}/undone" }}
"#
    );
    w.write("rb.yaml", &runbook(&lab, &steps));
    let out = w.execute("rb.yaml", "waves");
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(lab.lines("patched"), ["h1", "h2"], "{}", out.stdout);
    // Undone host by host, the last done first.
    assert_eq!(lab.lines("undone"), ["h2", "h1"]);
    assert!(
        out.stdout
            .contains("between waves 2 and 3: host `h2`: h2 is healthy"),
        "{}",
        out.stdout
    );
    for h in ["h1", "h2"] {
        assert!(
            out.stdout
                .contains(&format!("step patch: item {h} succeeded")),
            "{}",
            out.stdout
        );
    }
    assert!(!out.stdout.contains("item h3"), "{}", out.stdout);
    // Each host's output in its own log, named by host.
    let log = std::fs::read_to_string(w.path("state/logs/waves/patch.h1.log")).unwrap();
    assert!(log.contains("stdout: on "), "{log}");
    assert!(!log.contains("@runbook-remote-pgid"), "{log}");
}

#[test]
fn a_runner_killed_in_the_middle_of_a_wave_resumes_with_the_hosts_not_done() {
    let steps = |l: &str| {
        format!(
            r#"  - id: patch
    kind: patch
    on: web
    waves: [1, 100%]
    run: {{ shell: "echo {{{{host.name}}}} >> {l}/marker-{{{{host.name}}}}" }}
"#
        )
    };
    // A clean run says where h2's outcome is committed.
    let clean_lab = Lab::new(4);
    let clean = World::sqlite();
    let l = clean_lab.dir.path().display().to_string();
    clean.write("rb.yaml", &runbook(&clean_lab, &steps(&l)));
    let out = clean.execute_json("rb.yaml", "clean");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let seq_of = |kind: &str, name: &str| {
        out.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["event"]["type"] == kind && e["event"]["name"] == name)
            .and_then(|e| e["seq"].as_i64())
            .expect("the event in the log")
    };
    // Killed after h2's outcome is committed, and after h3's start is (before its
    // command runs: the host says it never started, so it runs once).
    let kills = [seq_of("item_succeeded", "h2"), seq_of("item_started", "h3")];
    for seq in kills {
        let lab = Lab::new(4);
        let w = World::sqlite();
        let l = lab.dir.path().display().to_string();
        w.write("rb.yaml", &runbook(&lab, &steps(&l)));
        w.execute_killed_after("rb.yaml", "killed", seq);
        for (i, h) in ["h1", "h2", "h3", "h4"].iter().enumerate() {
            let want = usize::from(i < 2);
            let got = lab.lines(&format!("marker-{h}")).len();
            assert_eq!(got, want, "{h} before the resume (kill after {seq})");
        }
        let out = w.run(&["resume", "killed"]);
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        for h in ["h1", "h2", "h3", "h4"] {
            let got = lab.lines(&format!("marker-{h}"));
            assert_eq!(got, [h], "{h} ran exactly once (kill after {seq})");
        }
    }
}

#[test]
fn a_changed_host_key_fails_that_host_only_also_with_accept_new() {
    let mut lab = Lab::new(2);
    lab.change_host_key(1);
    let w = World::sqlite();
    let l = lab.dir.path().display();
    for known in ["strict", "accept_new"] {
        let _ = std::fs::remove_file(lab.path("done"));
        let text = runbook(
            &lab,
            &format!(
                r#"  - id: patch
    kind: patch
    on: web
    concurrency: 2
    max_failures: 1
    run: {{ shell: "echo {{{{host.name}}}} >> {l}/done" }}
"#
            ),
        )
        .replace("ssh:\n", &format!("ssh:\n  known_hosts: {known}\n"));
        w.write("rb.yaml", &text);
        let run = format!("key-{known}");
        let out = w.execute("rb.yaml", &run);
        assert_eq!(out.code, 0, "{known}: {}\n{}", out.stdout, out.stderr);
        assert_eq!(lab.lines("done"), ["h1"], "{known}");
        let failed = out
            .stdout
            .lines()
            .find(|l| l.contains("item h2 FAILED"))
            .unwrap_or_else(|| panic!("{known}: {}", out.stdout));
        assert!(failed.contains("host key has changed"), "{failed}");
        assert!(failed.contains("ssh to `h2`"), "{failed}");
    }
    // Never accepted silently: known_hosts still has the old key.
    let known = std::fs::read_to_string(lab.path("known_hosts")).unwrap();
    assert_eq!(known.lines().count(), 2, "{known}");
}

#[test]
fn an_unreachable_host_fails_in_one_line_and_the_others_go_on() {
    let lab = Lab::new(1);
    let w = World::sqlite();
    let l = lab.dir.path().display();
    let text = runbook(
        &lab,
        &format!(
            r#"  - id: patch
    kind: patch
    on: [web, far]
    max_failures: 2
    run: {{ shell: "echo {{{{host.name}}}} >> {l}/done" }}
"#
        ),
    )
    .replace(
        "ssh:\n",
        &format!(
            "  far:\n    - {{ name: gone, address: 127.0.0.1, port: 1 }}\n    - {{ name: nokey, address: {}, port: {}, identity_file: {} }}\nssh:\n",
            lab.hosts[0].address,
            lab.hosts[0].port,
            lab.path("other_key").display()
        ),
    );
    // A key the host does not know: authentication is refused.
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(lab.path("other_key"))
        .status()
        .unwrap();
    assert!(status.success());
    w.write("rb.yaml", &text);
    let out = w.execute("rb.yaml", "gone");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(lab.lines("done"), ["h1"]);
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("item gone FAILED"))
        .expect("the failure");
    assert!(
        line.contains("ssh to `gone`") && line.contains("refused"),
        "{line}"
    );
    // Dry run: connects to each host and says which cannot be reached.
    let out = w.run(&["execute", "rb.yaml", "--dry-run"]);
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("h1 ") && out.stdout.contains("reachable"),
        "{}",
        out.stdout
    );
    // What each host would run, rendered for the first host.
    assert!(
        out.stdout.contains("run (first item): shell: echo 'h1' >>"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("UNREACHABLE: ssh to `gone`"),
        "{}",
        out.stdout
    );
}

#[test]
fn copy_uploads_files_and_directories_checked_and_refuses_a_missing_source_first() {
    let lab = Lab::new(2);
    let w = World::sqlite();
    let l = lab.dir.path().display();
    std::fs::create_dir_all(w.path("build/conf/sub")).unwrap();
    w.write("build/app-1.2.tar.gz", "the application, version 1.2\n");
    w.write("build/conf/a.ini", "a=1\n");
    w.write("build/conf/sub/b.ini", "b=2\n");
    let steps = format!(
        r#"  - id: ship
    kind: install
    on: web
    run: {{ copy: {{ src: "build/app-{{{{vars.version}}}}.tar.gz", dest: "{l}/{{{{host.name}}}}/opt/app.tar.gz", mode: "0640" }} }}
  - id: conf
    kind: install
    on: web
    run: {{ copy: {{ src: build/conf, dest: "{l}/{{{{host.name}}}}/etc/conf" }} }}
"#
    );
    let text = runbook(&lab, &steps).replace("steps:\n", "vars: { version: \"1.2\" }\nsteps:\n");
    w.write("rb.yaml", &text);
    let out = w.execute_json("rb.yaml", "copy");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let events = out.stdout.clone();
    for h in ["h1", "h2"] {
        let got = std::fs::read_to_string(lab.path(&format!("{h}/opt/app.tar.gz"))).unwrap();
        assert_eq!(got, "the application, version 1.2\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(lab.path(&format!("{h}/opt/app.tar.gz")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        assert_eq!(
            std::fs::read_to_string(lab.path(&format!("{h}/etc/conf/sub/b.ini"))).unwrap(),
            "b=2\n"
        );
        // Nothing left under a temporary name.
        let left: Vec<_> = std::fs::read_dir(lab.path(&format!("{h}/opt")))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }
    let text = events;
    // sha256 of the file, as `sha256sum` says.
    let sum = std::process::Command::new("sha256sum")
        .arg(w.path("build/app-1.2.tar.gz"))
        .output()
        .unwrap();
    let sum = String::from_utf8_lossy(&sum.stdout);
    let sum = sum.split_whitespace().next().unwrap();
    assert!(text.contains(sum), "{text}");
    assert!(text.contains("\"size_bytes\":29"), "{text}");
    assert!(text.contains("/h1/opt/app.tar.gz"), "{text}");

    // A missing source: the step fails before any host is touched.
    let text = text_with_missing(&lab, l.to_string());
    w.write("missing.yaml", &text);
    let out = w.execute("missing.yaml", "missing");
    assert_ne!(out.code, 0);
    assert!(
        out.stdout
            .contains("`copy` source `build/nope.tar.gz` does not exist; no host was touched"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("item h1 started"), "{}", out.stdout);
}

fn text_with_missing(lab: &Lab, l: String) -> String {
    runbook(
        lab,
        &format!(
            r#"  - id: ship
    kind: install
    on: web
    run: {{ copy: {{ src: build/nope.tar.gz, dest: "{l}/{{{{host.name}}}}/x" }} }}
"#
        ),
    )
}

#[test]
fn limit_runs_only_the_hosts_named_and_retry_only_reruns_the_failed_hosts_named() {
    let lab = Lab::new(3);
    let w = World::sqlite();
    let l = lab.dir.path().display();
    let steps = format!(
        r#"  - id: patch
    kind: patch
    on: web
    concurrency: 3
    on_failure: pause
    run: {{ shell: "test ! -e {l}/broken-{{{{host.name}}}} && echo {{{{host.name}}}} >> {l}/done" }}
"#
    );
    w.write("rb.yaml", &runbook(&lab, &steps));
    let out = w.run(&[
        "execute", "rb.yaml", "--yes", "--now", "--run-id", "lim", "--limit", "h1,h3",
    ]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let mut done = lab.lines("done");
    done.sort();
    assert_eq!(done, ["h1", "h3"]);
    let out = w.run(&["execute", "rb.yaml", "--yes", "--now", "--limit", "h9"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("--limit: `h9` is not a group or host"),
        "{}",
        out.stderr
    );

    std::fs::remove_file(lab.path("done")).unwrap();
    std::fs::write(lab.path("broken-h2"), "").unwrap();
    std::fs::write(lab.path("broken-h3"), "").unwrap();
    let out = w.execute("rb.yaml", "retry");
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(lab.lines("done"), ["h1"]);
    // A host that did not fail is refused.
    let out = w.run(&["resume", "retry", "--retry", "--only", "h1"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("not a failed host of step `patch` (failed: h2, h3)"),
        "{}",
        out.stderr
    );
    // h2 fixed and retried alone: h3 stays failed, so the step fails again.
    std::fs::remove_file(lab.path("broken-h2")).unwrap();
    let out = w.run(&["resume", "retry", "--retry", "--only", "h2"]);
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(lab.lines("done"), ["h1", "h2"], "{}", out.stdout);
    assert!(!out.stdout.contains("item h3 started"), "{}", out.stdout);
    std::fs::remove_file(lab.path("broken-h3")).unwrap();
    let out = w.run(&["resume", "retry", "--retry", "--only", "h3"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(lab.lines("done"), ["h1", "h2", "h3"]);
}

#[test]
fn a_timeout_kills_the_command_on_the_host_not_only_the_local_ssh() {
    let lab = Lab::new(1);
    let w = World::sqlite();
    let l = lab.dir.path().display();
    let steps = format!(
        r#"  - id: slow
    kind: patch
    on: web
    timeout: 8s
    on_failure: abort
    run: {{ shell: "sleep 60 & echo $! > {l}/pid; wait" }}
"#
    );
    w.write("rb.yaml", &runbook(&lab, &steps));
    let out = w.execute("rb.yaml", "slow");
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    let pid: i32 = std::fs::read_to_string(lab.path("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: signal 0 only asks whether the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z");
    assert!(
        !alive,
        "the command's background process {pid} still runs on the host"
    );

    // An abort while it runs kills it on the host too.
    std::fs::remove_file(lab.path("pid")).unwrap();
    w.write(
        "rb.yaml",
        &runbook(&lab, &steps.replace("    timeout: 8s\n", "")),
    );
    let mut running = w
        .command(&[
            "execute", "rb.yaml", "--yes", "--now", "--run-id", "aborted",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !lab.path("pid").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the command did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let pid: i32 = std::fs::read_to_string(lab.path("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let out = w.run(&["abort", "aborted"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let status = running.wait().unwrap();
    assert_eq!(status.code(), Some(4));
    let alive = unsafe { libc::kill(pid, 0) } == 0
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z");
    assert!(!alive, "after the abort, {pid} still runs on the host");
}

#[test]
fn hosts_prints_the_resolved_inventory_with_where_each_host_came_from() {
    let w = World::sqlite();
    w.write(
        "inventory.ini",
        "[db]\ndb1 ansible_host=10.0.0.21 ansible_user=postgres\n[prod:children]\ndb\n",
    );
    w.write(
        "rb.yaml",
        "runbook: inv\ninventory: inventory.ini\nhosts:\n  web:\n    - web1.example.com\n    - { name: web2, address: 10.0.0.12, port: 2222, user: deploy, vars: { role: canary } }\nssh: { user: ops }\nsteps:\n  - { id: p, kind: patch, on: all, run: { shell: \"true\" } }\n",
    );
    let out = w.run(&["hosts", "rb.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("group web: web1.example.com, web2"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("group prod: db1"), "{}", out.stdout);
    let web2 = out.stdout.lines().find(|l| l.starts_with("web2")).unwrap();
    assert_eq!(
        web2.split_whitespace().collect::<Vec<_>>(),
        ["web2", "10.0.0.12", "2222", "deploy", "web", "rb.yaml:6"]
    );
    let out = w.run(&["hosts", "rb.yaml", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["hosts"][0]["user"], "ops");
    assert_eq!(v["hosts"][2]["name"], "db1");
    assert_eq!(v["hosts"][2]["user"], "postgres");
    assert_eq!(v["hosts"][2]["from"], "inventory.ini:2");
    assert_eq!(v["hosts"][2]["groups"], serde_json::json!(["db", "prod"]));
    assert_eq!(v["hosts"][1]["vars"]["role"], "canary");
    // A broken inventory: its own file, line and column.
    w.write("inventory.ini", "[db]\ndb1 ansible_port=many\n");
    let out = w.run(&["hosts", "rb.yaml"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("--> inventory.ini:2:1"),
        "{}",
        out.stderr
    );
    // `plan` shows the host count and the waves.
    w.write("inventory.ini", "[db]\ndb1\n");
    w.write(
        "rb.yaml",
        "runbook: inv\ninventory: inventory.ini\nhosts:\n  web: [a, b, c, d]\nsteps:\n  - { id: p, kind: patch, on: all, waves: [1, 50%, 100%], run: { shell: \"true\" } }\n",
    );
    let out = w.run(&["plan", "rb.yaml"]);
    assert!(
        out.stdout
            .contains("5 hosts in 3 waves (done by each: 1, 3, 5)"),
        "{}",
        out.stdout
    );
}

#[test]
fn approve_between_waves_waits_for_a_person_and_a_rejection_fails_the_step() {
    let lab = Lab::new(2);
    let w = World::sqlite();
    let l = lab.dir.path().display();
    let steps = format!(
        r#"  - id: patch
    kind: patch
    on: web
    waves: [1, 100%]
    approve_between_waves: true
    run: {{ shell: "echo {{{{host.name}}}} >> {l}/done" }}
    rollback: {{ shell: "echo {{{{host.name}}}} >> {l}/undone" }}
"#
    );
    w.write("rb.yaml", &runbook(&lab, &steps));
    for (run, verb, code) in [("approved", "approve", 0), ("rejected", "reject", 3)] {
        let _ = std::fs::remove_file(lab.path("done"));
        let running = w
            .command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", run])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let o = w.run(&["status", run, "--format", "json"]);
            if o.stdout.contains("\"status\": \"awaiting_approval\"") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{run}: no approval asked: {}",
                o.stdout
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(lab.lines("done"), ["h1"], "{run}: wave 2 waits");
        let o = w.run(&[verb, run, "patch", "--by", "lead"]);
        assert_eq!(o.code, 0, "{run}: {}", o.stderr);
        let out = running.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "{run}: {stdout}");
        if verb == "approve" {
            assert_eq!(lab.lines("done"), ["h1", "h2"]);
            assert!(
                stdout.contains("waiting for approval to start wave 2"),
                "{stdout}"
            );
        } else {
            assert_eq!(lab.lines("done"), ["h1"]);
            assert_eq!(lab.lines("undone"), ["h1"]);
            assert!(
                stdout.contains("between waves 1 and 2: rejected by lead"),
                "{stdout}"
            );
        }
    }
}

#[test]
fn a_host_whose_command_ran_on_after_the_runner_was_killed_is_recorded_not_run_again() {
    let lab = Lab::new(3);
    let w = World::sqlite();
    let l = lab.dir.path().display();
    let steps = format!(
        r#"  - id: patch
    kind: patch
    on: web
    run: {{ shell: "echo {{{{host.name}}}} >> {l}/marker-{{{{host.name}}}}; if [ {{{{host.name}}}} = h2 ]; then sleep 2; fi" }}
"#
    );
    w.write("rb.yaml", &runbook(&lab, &steps));
    let mut running = w
        .command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", "cut"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while lab.lines("marker-h2").is_empty() {
        assert!(std::time::Instant::now() < deadline, "h2 did not start");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Killed while h2's command runs on the host.
    running.kill().unwrap();
    running.wait().unwrap();
    let mut out = w.run(&["resume", "cut"]);
    for _ in 0..100 {
        if !out.stderr.contains("still running") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        out = w.run(&["resume", "cut"]);
    }
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("host h2 finished its command after the runner stopped"),
        "{}",
        out.stdout
    );
    for h in ["h1", "h2", "h3"] {
        assert_eq!(
            lab.lines(&format!("marker-{h}")),
            [h],
            "{h} ran exactly once"
        );
    }
}

#[test]
fn a_host_command_gets_its_environment_and_working_directory() {
    let lab = Lab::new(1);
    let w = World::sqlite();
    let l = lab.dir.path().display();
    let steps = format!(
        r#"  - id: greet
    kind: patch
    on: web
    run: {{ shell: "echo \"$GREETING in $(pwd)\" >> {l}/greetings", env: {{ GREETING: "it's {{{{host.name}}}}" }}, cwd: "{l}" }}
"#
    );
    w.write("rb.yaml", &runbook(&lab, &steps));
    let out = w.execute("rb.yaml", "env");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(lab.lines("greetings"), [format!("it's h1 in {l}")]);
}

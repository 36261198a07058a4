//! The Atom and RSS feeds, read by a real feed reader (Python's feedparser, through
//! `tests/feeds.py`): after a run, `/history.atom` and `/history.rss` parse cleanly and hold
//! exactly the run's public updates, newest first, each with a title, link, id and date.
//!
//! feedparser lives in `target/pyenv`; `scripts/test-tools.sh feedparser` installs it when
//! missing (the test calls it).

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Functional waits: generous, for a shared and noisy machine.
const WAIT: Duration = Duration::from_secs(60);

/// A process of the test, killed (with its process group) when dropped.
struct Proc(Child);

impl Proc {
    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: signalling the process group the test created.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/pyenv/bin/python` with feedparser, installed when missing.
fn feed_python() -> PathBuf {
    let python = root().join("target/pyenv/bin/python");
    let has = |p: &Path| {
        Command::new(p)
            .args(["-c", "import feedparser"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has(&python) {
        let status = Command::new("bash")
            .arg(root().join("scripts/test-tools.sh"))
            .arg("feedparser")
            .status()
            .expect("scripts/test-tools.sh runs");
        assert!(
            status.success() && has(&python),
            "scripts/test-tools.sh feedparser failed ({status})"
        );
    }
    python
}

fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .expect("an HTTP client")
}

/// GET `url`: status, content type and body.
async fn get(http: &reqwest::Client, url: &str) -> Option<(u16, String, String)> {
    let r = http.get(url).send().await.ok()?;
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Some((status, ctype, r.text().await.ok()?))
}

/// `runbook serve` of `store` on a free port, answering as `page_name` (so that it is
/// surely ours, not another server that took the port first).
async fn start_server(
    http: &reqwest::Client,
    dir: &Path,
    store: &str,
    page_name: &str,
) -> (Proc, String) {
    for attempt in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let log = fs::File::create(dir.join(format!("serve-{attempt}.log"))).unwrap();
        let mut server = Proc(
            crate::common::runbook()
                .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
                .args(["--store", store, "--page-name", page_name])
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .process_group(0)
                .spawn()
                .expect("runbook serve starts"),
        );
        let base = format!("http://127.0.0.1:{port}");
        let end = Instant::now() + WAIT;
        while server.alive() && Instant::now() < end {
            if let Some((200, _, body)) = get(http, &format!("{base}/api/v2/summary.json")).await {
                let v: Value = serde_json::from_str(&body).unwrap_or_default();
                if v["page"]["name"] == page_name {
                    return (server, base);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!(
        "runbook serve did not come up; see {}/serve-*.log",
        dir.display()
    );
}

const RUNBOOK: &str = r#"runbook: feed-demo
title: Feed demo maintenance & <checks>
summary: Checking the "feeds".
status_page: { components: [web] }
steps:
  - { id: prepare, kind: patch, title: Prepare things, public: false, run: { shell: "true" } }
  - { id: close, kind: close, title: Close the shop }
  - { id: patch, kind: patch, title: "Patch <orders> & \"items\"", run: { shell: "true" } }
  - { id: reopen, kind: reopen, title: Reopen the shop }
"#;
const TITLE: &str = "Feed demo maintenance & <checks>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_hold_every_public_update_of_a_run() {
    let python = feed_python();
    let http = http_client();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = format!("sqlite://{}/state.db", dir.display());
    let runbook = dir.join("feed.yaml");
    fs::write(&runbook, RUNBOOK).unwrap();

    // A whole run, before any server.
    let out = crate::common::runbook()
        .arg("execute")
        .arg(&runbook)
        .args(["--now", "--yes", "--store", &store])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("runbook execute runs");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the run did not complete:\n{printed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_id = printed
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("run "))
        .expect("`run ID` first")
        .trim()
        .to_owned();

    let page_name = format!("Feeds test {}", std::process::id());
    let (_server, base) = start_server(&http, dir, &store, &page_name).await;

    // The run's public updates, as the Statuspage-compatible API has them (newest first).
    let (status, _, body) = get(&http, &format!("{base}/api/v2/scheduled-maintenances.json"))
        .await
        .expect("the API answers");
    assert_eq!(status, 200, "{body}");
    let api: Value = serde_json::from_str(&body).expect("JSON");
    let maintenance = api["scheduled_maintenances"]
        .as_array()
        .expect("scheduled_maintenances")
        .iter()
        .find(|m| m["id"] == run_id.as_str())
        .unwrap_or_else(|| panic!("maintenance {run_id} not in the API: {api:#}"))
        .clone();
    assert_eq!(maintenance["status"], "completed");
    let updates: Vec<String> = maintenance["incident_updates"]
        .as_array()
        .expect("incident_updates")
        .iter()
        .map(|u| u["body"].as_str().expect("a body").to_owned())
        .collect();
    // Started, the three public steps (the hidden one is not said), completed.
    assert_eq!(updates.len(), 5, "{updates:#?}");
    let first = format!("{TITLE} has started. Checking the \"feeds\".");
    let last = format!("{TITLE} is complete. Thank you for your patience.");
    assert_eq!(updates.last(), Some(&first));
    assert_eq!(updates.first(), Some(&last));
    assert!(
        !updates.iter().any(|u| u.contains("Prepare things")),
        "a hidden step was made public: {updates:#?}"
    );

    // Save the feeds as served.
    let saved = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("feeds");
    fs::create_dir_all(&saved).unwrap();
    let mut files = Vec::new();
    for (path, ctype) in [
        ("/history.atom", "application/atom+xml"),
        ("/history.rss", "application/rss+xml"),
    ] {
        let (status, got_type, body) = get(&http, &format!("{base}{path}"))
            .await
            .expect("the feed answers");
        assert_eq!(status, 200, "{path}: {body}");
        assert!(
            got_type.starts_with(ctype),
            "{path} is served as `{got_type}`, not {ctype}"
        );
        let file = saved.join(path.trim_start_matches('/'));
        fs::write(&file, &body).unwrap();
        files.push(file);
    }

    // Read them as a feed reader does.
    let out = Command::new(&python)
        .arg(root().join("tests/feeds.py"))
        .args(&files)
        .output()
        .expect("tests/feeds.py runs");
    assert!(
        out.status.success(),
        "tests/feeds.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let feeds: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON from feeds.py");
    assert_eq!(feeds.len(), 2);
    let link = format!("{base}/maintenances/{run_id}");
    for (feed, version) in feeds.iter().zip(["atom10", "rss20"]) {
        let file = feed["file"].as_str().unwrap_or_default();
        assert_eq!(
            feed["bozo"], 0,
            "{file} is not well-formed: {}",
            feed["bozo_exception"]
        );
        assert_eq!(feed["version"], version, "{file}");
        assert_eq!(
            feed["title"],
            format!("{page_name} history").as_str(),
            "{file}"
        );
        assert_eq!(feed["link"], format!("{base}/").as_str(), "{file}");
        let entries = feed["entries"].as_array().expect("entries");
        assert_eq!(
            entries.len(),
            updates.len(),
            "{file}: one entry per public update: {entries:#?}"
        );
        let mut ids = std::collections::HashSet::new();
        for (entry, update) in entries.iter().zip(&updates) {
            for field in ["title", "link", "id", "published", "updated"] {
                assert!(
                    entry[field].as_str().is_some_and(|v| !v.is_empty()),
                    "{file}: an entry without `{field}`: {entry:#}"
                );
            }
            assert!(
                entry["title"].as_str().unwrap().starts_with(TITLE),
                "{file}: entry title {}",
                entry["title"]
            );
            assert_eq!(entry["link"], link.as_str(), "{file}");
            assert!(
                ids.insert(entry["id"].as_str().unwrap().to_owned()),
                "{file}: id {} twice",
                entry["id"]
            );
            assert_eq!(
                entry["summary_text"],
                update.as_str(),
                "{file}: entries in the API's order (newest first)"
            );
        }
        assert_eq!(entries[0]["summary_text"], last.as_str(), "{file}");
        assert_eq!(
            entries.last().unwrap()["summary_text"],
            first.as_str(),
            "{file}"
        );
        assert!(
            entries[0]["title"].as_str().unwrap().ends_with("Completed"),
            "{file}: {}",
            entries[0]["title"]
        );
    }
}

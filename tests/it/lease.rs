//! The lease is a fence: a runner that stalled past the stale limit, and whose lease
//! `runbook resume` took over, appends nothing more and stops, naming the new holder.
//! Through the real binary (stalled with `RUNBOOK_TEST_STOP_AFTER_EVENT`, a SIGSTOP the
//! runner sends itself right after a commit), and at the store level, on both stores.

use crate::both_stores;
use crate::common;

use common::spawned::Spawned;
use common::world::World;
use runbook::engine::event::Event;
use runbook::store::{Lease, Store, StoreError, now_ms};

both_stores!(
    a_runner_whose_lease_was_taken_over_appends_nothing_more,
    a_heartbeat_that_finds_the_lease_taken_over_stops_the_runner,
    an_append_with_a_stale_epoch_is_refused_and_writes_nothing,
    an_old_store_gains_the_lease_epoch,
);

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The run's journal: each event's number and JSON.
fn journal(w: &World, run: &str) -> Vec<(i64, String)> {
    block_on(async {
        let store = Store::open(&w.store).await.unwrap();
        let events = store.load_after(run, 0).await.unwrap();
        store.close().await;
        events
            .into_iter()
            .map(|r| (r.seq, serde_json::to_string(&r.event).unwrap()))
            .collect()
    })
}

fn lease(w: &World, runbook: &str) -> Option<Lease> {
    block_on(async {
        let store = Store::open(&w.store).await.unwrap();
        let lease = store.lease(runbook).await.unwrap();
        store.close().await;
        lease
    })
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

/// Whether a process is stopped (SIGSTOP): state `T` in `/proc/PID/stat`.
fn stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('T'))
        })
        .unwrap_or(false)
}

/// `runbook execute` of `rb.yaml` as run `run`, stopping itself after event `stop_after`.
fn stalled_runner(w: &World, run: &str, stop_after: i64) -> Spawned {
    let mut runner = Spawned::spawn(
        w.command(&["execute", "rb.yaml", "--yes", "--now", "--run-id", run])
            .env("RUNBOOK_TEST_STOP_AFTER_EVENT", stop_after.to_string()),
    );
    let pid = runner.pid();
    runner.wait_until("the runner to stall", || stopped(pid));
    runner
}

/// `runbook resume RUN` that finds any lease stale (`RUNBOOK_TEST_STALE_AFTER_MS=0`).
fn take_over(w: &World, run: &str) -> Spawned {
    Spawned::spawn(
        w.command(&["resume", run])
            .env("RUNBOOK_TEST_STALE_AFTER_MS", "0"),
    )
}

/// A stalled runner's lease is taken over by `resume`, which finishes the run; the
/// stalled runner, continued, writes nothing and stops, naming who had the lease.
fn a_runner_whose_lease_was_taken_over_appends_nothing_more(w: &World) {
    w.write(
        "rb.yaml",
        "runbook: fence
steps:
  - { id: first, kind: patch, run: { shell: 'echo first >> markers' } }
  - { id: second, kind: patch, run: { shell: 'echo second >> markers' } }
  - { id: third, kind: patch, run: { shell: 'echo third >> markers' } }
",
    );
    // Event 6: `first` succeeded (run_started, its update, checking, started, the
    // step's update, succeeded); `second` is the runner's next step.
    let mut stalled = stalled_runner(w, "f", 6);
    assert_eq!(w.markers(), ["first"]);
    let before = journal(w, "f");
    assert_eq!(before.len(), 6);
    assert!(before[5].1.contains("step_succeeded"), "{before:?}");

    // Not stale yet by the real limit: `resume` refuses.
    let early = w.run(&["resume", "f"]);
    assert_eq!(early.code, 1, "{}", early.stderr);
    assert!(
        early.stderr.contains(&format!(
            "error: run `f` is being run on host {} (pid {})",
            host(),
            stalled.pid()
        )),
        "{}",
        early.stderr
    );

    // Stale at once: `resume` takes the lease over and finishes the run.
    let mut resumer = take_over(w, "f");
    let resumer_pid = resumer.pid();
    let (code, stderr) = resumer.ends();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(w.status_json("f")["status"], "completed");
    let finished = journal(w, "f");
    assert_eq!(finished[..6], before[..]);

    // The stalled runner goes on: its next append is refused, and it stops.
    stalled.signal(libc::SIGCONT);
    let (code, stderr) = stalled.ends();
    assert_eq!(code, Some(4), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "error: lost the lease on runbook `fence` to run `f` on host {} (pid {resumer_pid}), which has given it back since: stopping\n",
            host()
        )
    );
    assert_eq!(journal(w, "f"), finished, "the stalled runner appended");
    assert_eq!(w.markers(), ["first", "second", "third"]);
    // The lease is free: the next run of the runbook starts.
    assert_eq!(lease(w, "fence"), None);
    assert_eq!(w.execute("rb.yaml", "next").code, 0);
}

/// A stalled runner that, continued, has nothing to append (it waits for an approval)
/// learns from its heartbeat that the lease was taken over, and stops at once while the
/// new holder goes on.
fn a_heartbeat_that_finds_the_lease_taken_over_stops_the_runner(w: &World) {
    w.write(
        "rb.yaml",
        "runbook: fence
steps:
  - { id: first, kind: patch, run: { shell: 'echo first >> markers' } }
  - { id: go, kind: approve }
  - { id: second, kind: patch, run: { shell: 'echo second >> markers' } }
",
    );
    // Event 9: `go` asked for approval (checking, started, approval_requested; an
    // approval's start is not announced).
    let mut stalled = stalled_runner(w, "h", 9);
    let mut resumer = take_over(w, "h");
    let resumer_pid = resumer.pid();
    resumer.wait_until("the take-over", || {
        lease(w, "fence").is_some_and(|l| l.pid == resumer_pid as i64 && l.epoch == 2)
    });
    let taken = journal(w, "h");
    assert_eq!(taken.len(), 9);

    stalled.signal(libc::SIGCONT);
    let (code, stderr) = stalled.ends();
    assert_eq!(code, Some(4), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "error: lost the lease on runbook `fence` to run `h` on host {} (pid {resumer_pid}): stopping\n",
            host()
        )
    );
    assert_eq!(journal(w, "h"), taken, "the stalled runner appended");

    // The new holder is still at work: an approval from another process reaches it.
    let ok = w.run(&["approve", "h", "go"]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let (code, stderr) = resumer.ends();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(w.markers(), ["first", "second"]);
    assert_eq!(w.status_json("h")["status"], "completed");
}

fn event(n: usize) -> Event {
    Event::RunAborted {
        by: format!("test {n}"),
        reason: "a journal row".into(),
    }
}

/// At the store: an append through a lease that was taken over (or given back and
/// taken again, even for the same run) is refused and writes nothing; appends that are
/// not a runner's are not checked.
fn an_append_with_a_stale_epoch_is_refused_and_writes_nothing(w: &World) {
    block_on(async {
        let store = Store::open(&w.store).await.unwrap();
        let want = |pid| Lease {
            runbook: "rb".into(),
            run_id: "r".into(),
            host: "h".into(),
            pid,
            heartbeat_ms: now_ms(),
            epoch: 0,
            released: false,
        };
        let first = store.acquire(&want(1), None).await.unwrap().unwrap();
        assert_eq!(first.epoch, 1);
        let stalled = store.holding(&first);
        stalled.append("r", 1, &[event(1)], now_ms()).await.unwrap();

        // Another process takes the lease over.
        let seen = store.lease("rb").await.unwrap().unwrap();
        assert_eq!(seen.epoch, 1);
        // A second runner cannot take a lease that is held.
        assert_eq!(
            store
                .acquire(&want(3), None)
                .await
                .unwrap()
                .unwrap_err()
                .pid,
            1
        );
        let second = store.acquire(&want(2), Some(&seen)).await.unwrap().unwrap();
        assert_eq!(second.epoch, 2);
        // A take-over from an older view of the lease fails.
        assert_eq!(
            store
                .acquire(&want(3), Some(&seen))
                .await
                .unwrap()
                .unwrap_err()
                .pid,
            2
        );

        let refused = stalled
            .append("r", 2, &[event(2), event(3)], now_ms())
            .await;
        match refused {
            Err(StoreError::LeaseLost {
                runbook,
                holder: Some(holder),
            }) => {
                assert_eq!(runbook, "rb");
                assert_eq!((holder.pid, holder.epoch, holder.released), (2, 2, false));
            }
            other => panic!("not refused: {other:?}"),
        }
        assert_eq!(store.load_after("r", 0).await.unwrap().len(), 1);
        assert!(matches!(
            stalled.heartbeat(&first).await,
            Err(StoreError::LeaseLost { .. })
        ));
        store.heartbeat(&second).await.unwrap();

        // The new holder appends; so does anyone not holding a lease (an approval).
        let holder = store.holding(&second);
        holder.append("r", 2, &[event(2)], now_ms()).await.unwrap();
        store.append("r", 3, &[event(3)], now_ms()).await.unwrap();

        // Given back, then taken again for the same run: the count goes on, so the
        // stalled runner's epoch is never good again.
        store.release("rb", "r").await.unwrap();
        assert_eq!(store.lease("rb").await.unwrap(), None);
        let message = stalled
            .append("r", 4, &[event(4)], now_ms())
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "lost the lease on runbook `rb` to run `r` on host h (pid 2), which has given it back since: stopping"
        );
        let third = store.acquire(&want(1), None).await.unwrap().unwrap();
        assert_eq!(third.epoch, 3);
        assert!(matches!(
            stalled.append("r", 4, &[event(4)], now_ms()).await,
            Err(StoreError::LeaseLost { .. })
        ));
        assert_eq!(store.load_after("r", 0).await.unwrap().len(), 3);
        store
            .holding(&third)
            .append("r", 4, &[event(4)], now_ms())
            .await
            .unwrap();
        assert_eq!(store.load_after("r", 0).await.unwrap().len(), 4);
        store.close().await;
    });
}

/// A store made before leases had an epoch (schema version 2) gains the columns when
/// opened, and its lease is kept and can be taken over.
fn an_old_store_gains_the_lease_epoch(w: &World) {
    block_on(async {
        sqlx::any::install_default_drivers();
        let url = match w.store.strip_prefix("sqlite://") {
            Some(path) => {
                std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
                format!("sqlite://{path}?mode=rwc")
            }
            None => w.store.clone(),
        };
        let old = sqlx::AnyPool::connect(&url).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE runbook_schema (version BIGINT NOT NULL);
            INSERT INTO runbook_schema (version) VALUES (1);
            INSERT INTO runbook_schema (version) VALUES (2);
            CREATE TABLE runs (run_id TEXT PRIMARY KEY, runbook TEXT NOT NULL, started_ms BIGINT NOT NULL);
            CREATE TABLE events (run_id TEXT NOT NULL, seq BIGINT NOT NULL, at_ms BIGINT NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (run_id, seq));
            CREATE TABLE leases (runbook TEXT PRIMARY KEY, run_id TEXT NOT NULL, host TEXT NOT NULL, pid BIGINT NOT NULL, heartbeat_ms BIGINT NOT NULL);
            CREATE TABLE notices (id TEXT PRIMARY KEY, runbook TEXT NOT NULL, created_ms BIGINT NOT NULL);
            INSERT INTO leases (runbook, run_id, host, pid, heartbeat_ms) VALUES ('rb', 'old', 'h', 7, 5);",
        )
        .execute(&old)
        .await
        .unwrap();
        old.close().await;

        let store = Store::open(&w.store).await.unwrap();
        let held = store.lease("rb").await.unwrap().unwrap();
        assert_eq!(
            (held.run_id.as_str(), held.pid, held.epoch, held.released),
            ("old", 7, 0, false)
        );
        let new = Lease {
            run_id: "old".into(),
            pid: 8,
            heartbeat_ms: now_ms(),
            ..held.clone()
        };
        let taken = store.acquire(&new, Some(&held)).await.unwrap().unwrap();
        assert_eq!(taken.epoch, 1);
        store.close().await;
        // Opened again: nothing is migrated twice.
        let again = Store::open(&w.store).await.unwrap();
        assert_eq!(again.lease("rb").await.unwrap().unwrap().epoch, 1);
        again.close().await;
    });
}

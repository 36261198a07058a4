//! A `runbook` process a test started: its stderr piped, killed if the test fails while
//! it runs.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A `runbook` process with its stderr piped, killed if the test fails while it runs.
pub struct Spawned(pub Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Spawned {
    pub fn spawn(cmd: &mut std::process::Command) -> Spawned {
        Spawned(
            cmd.stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling a child this test started.
        assert_eq!(unsafe { libc::kill(self.0.id() as i32, signal) }, 0);
    }

    /// Waits until `pred` holds, failing the test if the process ends first or it takes
    /// two minutes.
    pub fn wait_until(&mut self, what: &str, pred: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !pred() {
            if self.0.try_wait().unwrap().is_some() {
                let (code, stderr) = self.ends();
                panic!("waiting for {what}: the process ended ({code:?}): {stderr}");
            }
            assert!(Instant::now() < deadline, "{what} never happened");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to end by itself (within two minutes, else the test fails):
    /// its exit code and stderr.
    pub fn ends(&mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the process did not end");
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = std::io::read_to_string(self.0.stderr.take().unwrap()).unwrap();
        (status.code(), stderr)
    }
}

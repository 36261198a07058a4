//! Real SSH servers for host tests: Debian's `openssh-server`, one `sshd -D` per host on
//! its own loopback address (127.0.0.x) and a free high port, with host and client keys
//! made for the lab and a private known_hosts file. `scripts/test-tools.sh sshd` installs
//! the server when it is missing.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

/// A set of hosts, each its own `sshd`, sharing a client key and a known_hosts file.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub hosts: Vec<LabHost>,
}

pub struct LabHost {
    pub name: String,
    pub address: String,
    pub port: u16,
    child: Child,
}

/// The next loopback address's last byte (2..=250), so that parallel tests do not share.
static NEXT: AtomicU8 = AtomicU8::new(2);

fn ensure_sshd() {
    // Parallel tests install it once: two apt-gets at once fight over dpkg's lock.
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    if Path::new(SSHD).exists() && which("ssh") && which("setsid") {
        return;
    }
    let status = Command::new("bash")
        .arg(super::root().join("scripts/test-tools.sh"))
        .arg("sshd")
        .status()
        .expect("scripts/test-tools.sh runs");
    assert!(
        status.success(),
        "scripts/test-tools.sh sshd failed ({status}): openssh-server is needed"
    );
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "runbook-test", "-f"])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success(), "ssh-keygen {}", path.display());
}

/// A free port on `address`.
fn free_port(address: &str) -> u16 {
    TcpListener::bind((address, 0))
        .expect("a loopback port")
        .local_addr()
        .unwrap()
        .port()
}

impl Lab {
    /// `n` hosts called `h1` … `hN`.
    pub fn new(n: usize) -> Lab {
        ensure_sshd();
        // Privilege separation needs its directory (made by the package's service).
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("client_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        let mut known = String::new();
        let mut hosts = Vec::new();
        for i in 1..=n {
            let name = format!("h{i}");
            let byte = NEXT.fetch_add(1, Ordering::Relaxed);
            let address = format!("127.0.0.{}", 2 + byte % 240);
            let host_key = d.join(format!("{name}_host_key"));
            keygen(&host_key);
            let port = free_port(&address);
            let config = d.join(format!("{name}_sshd_config"));
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress {address}\nHostKey {}\nAuthorizedKeysFile {}\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n\
                     PidFile none\nMaxStartups 200:30:400\nMaxSessions 200\nLogLevel ERROR\n",
                    host_key.display(),
                    d.join("authorized_keys").display()
                ),
            )
            .unwrap();
            let pub_key =
                std::fs::read_to_string(host_key.with_extension("pub")).unwrap_or_else(|_| {
                    std::fs::read_to_string(format!("{}.pub", host_key.display())).unwrap()
                });
            let key: Vec<&str> = pub_key.split_whitespace().take(2).collect();
            known.push_str(&format!("[{address}]:{port} {}\n", key.join(" ")));
            let child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(d.join(format!("{name}_sshd.log"))).unwrap())
                .spawn()
                .expect("sshd starts");
            hosts.push(LabHost {
                name,
                address,
                port,
                child,
            });
        }
        std::fs::write(d.join("known_hosts"), known).unwrap();
        let lab = Lab { dir, hosts };
        for h in &lab.hosts {
            h.wait_listening();
        }
        lab
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The runbook's `hosts:` and `ssh:` sections for the lab's hosts, all in group
    /// `group`.
    pub fn inventory(&self, group: &str) -> String {
        let mut y = format!("hosts:\n  {group}:\n");
        for h in &self.hosts {
            y.push_str(&format!(
                "    - {{ name: {}, address: {}, port: {} }}\n",
                h.name, h.address, h.port
            ));
        }
        y.push_str(&self.ssh_section());
        y
    }

    pub fn ssh_section(&self) -> String {
        format!(
            "ssh:\n  identity_file: {}\n  options: {{ UserKnownHostsFile: {}, GlobalKnownHostsFile: /dev/null }}\n",
            self.path("client_key").display(),
            self.path("known_hosts").display()
        )
    }

    /// The lines a host wrote to `NAME` in the lab (the hosts share this machine's
    /// disk, so each writes under its own name).
    pub fn lines(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.path(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Gives host `i` (0-based) a new host key: the known_hosts entry no longer matches.
    pub fn change_host_key(&mut self, i: usize) {
        let d = self.dir.path().to_path_buf();
        let h = &mut self.hosts[i];
        let _ = h.child.kill();
        let _ = h.child.wait();
        let key = d.join(format!("{}_host_key", h.name));
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(format!("{}.pub", key.display()));
        keygen(&key);
        let config = d.join(format!("{}_sshd_config", h.name));
        h.child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd starts");
        h.wait_listening();
    }
}

impl LabHost {
    fn wait_listening(&self) {
        let addr: SocketAddr = format!("{}:{}", self.address, self.port).parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd of {} did not listen on {addr}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            let _ = h.child.kill();
            let _ = h.child.wait();
        }
    }
}

//! Waking a follower in another process when a SQLite store is written: the kernel
//! (inotify) tells when the database file or its write-ahead log is modified, so the
//! follower neither polls nor learns late. Where inotify cannot watch (too many
//! watches, a file system without it), [`FileWake::new`] fails and the caller polls.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tokio::io::unix::AsyncFd;

/// Wakes when a SQLite database file (or its `-wal` / `-journal`) is written.
pub struct FileWake {
    fd: AsyncFd<OwnedFd>,
    /// The file names in the watched directory that count.
    names: [OsString; 3],
}

impl FileWake {
    /// Watches the directory of `db` for writes to the database's files.
    pub fn new(db: &Path) -> io::Result<FileWake> {
        let dir = match db.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = db
            .file_name()
            .ok_or_else(|| io::Error::other("the store is not a file"))?;
        let with = |suffix: &str| {
            let mut n = name.to_os_string();
            n.push(suffix);
            n
        };
        // SAFETY: inotify_init1 returns a new descriptor or -1.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor this function just opened and owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::other("the store's path holds a NUL byte"))?;
        let mask = libc::IN_MODIFY | libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO | libc::IN_CREATE;
        // SAFETY: a valid inotify descriptor and a NUL-terminated path.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(FileWake {
            // SAFETY: the descriptor is owned by the `AsyncFd` and never closed or
            // replaced while registered.
            fd: unsafe { AsyncFd::register(fd)? },
            names: [name.to_os_string(), with("-wal"), with("-journal")],
        })
    }

    /// Waits until one of the database's files is written (everything the kernel has
    /// queued is read at once: a commit's many writes wake once).
    pub async fn written(&self) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            let mut guard = self.fd.readable().await?;
            let mut hit = false;
            loop {
                // SAFETY: reading into a buffer we own, of the length we pass.
                let n = unsafe {
                    libc::read(
                        self.fd.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                    )
                };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::WouldBlock {
                        guard.clear_ready();
                        break;
                    }
                    return Err(e);
                }
                hit |= self.names_any(&buf[..n as usize]);
            }
            if hit {
                return Ok(());
            }
        }
    }

    /// Whether any event in `events` (a run of `struct inotify_event`) names one of the
    /// database's files.
    fn names_any(&self, mut events: &[u8]) -> bool {
        const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
        let mut hit = false;
        while events.len() >= HEADER {
            // The name's length is the header's last field (after wd, mask, cookie).
            let len = u32::from_ne_bytes(events[12..16].try_into().unwrap_or_default()) as usize;
            let end = (HEADER + len).min(events.len());
            let name = &events[HEADER..end];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            hit |= self
                .names
                .iter()
                .any(|n| n.as_os_str() == OsStr::from_bytes(name));
            events = &events[end..];
        }
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_to_the_database_or_its_log_wakes_and_other_files_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let wake = FileWake::new(&db).unwrap();
        async fn quiet(w: &FileWake) -> bool {
            tokio::time::timeout(std::time::Duration::from_millis(50), w.written())
                .await
                .is_err()
        }
        std::fs::write(dir.path().join("other.txt"), "x").unwrap();
        assert!(quiet(&wake).await, "another file woke it");
        std::fs::write(dir.path().join("state.db-wal"), "x").unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), wake.written())
            .await
            .expect("the log's write wakes it")
            .unwrap();
        assert!(quiet(&wake).await, "one write woke it twice");
        std::fs::write(&db, "y").unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), wake.written())
            .await
            .expect("the database's write wakes it")
            .unwrap();
    }
}

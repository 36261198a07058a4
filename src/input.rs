//! Reading the files a user names (runbooks, the admin token, migrations): regular files
//! only, at most [`MAX_FILE_BYTES`] read, so that `/dev/zero`, a FIFO or a terminal is
//! refused at once instead of filling memory or waiting for ever.

use std::io::{Read as _, Seek as _};
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

/// The most a user-named file may hold; a 10,000-step runbook is ~2 MiB.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Reads the whole of `path`, a regular file of at most [`MAX_FILE_BYTES`] bytes. The
/// limit is on the bytes actually read, not on the size the file system reports. The
/// error says why, naming the file as `path` shows it.
pub fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    let name = path.display();
    let (file, size) = open_regular(path)?;
    if size > MAX_FILE_BYTES {
        return Err(too_big(&name.to_string(), &format!("{size} bytes")));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read `{name}`: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big(&name.to_string(), "more than that"));
    }
    Ok(bytes)
}

/// The last `max` bytes (or fewer) of `path`, a regular file: for the tail of a log that
/// may be larger than anything read whole.
pub fn read_tail(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let (mut file, size) = open_regular(path)?;
    let from = size.saturating_sub(max);
    file.seek(std::io::SeekFrom::Start(from))
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    Ok(bytes)
}

/// Opens `path` for reading when it is a regular file (a symbolic link to one is fine),
/// with its size; anything else is refused without blocking.
fn open_regular(path: &Path) -> Result<(std::fs::File, u64), String> {
    let name = path.display();
    // Non-blocking: opening a FIFO with no writer must not wait; a regular file ignores it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("cannot read `{name}`: no such file"),
            std::io::ErrorKind::PermissionDenied => {
                format!("cannot read `{name}`: permission denied")
            }
            _ => format!("cannot read `{name}`: {e}"),
        })?;
    // The type of what was opened, not of what the name pointed to a moment before.
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read `{name}`: {e}"))?;
    let kind = meta.file_type();
    let what = if kind.is_file() {
        return Ok((file, meta.len()));
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a pipe (FIFO)"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "something other than a file"
    };
    Err(format!(
        "cannot read `{name}`: it is {what}, not a regular file"
    ))
}

fn too_big(name: &str, size: &str) -> String {
    format!(
        "`{name}` is {size}; files are limited to {} MiB",
        MAX_FILE_BYTES / 1024 / 1024
    )
}

/// [`read_limited`] as UTF-8 text.
pub fn read_limited_text(path: &Path) -> Result<String, String> {
    String::from_utf8(read_limited(path)?)
        .map_err(|_| format!("cannot read `{}`: it is not UTF-8 text", path.display()))
}

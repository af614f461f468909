//! Which files the log is: `lifecycle.log`, and its rotations `.1` … `.N`.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::core::error::{Error, Result};

pub(super) fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The rotated files that exist, as (N, path), in no particular order.
pub(super) fn rotated_files(path: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let base = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("lifecycle.log");
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(dir, "list", e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix(base))
            .and_then(|r| r.strip_prefix('.'))
        else {
            continue;
        };
        if let Ok(n) = rest.parse::<u32>() {
            if n > 0 && rest.bytes().all(|b| b.is_ascii_digit()) {
                out.push((n, entry.path()));
            }
        }
    }
    Ok(out)
}

/// The log's files, oldest first: `.N` … `.1`, then the current one (when
/// it exists).
pub fn log_files(path: &Path) -> Result<Vec<PathBuf>> {
    let mut rotated = rotated_files(path)?;
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    Ok(files)
}

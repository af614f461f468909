//! Reading the retained log: every file, oldest first, torn lines skipped.

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind};
use std::path::Path;

use crate::core::error::{Error, Result};
use crate::core::record::Entry;

use super::files::log_files;

/// What reading the whole log found.
#[derive(Debug, Default)]
pub struct ReadStats {
    pub lines: usize,
    /// Torn or unparseable lines, skipped.
    pub skipped: usize,
}

/// Calls `visit` for every whole line of every retained file, oldest first,
/// skipping torn lines. `visit` returns false to stop early.
pub(crate) fn for_each_entry(path: &Path, visit: impl FnMut(Entry) -> bool) -> Result<ReadStats> {
    for_each_matching(path, |_| true, visit)
}

/// Like `for_each_entry`, but lines for which `wanted` (given the raw
/// bytes, see [`holding`](super::holding)) is false are passed over before
/// any other look at them: most lines of a big log are about other peers.
pub(crate) fn for_each_matching(
    path: &Path,
    wanted: impl Fn(&[u8]) -> bool,
    mut visit: impl FnMut(Entry) -> bool,
) -> Result<ReadStats> {
    let mut stats = ReadStats::default();
    for file in log_files(path)? {
        let f = match File::open(&file) {
            Ok(f) => f,
            // Rotated away between listing and opening: its lines now live
            // in the next file, read below.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&file, "open", e)),
        };
        let mut reader = BufReader::with_capacity(256 * 1024, f);
        let mut buf = Vec::with_capacity(512);
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| Error::io(&file, "read", e))?;
            if n == 0 {
                break;
            }
            let whole = buf.last() == Some(&b'\n');
            if whole && !wanted(&buf) {
                continue;
            }
            let text = std::str::from_utf8(&buf).ok().map(str::trim_end);
            match text.filter(|_| whole).and_then(Entry::parse) {
                Some(entry) => {
                    stats.lines += 1;
                    if !visit(entry) {
                        return Ok(stats);
                    }
                }
                None if text.is_some_and(str::is_empty) => {}
                None => stats.skipped += 1,
            }
        }
    }
    Ok(stats)
}

/// Every entry, oldest first.
pub fn read_all(path: &Path) -> Result<(Vec<Entry>, ReadStats)> {
    let mut out = Vec::new();
    let stats = for_each_entry(path, |e| {
        out.push(e);
        true
    })?;
    Ok((out, stats))
}

//! Reading the retained log from its end: the newest line first, back
//! through the rotations, in bounded memory. For a question about the
//! recent past (`why`), whose cost must not grow with the history kept.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::core::error::{Error, Result};
use crate::core::record::Entry;

use super::files::log_files;
use super::ReadStats;

/// Bytes read at a time.
const CHUNK: u64 = 64 * 1024;

/// Calls `visit` for every whole line, newest first, back through every
/// retained file, skipping torn lines and, before any other look at them,
/// those for which `wanted` (given the raw bytes, see [`holding`]) is
/// false. `visit` returns false to stop.
/// The files are opened first, so a rotation meanwhile neither repeats nor
/// skips a line; lines written after the call began are not seen. Counts
/// the lines visited, and the wanted ones passed over as unreadable.
pub(crate) fn for_each_backward(
    path: &Path,
    wanted: impl Fn(&[u8]) -> bool,
    mut visit: impl FnMut(Entry) -> bool,
) -> Result<ReadStats> {
    let mut stats = ReadStats::default();
    let mut files = Vec::new();
    for p in log_files(path)?.into_iter().rev() {
        match File::open(&p) {
            Ok(f) => {
                let len = f.metadata().map_err(|e| Error::io(&p, "inspect", e))?.len();
                files.push((p, f, len));
            }
            // Rotated away between listing and opening: its lines are in
            // a file opened after it, or gone.
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&p, "open", e)),
        }
    }
    for (p, f, len) in files {
        let mut more = true;
        lines_backward(&f, len, |raw| {
            // Most lines are about someone else: passed over before they
            // are checked as text.
            if !wanted(raw) {
                return true;
            }
            let Some(text) = std::str::from_utf8(raw).ok().map(str::trim_end) else {
                stats.skipped += 1;
                return true;
            };
            if text.is_empty() {
                return true;
            }
            match Entry::parse(text) {
                Some(e) => {
                    stats.lines += 1;
                    more = visit(e);
                    more
                }
                None => {
                    stats.skipped += 1;
                    true
                }
            }
        })
        .map_err(|e| Error::io(&p, "read", e))?;
        if !more {
            break;
        }
    }
    Ok(stats)
}

/// A `wanted` for [`for_each_backward`]: the lines holding `needle`, found
/// by a search built once for all of them.
pub(crate) fn holding(needle: &str) -> impl Fn(&[u8]) -> bool + '_ {
    let finder = memchr::memmem::Finder::new(needle);
    move |raw| finder.find(raw).is_some()
}

/// The whole lines of the first `len` bytes of `file`, last first (a last
/// line without its newline is torn, or still being written: skipped).
fn lines_backward(
    file: &File,
    len: u64,
    mut visit: impl FnMut(&[u8]) -> bool,
) -> std::io::Result<()> {
    let mut end = len;
    // The start of the line the later chunks ended in.
    let mut carry: Vec<u8> = Vec::new();
    let mut newest = true;
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let mut buf = vec![0u8; (end - start) as usize];
        file.read_exact_at(&mut buf, start)?;
        buf.extend_from_slice(&carry);
        let mut stop = buf.len();
        for i in memchr::memrchr_iter(b'\n', &buf) {
            let torn = std::mem::take(&mut newest) && stop == buf.len() && i + 1 < stop;
            if !torn && i + 1 < stop && !visit(&buf[i + 1..stop]) {
                return Ok(());
            }
            stop = i;
        }
        if stop < buf.len() {
            newest = false;
        }
        carry = buf[..stop].to_vec();
        end = start;
    }
    if !carry.is_empty() && !newest {
        visit(&carry);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::record::Record;
    use crate::core::vocab::{Ev, Source};
    use crate::store::log::LogWriter;
    use assert_fs::TempDir;

    fn line(i: u64, who: &str) -> Record {
        let mut r = Record::new(1_795_236_254_821, Ev::Reset, Source::Cli).identity(who);
        r.deaths = Some(i);
        r
    }

    fn backward(path: &Path, who: &str) -> Vec<u64> {
        let key = format!("\"identity\":\"{who}\"");
        let mut seen = Vec::new();
        for_each_backward(path, holding(&key), |e| {
            seen.push(e.u64("deaths").unwrap());
            true
        })
        .unwrap();
        seen
    }

    #[test]
    fn every_line_newest_first_across_rotations_and_chunks() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("lifecycle.log");
        // Rotations every ~100 KB: lines cross chunk boundaries.
        let mut w = LogWriter::at(&path, 100_000, 50);
        for i in 0..3000 {
            w.append(&line(i, if i % 3 == 0 { "alice" } else { "bob" }))
                .unwrap();
        }
        let want: Vec<u64> = (0..3000).rev().filter(|i| i % 3 == 0).collect();
        assert_eq!(backward(&path, "alice"), want);
        assert_eq!(backward(&path, "bob").len(), 2000);
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_stopping_stops() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("lifecycle.log");
        let mut w = LogWriter::at(&path, 1 << 20, 5);
        for i in 0..5 {
            w.append(&line(i, "alice")).unwrap();
        }
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(br#"{"ts":"2026-11-21T04:44:14.821Z","ev":"res"#)
            .unwrap();
        assert_eq!(backward(&path, "alice"), vec![4, 3, 2, 1, 0]);
        let mut two = Vec::new();
        for_each_backward(
            &path,
            |_| true,
            |e| {
                two.push(e.u64("deaths").unwrap());
                two.len() < 2
            },
        )
        .unwrap();
        assert_eq!(two, vec![4, 3]);
    }

    #[test]
    fn a_line_that_holds_the_needle_but_is_not_text_is_passed_over_and_counted() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("lifecycle.log");
        let mut w = LogWriter::at(&path, 1 << 20, 5);
        w.append(&line(1, "alice")).unwrap();
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"identity\":\"alice\",\"x\":\"\xff\xfe\"}\n")
            .unwrap();
        f.write_all(b"{\"identity\":\"alice\", not json}\n")
            .unwrap();
        f.write_all(b"{\"identity\":\"bob\",\"x\":\"\xff\"}\n")
            .unwrap();
        drop(f);
        w.append(&line(2, "alice")).unwrap();
        assert_eq!(backward(&path, "alice"), vec![2, 1]);
        // Counted: the lines read, and those wanted but unreadable (bob's
        // is not wanted, so not looked at).
        let stats = for_each_backward(&path, holding("\"alice\""), |_| true).unwrap();
        assert_eq!((stats.lines, stats.skipped), (2, 2));
    }

    #[test]
    fn a_file_without_a_newline_at_all_is_one_torn_line() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("lifecycle.log");
        std::fs::write(&path, br#"{"ts":"2026-11-21T04:44:14.821Z","ev":"reset","identity":"alice","deaths":1,"source":"cli","pid":1}"#).unwrap();
        assert!(backward(&path, "alice").is_empty());
    }
}

//! Following the log as a lossless stream across rotations.

use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::core::record::Entry;

use super::files::{log_files, rotated_files};

/// Where a follower is: a file (by device and inode, which survive the
/// renames of rotation) and a byte offset in it. Printed as `dev:ino:off`
/// (hex), it is the id of a line in the event stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub dev: u64,
    pub ino: u64,
    pub offset: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}:{:x}:{:x}", self.dev, self.ino, self.offset)
    }
}

impl std::str::FromStr for Position {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let mut it = s.split(':').map(|p| u64::from_str_radix(p, 16));
        match (it.next(), it.next(), it.next(), it.next()) {
            (Some(Ok(dev)), Some(Ok(ino)), Some(Ok(offset)), None) => {
                Ok(Position { dev, ino, offset })
            }
            _ => Err(()),
        }
    }
}

/// Tells followers that the log has changed, so they read now rather than
/// at their next look. Whoever watches the log's folder bumps it; a
/// missed bump only delays a follower until its wait times out.
#[derive(Debug, Default)]
pub(crate) struct LogChanges {
    count: Mutex<u64>,
    changed: Condvar,
}

impl LogChanges {
    pub(crate) fn bump(&self) {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.changed.notify_all();
    }

    /// The count now, to wait past.
    pub(crate) fn seen(&self) -> u64 {
        *self.count.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the count moves past `seen`, or `timeout`; true if it
    /// moved.
    pub(crate) fn wait_past(&self, seen: u64, timeout: Duration) -> bool {
        let guard = self.count.lock().unwrap_or_else(|p| p.into_inner());
        let (_guard, waited) = self
            .changed
            .wait_timeout_while(guard, timeout, |n| *n == seen)
            .unwrap_or_else(|p| p.into_inner());
        !waited.timed_out()
    }
}

/// One line read by a follower, with the position just after it.
#[derive(Clone, Debug)]
pub(crate) struct Followed {
    pub entry: Entry,
    /// Resuming here continues after this line.
    pub next: Position,
}

/// Reads the log as a stream, losslessly: it keeps the file it is reading
/// open, and when that file is rotated away it first drains it (writers
/// never append to a rotated file), then walks the newer files in order.
/// A follower that falls behind loses nothing unless more than
/// `IAPEER_LIFECYCLE_LOG_KEEP` rotations pass it by, and then it says so.
#[derive(Debug)]
pub(crate) struct Follower {
    path: PathBuf,
    file: Option<(File, (u64, u64))>,
    offset: u64,
    /// A line not yet finished by its writer.
    partial: Vec<u8>,
    /// Lines lost because the follower fell too far behind, or torn.
    pub gaps: usize,
}

impl Follower {
    /// Starts at the oldest retained line.
    pub(crate) fn from_start(path: &Path) -> Self {
        let mut f = Follower::empty(path);
        if let Ok(files) = log_files(path) {
            if let Some(first) = files.first() {
                f.open_path(first);
            }
        }
        f
    }

    /// Starts after the last line written so far.
    pub(crate) fn at_end(path: &Path) -> Self {
        let mut f = Follower::empty(path);
        if f.open_path(path) {
            if let Some((file, _)) = &f.file {
                f.offset = file.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        f
    }

    /// Starts at the last `n` whole lines, back through the rotations if
    /// the current file holds fewer. Reads only what it skips back over,
    /// from the end, so its cost is that of the `n` lines, however much
    /// log is retained.
    pub(crate) fn before_last(path: &Path, n: usize) -> Self {
        let mut f = Follower::empty(path);
        let mut left = n;
        for p in log_files(path).unwrap_or_default().into_iter().rev() {
            let Ok(file) = File::open(&p) else { continue };
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            match start_of_last(&file, len, left) {
                Ok(Ok(offset)) => {
                    if f.open_path(&p) {
                        f.offset = offset;
                    }
                    return f;
                }
                Ok(Err(found)) => left -= found,
                Err(_) => break,
            }
        }
        Follower::from_start(path)
    }

    /// Resumes at `pos`; if that file is gone (rotated past the kept
    /// ones), starts at the oldest retained line and counts a gap.
    pub(crate) fn at(path: &Path, pos: Position) -> Self {
        let mut f = Follower::empty(path);
        let mut candidates = log_files(path).unwrap_or_default();
        candidates.reverse();
        for p in candidates {
            if let Ok(meta) = fs::metadata(&p) {
                if (meta.dev(), meta.ino()) == (pos.dev, pos.ino) {
                    f.open_path(&p);
                    f.offset = pos.offset.min(meta.len());
                    return f;
                }
            }
        }
        let mut f = Follower::from_start(path);
        f.gaps += 1;
        f
    }

    /// Where the next line will be read from: after every whole line
    /// returned so far.
    pub(crate) fn position(&self) -> Option<Position> {
        let (_, (dev, ino)) = self.file.as_ref()?;
        Some(Position {
            dev: *dev,
            ino: *ino,
            offset: self.offset - self.partial.len() as u64,
        })
    }

    fn empty(path: &Path) -> Self {
        Follower {
            path: path.to_path_buf(),
            file: None,
            offset: 0,
            partial: Vec::new(),
            gaps: 0,
        }
    }

    fn open_path(&mut self, p: &Path) -> bool {
        match File::open(p).and_then(|f| f.metadata().map(|m| (f, (m.dev(), m.ino())))) {
            Ok(opened) => {
                self.file = Some(opened);
                self.offset = 0;
                self.partial.clear();
                true
            }
            Err(_) => false,
        }
    }

    /// Every whole line written since the last call, oldest first.
    pub(crate) fn poll(&mut self) -> Vec<Followed> {
        self.poll_at_most(usize::MAX)
    }

    /// Like [`Follower::poll`], at most `max` lines: call again for the
    /// rest. Memory stays bounded however far behind the follower is.
    pub(crate) fn poll_at_most(&mut self, max: usize) -> Vec<Followed> {
        let mut out = Vec::new();
        for _ in 0..10_000 {
            if self.file.is_none() && !self.open_path(&self.path.clone()) {
                return out;
            }
            self.drain(&mut out, max);
            if out.len() >= max {
                return out;
            }
            let (_, id) = self.file.as_ref().expect("opened above");
            let id = *id;
            let current = fs::metadata(&self.path).ok().map(|m| (m.dev(), m.ino()));
            if current == Some(id) {
                return out;
            }
            // Our file was rotated away (or the log was removed). Anything
            // written to it before the rotation is there now: drain again,
            // then move to the file written after it.
            self.drain(&mut out, max);
            if out.len() >= max {
                return out;
            }
            if !self.partial.is_empty() {
                // A torn last line: its writer died mid-line.
                self.partial.clear();
                self.gaps += 1;
            }
            match self.successor(id) {
                Some(next) => {
                    if !self.open_path(&next) {
                        return out;
                    }
                }
                None => {
                    if current.is_none() {
                        // No current log yet: wait for the next writer.
                        self.file = None;
                    }
                    return out;
                }
            }
        }
        out
    }

    /// The file written right after the one with `id`: `.k-1` if it is
    /// `.k` now, the current log if it is `.1`. If it is no longer among
    /// the kept files, the oldest kept one (and the files between are lost).
    fn successor(&mut self, id: (u64, u64)) -> Option<PathBuf> {
        let mut rotated = rotated_files(&self.path).ok()?;
        rotated.sort_by_key(|r| r.0);
        let index = rotated.iter().find_map(|(n, p)| {
            fs::metadata(p)
                .ok()
                .filter(|m| (m.dev(), m.ino()) == id)
                .map(|_| *n)
        });
        match index {
            Some(1) => Some(self.path.clone()),
            Some(k) => rotated
                .iter()
                .find(|(n, _)| *n == k - 1)
                .map(|(_, p)| p.clone()),
            None => {
                self.gaps += 1;
                rotated
                    .last()
                    .map(|(_, p)| p.clone())
                    .or_else(|| Some(self.path.clone()))
            }
        }
    }

    /// Reads whole lines into `out` until the end of the file or until it
    /// holds `max`, leaving the offset right after the last line taken.
    fn drain(&mut self, out: &mut Vec<Followed>, max: usize) {
        let Some((file, (dev, ino))) = &self.file else {
            return;
        };
        let (dev, ino) = (*dev, *ino);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match file.read_at(&mut buf, self.offset) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            self.offset += n as u64;
            let mut start = 0;
            for i in memchr::memchr_iter(b'\n', &buf[..n]) {
                self.partial.extend_from_slice(&buf[start..i]);
                start = i + 1;
                let line = std::mem::take(&mut self.partial);
                let next = Position {
                    dev,
                    ino,
                    offset: self.offset - (n - start) as u64,
                };
                match std::str::from_utf8(&line)
                    .ok()
                    .and_then(|t| Entry::parse(t.trim_end()))
                {
                    Some(entry) => out.push(Followed { entry, next }),
                    None if line.iter().all(u8::is_ascii_whitespace) => {}
                    None => self.gaps += 1,
                }
                if out.len() >= max {
                    // The rest of this read is read again next time.
                    self.offset = next.offset;
                    return;
                }
            }
            self.partial.extend_from_slice(&buf[start..n]);
        }
    }
}

/// Where the last `n` whole lines of the first `len` bytes of `file`
/// begin: `Ok(offset)`, or `Err(lines)` when the file holds only `lines`
/// (< `n`) of them. A last line without its newline is not counted.
fn start_of_last(file: &File, len: u64, n: usize) -> std::io::Result<Result<u64, usize>> {
    if n == 0 {
        return Ok(Ok(len));
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut end = len;
    // Newlines seen so far; the first one found ends the last whole line.
    let mut newlines = 0;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        for i in memchr::memrchr_iter(b'\n', chunk) {
            newlines += 1;
            if newlines == n + 1 {
                return Ok(Ok(start + i as u64 + 1));
            }
        }
        end = start;
    }
    if newlines == n {
        Ok(Ok(0))
    } else {
        Ok(Err(newlines))
    }
}

#[cfg(test)]
mod follow_tests {
    use super::*;
    use crate::core::record::Record;
    use crate::core::vocab::{Ev, Source};
    use crate::store::log::LogWriter;
    use assert_fs::TempDir;
    use std::fs::OpenOptions;
    use std::io::Write;

    fn line(i: u64) -> Record {
        let mut r = Record::new(1_795_236_254_821, Ev::Reset, Source::Cli).identity("alice");
        r.deaths = Some(i);
        r
    }

    fn seqs(v: &[Followed]) -> Vec<u64> {
        v.iter().map(|f| f.entry.u64("deaths").unwrap()).collect()
    }

    #[test]
    fn before_last_starts_n_lines_back_through_the_rotations() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("lifecycle.log");
        let mut w = LogWriter::at(&path, 500, 50);
        for i in 0..100 {
            w.append(&line(i)).unwrap();
        }
        assert!(rotated_files(&path).unwrap().len() > 3, "it rotated");
        for n in [0, 1, 2, 7, 40, 99, 100, 500] {
            let got = seqs(&Follower::before_last(&path, n).poll());
            let want: Vec<u64> = (100u64.saturating_sub(n as u64)..100).collect();
            assert_eq!(got, want, "the last {n}");
        }
        // A line still being written is not one of them, and comes later.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"ts\":\"2026")
            .unwrap();
        assert_eq!(seqs(&Follower::before_last(&path, 2).poll()), [98, 99]);
    }

    #[test]
    fn follows_across_rotations_without_loss_or_duplicates() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("lifecycle.log");
        let mut w = LogWriter::at(&path, 500, 50);
        let mut follower = Follower::from_start(&path);
        let mut seen = Vec::new();
        for i in 0..200 {
            w.append(&line(i)).unwrap();
            // Fall behind now and then, over several rotations.
            if i % 37 == 0 {
                seen.extend(seqs(&follower.poll()));
            }
        }
        seen.extend(seqs(&follower.poll()));
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
        assert_eq!(follower.gaps, 0);
        assert!(follower.poll().is_empty());
    }

    #[test]
    fn batches_take_every_line_once_across_rotations() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("lifecycle.log");
        // Lines of about 100 bytes: a rotation every few.
        let mut w = LogWriter::at(&path, 700, 50);
        for i in 0..120 {
            w.append(&line(i)).unwrap();
        }
        let mut follower = Follower::from_start(&path);
        let mut seen = Vec::new();
        loop {
            let batch = follower.poll_at_most(7);
            assert!(batch.len() <= 7);
            if batch.is_empty() {
                break;
            }
            seen.extend(seqs(&batch));
        }
        assert_eq!(seen, (0..120).collect::<Vec<_>>());
        assert_eq!(follower.gaps, 0);
    }

    #[test]
    fn positions_resume_exactly_after_a_line() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("lifecycle.log");
        let mut w = LogWriter::at(&path, 400, 50);
        for i in 0..10 {
            w.append(&line(i)).unwrap();
        }
        let mut f = Follower::from_start(&path);
        let got = f.poll();
        let resume = got[4].next;
        assert_eq!(resume.to_string().parse::<Position>(), Ok(resume));
        for i in 10..30 {
            w.append(&line(i)).unwrap();
        }
        let mut again = Follower::at(&path, resume);
        assert_eq!(seqs(&again.poll()), (5..30).collect::<Vec<_>>());
        assert_eq!(again.gaps, 0);
    }

    #[test]
    fn a_follower_left_behind_past_the_kept_files_reports_a_gap() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("lifecycle.log");
        let mut w = LogWriter::at(&path, 300, 2);
        w.append(&line(0)).unwrap();
        let mut f = Follower::from_start(&path);
        assert_eq!(seqs(&f.poll()), [0]);
        for i in 1..50 {
            w.append(&line(i)).unwrap();
        }
        let got = seqs(&f.poll());
        assert!(f.gaps > 0);
        assert_eq!(*got.last().unwrap(), 49);
    }

    #[test]
    fn a_line_being_written_waits_until_it_is_whole() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("lifecycle.log");
        let text = line(7).to_line();
        fs::write(&path, &text[..10]).unwrap();
        let mut f = Follower::from_start(&path);
        assert!(f.poll().is_empty());
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        Write::write_all(&mut file, format!("{}\n", &text[10..]).as_bytes()).unwrap();
        assert_eq!(seqs(&f.poll()), [7]);
    }
}

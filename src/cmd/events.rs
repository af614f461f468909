//! `iapeer events`: the decision log as a stream of JSON lines, lossless
//! across rotation (a consumer that falls behind reads on from its place
//! in the files, unlike a broadcast that drops slow subscribers).

use std::io::Write;
use std::time::Duration;

use crate::cli::EventsArgs;
use crate::cmd::App;
use crate::core::error::Result;
use crate::core::record::Entry;
use crate::store::log::Follower;

/// How often a follower looks for new lines.
const POLL: Duration = Duration::from_millis(50);

pub(crate) fn run(app: &App, args: EventsArgs) -> Result<i32> {
    let path = &app.config.paths.lifecycle_log;
    let now = crate::core::clock::now_ms();
    let since = args
        .since
        .as_deref()
        .map(|s| super::when("--since", s, now))
        .transpose()?;
    let mut follower = if args.follow && !args.from_start && since.is_none() {
        Follower::at_end(path)
    } else {
        Follower::from_start(path)
    };
    let print = |e: &Entry| {
        if since.is_some_and(|s| e.ts_ms().is_none_or(|t| t < s)) {
            return Some(String::new());
        }
        Some(e.line.clone())
    };
    if args.follow {
        stream(&mut follower, print);
    } else {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for f in follower.poll() {
            if let Some(text) = print(&f.entry).filter(|t| !t.is_empty()) {
                if writeln!(out, "{text}").is_err() {
                    return Ok(0);
                }
            }
        }
        out.flush().ok();
    }
    if follower.gaps > 0 {
        tracing::warn!(
            "{} line(s) could not be read (torn, or rotated away before they were read)",
            follower.gaps
        );
    }
    Ok(0)
}

/// Prints what `render` makes of each new line (empty: skip; `None`:
/// stop), forever, until stdout goes away.
pub(crate) fn stream(follower: &mut Follower, mut render: impl FnMut(&Entry) -> Option<String>) {
    let stdout = std::io::stdout();
    let mut gaps = follower.gaps;
    loop {
        let batch = follower.poll();
        if !batch.is_empty() {
            let mut out = stdout.lock();
            for f in &batch {
                match render(&f.entry) {
                    None => return,
                    Some(t) if t.is_empty() => {}
                    Some(t) => {
                        if writeln!(out, "{t}").is_err() {
                            return;
                        }
                    }
                }
            }
            if out.flush().is_err() {
                return;
            }
        }
        if follower.gaps > gaps {
            eprintln!(
                "iapeer: {} line(s) lost: this reader fell behind more rotations than are kept",
                follower.gaps - gaps
            );
            gaps = follower.gaps;
        }
        std::thread::sleep(POLL);
    }
}

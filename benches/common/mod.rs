//! What the benchmarks share: a made-up history of decisions.

use std::io::Write;
use std::path::Path;

/// Writes `log` as a long history leaves it, at least `mb` MB in one file:
/// each of `peers` peers (`p0` …) added, then sessions round the fleet,
/// each launched, ready and dead. Returns the lines written.
pub fn write_history(log: &Path, peers: usize, mb: u64) -> u64 {
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let mut out = std::io::BufWriter::new(std::fs::File::create(log).unwrap());
    let ts = "2026-11-30T08:00:00.000Z";
    let written = std::cell::Cell::new(0u64);
    let mut put = |line: String| {
        out.write_all(line.as_bytes()).unwrap();
        out.write_all(b"\n").unwrap();
        written.set(written.get() + line.len() as u64 + 1);
    };
    for p in 0..peers {
        put(format!(
            r#"{{"ts":"{ts}","ev":"start","identity":"p{p}","outcome":"added","source":"cli","pid":1}}"#
        ));
    }
    // Then sessions, round the fleet: each launched, ready, and dead.
    let mut i = 0u64;
    while written.get() < mb * 1_000_000 {
        let p = i % peers as u64;
        put(format!(
            r#"{{"ts":"{ts}","ev":"wake","identity":"p{p}","runtime":"shell","mode":"fresh","cause":"crash-or-self-close","session":"s-{i}","source":"cli","pid":2}}"#
        ));
        put(format!(
            r#"{{"ts":"{ts}","ev":"ready","identity":"p{p}","runtime":"shell","mode":"fresh","cause":"crash-or-self-close","session":"s-{i}","latency_ms":20,"source":"cli","pid":2}}"#
        ));
        put(format!(
            r#"{{"ts":"{ts}","ev":"supervise","identity":"p{p}","action":"reaped-gone","outcome":"fresh-on-next-message","session":"s-{i}","exit_status":"1","source":"daemon","pid":3}}"#
        ));
        i += 1;
    }
    out.flush().unwrap();
    i * 3 + peers as u64
}

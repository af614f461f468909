//! `make bench`: figures for the core. A benchmark prints; it asserts
//! nothing.

use std::hint::black_box;
use std::time::{Duration, Instant};

use iapeer::core::crash_ring::{CrashRing, Policy};
use iapeer::core::record::Record;
use iapeer::core::vocab::{Ev, Source};
use iapeer::core::wake_mode::{resolve_wake_mode, Facts, Request};
use iapeer::store::log::LogWriter;

fn main() {
    let dir = assert_fs::TempDir::new().expect("temp dir");
    durable_appends(dir.path());
    decisions();
    guard();
}

fn durable_appends(dir: &std::path::Path) {
    let mut w = LogWriter::at(&dir.join("lifecycle.log"), 5 * 1024 * 1024, 5);
    let record = Record::new(iapeer::core::clock::now_ms(), Ev::Wake, Source::Cli)
        .identity("alice")
        .runtime("claude")
        .mode(iapeer::core::vocab::Mode::Fresh)
        .cause(iapeer::core::vocab::Cause::CrashOrSelfClose);
    for _ in 0..50 {
        w.append(&record).expect("append");
    }
    let n = 2000;
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        w.append(&record).expect("append");
        lat.push(t.elapsed());
    }
    let total = start.elapsed();
    lat.sort();
    println!(
        "lifecycle.log durable appends (1 writer, fdatasync per line): {:.0}/s  (median {}, p99 {}, n={n})",
        n as f64 / total.as_secs_f64(),
        us(lat[n / 2]),
        us(lat[n * 99 / 100]),
    );
}

fn decisions() {
    let topics = [Some("a"), Some("b"), None];
    let n: u64 = 20_000_000;
    let start = Instant::now();
    let mut fresh = 0u64;
    for i in 0..n {
        let f = Facts {
            request: if i % 7 == 0 {
                Request::Fresh
            } else {
                Request::Message
            },
            idle_reaped: i & 1 == 0,
            new_eager: i % 13 == 0,
            stored_topic: topics[(i % 3) as usize],
            incoming_topic: topics[((i / 3) % 3) as usize],
            conversational: i & 4 == 0,
            can_resume: i & 8 == 0,
            fresh_next: i % 17 == 0,
            had_session: i & 16 == 0,
        };
        let d = resolve_wake_mode(black_box(&f));
        fresh += u64::from(d.mode == iapeer::core::vocab::Mode::Fresh);
    }
    let total = start.elapsed();
    black_box(fresh);
    println!(
        "resolve_wake_mode: {:.1} M decisions/s ({:.1} ns each, n={n})",
        n as f64 / total.as_secs_f64() / 1e6,
        total.as_nanos() as f64 / n as f64
    );
}

fn guard() {
    let mut ring = CrashRing::default();
    let now = 1_800_000_000_000;
    for i in 0..16 {
        ring.record(now - i * 10_000, now);
    }
    let policy = Policy {
        max: 3,
        window_ms: 300_000,
    };
    let n: i64 = 5_000_000;
    let start = Instant::now();
    for i in 0..n {
        black_box(black_box(&ring).guard(now + i, policy));
    }
    let total = start.elapsed();
    println!(
        "crash-loop guard over a full ring: {:.1} M checks/s",
        n as f64 / total.as_secs_f64() / 1e6
    );
}

fn us(d: Duration) -> String {
    format!("{:.0}µs", d.as_secs_f64() * 1e6)
}

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

/// Lines per round, split between the writers.
const LINES: usize = 3200;
/// Rounds per writer count, floor and ours interleaved.
const ROUNDS: usize = 5;

/// Durable appends from 1, 4 and 16 writers at once (each its own open
/// file, as separate processes have), against the floor measured in the
/// same run: plain `O_APPEND` writes, each followed by `fdatasync`, with
/// no lock and no rotation. Rounds alternate floor and ours.
fn durable_appends(dir: &std::path::Path) {
    let record = Record::new(iapeer::core::clock::now_ms(), Ev::Wake, Source::Cli)
        .identity("alice")
        .runtime("claude")
        .mode(iapeer::core::vocab::Mode::Fresh)
        .cause(iapeer::core::vocab::Cause::CrashOrSelfClose);
    let line = record.to_line();
    println!("lifecycle.log durable appends ({LINES} lines per round, {ROUNDS} rounds, floor and ours interleaved):");
    for writers in [1, 4, 16] {
        let mut ratios = Vec::new();
        let mut ours_lat: Vec<Duration> = Vec::new();
        let mut floor_rate = Vec::new();
        let mut ours_rate = Vec::new();
        for round in 0..ROUNDS {
            let floor_path = dir.join(format!("floor-{writers}-{round}.log"));
            let (rate_f, _) = run_writers(writers, |_| {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&floor_path)
                    .expect("open");
                let bytes = format!("{line}\n");
                move || {
                    use std::io::Write;
                    (&f).write_all(bytes.as_bytes()).expect("write");
                    f.sync_data().expect("sync");
                }
            });
            let ours_path = dir.join(format!("ours-{writers}-{round}.log"));
            let (rate_o, lat) = run_writers(writers, |_| {
                let mut w = LogWriter::at(&ours_path, 5 * 1024 * 1024, 5);
                let record = record.clone();
                move || w.append(&record).expect("append")
            });
            floor_rate.push(rate_f);
            ours_rate.push(rate_o);
            ratios.push(rate_o / rate_f);
            ours_lat.extend(lat);
        }
        ours_lat.sort();
        let q = |p: f64| ours_lat[((ours_lat.len() - 1) as f64 * p) as usize];
        println!(
            "  {writers:>2} writer(s): {} lines/s vs floor {} lines/s: {} of the floor (target >= 0.9x at 16); \
             line p50 {} p99.9 {} worst {} (targets at 16: p99.9 <= 20ms, worst <= 50ms)",
            spread(&ours_rate, |r| format!("{r:.0}")),
            spread(&floor_rate, |r| format!("{r:.0}")),
            spread(&ratios, |r| format!("{r:.2}x")),
            us(q(0.5)),
            us(q(0.999)),
            us(*ours_lat.last().unwrap()),
        );
    }
}

/// Runs `writers` threads, each with what `make` gives it, appending
/// `LINES / writers` lines; lines per second over all, and every line's
/// latency.
fn run_writers<F, A>(writers: usize, make: F) -> (f64, Vec<Duration>)
where
    F: Fn(usize) -> A,
    A: FnMut() + Send + 'static,
{
    let per = LINES / writers;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(writers + 1));
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let mut append = make(w);
            let barrier = std::sync::Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(per);
                barrier.wait();
                for _ in 0..per {
                    let t = Instant::now();
                    append();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let lat: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("writer"))
        .collect();
    ((per * writers) as f64 / start.elapsed().as_secs_f64(), lat)
}

/// `min / median / max` of `xs`, each shown by `show`.
fn spread(xs: &[f64], show: impl Fn(f64) -> String) -> String {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    format!(
        "{}/{}/{}",
        show(v[0]),
        show(v[v.len() / 2]),
        show(v[v.len() - 1])
    )
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

//! The crash-loop ring (DESIGN §5): the last deaths of one identity as epoch
//! milliseconds, and the maths that decide whether another launch is allowed.
//! Pure: `now` is always passed in.
//!
//! The wall clock can jump. An entry later than `now` (the clock went back,
//! or the file was edited) counts as a death that happened `now`; writers
//! clamp such entries to `now`, so after a backwards jump the guard holds for
//! one window, not for as long as the jump.

/// At most this many deaths are kept (DESIGN §2).
pub const CAPACITY: usize = 16;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrashRing {
    /// Epoch ms, oldest first, at most `CAPACITY`.
    deaths: Vec<i64>,
}

/// The guard's settings: `max` deaths inside `window_ms` refuse a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub max: u32,
    pub window_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    Allow,
    /// Refused: `counted` deaths are in the window; a launch is allowed again
    /// at `retry_after_ms` if no other death happens.
    Refuse {
        counted: usize,
        retry_after_ms: i64,
    },
}

impl CrashRing {
    /// Builds a ring from entries as read from disk, in any order; keeps the
    /// newest `CAPACITY`.
    pub fn from_entries(mut deaths: Vec<i64>) -> Self {
        deaths.sort_unstable();
        let excess = deaths.len().saturating_sub(CAPACITY);
        deaths.drain(..excess);
        CrashRing { deaths }
    }

    pub fn entries(&self) -> &[i64] {
        &self.deaths
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.deaths.is_empty()
    }

    pub fn contains(&self, at_ms: i64) -> bool {
        self.deaths.contains(&at_ms)
    }

    /// Records a death at `at_ms` (normally now).
    pub fn record(&mut self, at_ms: i64, now: i64) {
        self.clamp_future(now);
        self.deaths.push(at_ms.min(now));
        self.deaths.sort_unstable();
        let excess = self.deaths.len().saturating_sub(CAPACITY);
        self.deaths.drain(..excess);
    }

    /// How many deaths lie inside the window ending at `now`.
    pub fn count_in_window(&self, now: i64, window_ms: i64) -> usize {
        self.deaths
            .iter()
            .filter(|&&d| in_window(d, now, window_ms))
            .count()
    }

    /// Drops the deaths that left the window (done after a successful wake).
    pub fn trim(&mut self, now: i64, window_ms: i64) {
        self.clamp_future(now);
        self.deaths.retain(|&d| in_window(d, now, window_ms));
    }

    /// Whether a launch may go ahead now.
    pub fn guard(&self, now: i64, policy: Policy) -> Guard {
        let mut counted: Vec<i64> = self
            .deaths
            .iter()
            .map(|&d| d.min(now))
            .filter(|&d| in_window(d, now, policy.window_ms))
            .collect();
        let max = policy.max.max(1) as usize;
        if counted.len() < max {
            return Guard::Allow;
        }
        counted.sort_unstable();
        // The guard lifts when fewer than `max` remain, i.e. once the
        // (len - max)th oldest counted death has left the window. With
        // exactly `max` deaths that is the oldest one.
        let pivot = counted[counted.len() - max];
        Guard::Refuse {
            counted: counted.len(),
            retry_after_ms: pivot.saturating_add(policy.window_ms),
        }
    }

    /// Rewrites deaths later than `now` as `now`; true if any was. Callers
    /// persist the result, so a `retry_after` they report stays true.
    pub fn clamp_future(&mut self, now: i64) -> bool {
        let mut changed = false;
        for d in &mut self.deaths {
            if *d > now {
                *d = now;
                changed = true;
            }
        }
        self.deaths.sort_unstable();
        changed
    }
}

fn in_window(death: i64, now: i64, window_ms: i64) -> bool {
    now.saturating_sub(death.min(now)) < window_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIN: i64 = 60_000;
    const POLICY: Policy = Policy {
        max: 3,
        window_ms: 5 * MIN,
    };

    #[test]
    fn three_deaths_in_five_minutes_refuse_until_the_oldest_leaves() {
        let t0 = 1_000_000_000_000;
        let mut ring = CrashRing::default();
        ring.record(t0, t0);
        ring.record(t0 + MIN, t0 + MIN);
        assert_eq!(ring.guard(t0 + MIN, POLICY), Guard::Allow);
        ring.record(t0 + 2 * MIN, t0 + 2 * MIN);
        assert_eq!(
            ring.guard(t0 + 2 * MIN, POLICY),
            Guard::Refuse {
                counted: 3,
                retry_after_ms: t0 + 5 * MIN
            }
        );
        assert_eq!(ring.guard(t0 + 5 * MIN, POLICY), Guard::Allow);
    }

    #[test]
    fn more_deaths_than_max_wait_for_enough_to_leave() {
        let t0 = 1_000_000_000_000;
        let ring = CrashRing::from_entries(vec![t0, t0 + 1, t0 + 2, t0 + 3, t0 + 4]);
        let Guard::Refuse { retry_after_ms, .. } = ring.guard(t0 + 10, POLICY) else {
            panic!("five deaths must refuse");
        };
        assert_eq!(retry_after_ms, t0 + 2 + POLICY.window_ms);
        assert_eq!(ring.guard(retry_after_ms, POLICY), Guard::Allow);
        assert!(matches!(
            ring.guard(retry_after_ms - 1, POLICY),
            Guard::Refuse { .. }
        ));
    }

    #[test]
    fn future_entries_count_as_now_and_are_clamped_on_write() {
        let now = 1_000_000_000_000;
        let day = 24 * 60 * MIN;
        let mut ring = CrashRing::from_entries(vec![now + day, now + day + 1, now + day + 2]);
        assert_eq!(ring.count_in_window(now, POLICY.window_ms), 3);
        assert_eq!(
            ring.guard(now, POLICY),
            Guard::Refuse {
                counted: 3,
                retry_after_ms: now + POLICY.window_ms
            }
        );
        ring.trim(now, POLICY.window_ms);
        assert_eq!(ring.entries(), &[now, now, now]);
        // A window later the guard lifts, not a day later.
        assert_eq!(ring.guard(now + POLICY.window_ms, POLICY), Guard::Allow);
    }

    #[test]
    fn negative_and_ancient_entries_are_outside_the_window() {
        let ring = CrashRing::from_entries(vec![i64::MIN, -5, 0]);
        assert_eq!(ring.count_in_window(1_000_000, POLICY.window_ms), 0);
        assert_eq!(ring.guard(1_000_000, POLICY), Guard::Allow);
    }

    #[test]
    fn keeps_the_newest_sixteen() {
        let ring = CrashRing::from_entries((0..40).collect());
        assert_eq!(ring.entries().len(), CAPACITY);
        assert_eq!(ring.entries()[0], 24);
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// The clock moves by this many ms (negative: a backwards jump).
        Tick(i64),
        Death,
        Trim,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (-3 * MIN..10 * MIN).prop_map(Op::Tick),
            1 => (-48 * 60 * MIN..48 * 60 * MIN).prop_map(Op::Tick),
            4 => Just(Op::Death),
            1 => Just(Op::Trim),
        ]
    }

    proptest! {
        #[test]
        fn ring_invariants_hold_under_any_clock(
            ops in prop::collection::vec(op(), 1..200),
            max in 1u32..6,
            window_min in 0i64..20,
        ) {
            let policy = Policy { max, window_ms: window_min * MIN };
            let mut now: i64 = 1_700_000_000_000;
            let mut ring = CrashRing::default();
            for op in ops {
                match op {
                    Op::Tick(d) => now += d,
                    Op::Death => ring.record(now, now),
                    Op::Trim => ring.trim(now, policy.window_ms),
                }
                let e = ring.entries();
                prop_assert!(e.len() <= CAPACITY);
                prop_assert!(e.windows(2).all(|w| w[0] <= w[1]), "sorted: {e:?}");
                let counted = ring.count_in_window(now, policy.window_ms);
                prop_assert!(counted <= e.len());
                // Callers clamp (and persist) before they trust retry_after.
                let mut ring = ring.clone();
                ring.clamp_future(now);
                prop_assert_eq!(ring.count_in_window(now, policy.window_ms), counted);
                match ring.guard(now, policy) {
                    Guard::Allow => prop_assert!(counted < max as usize),
                    Guard::Refuse { counted: c, retry_after_ms } => {
                        prop_assert_eq!(c, counted);
                        prop_assert!(c >= max as usize);
                        prop_assert!(retry_after_ms > now, "retry_after in the past");
                        prop_assert!(retry_after_ms <= now + policy.window_ms);
                        // Without new deaths, the guard lifts exactly then.
                        prop_assert_eq!(ring.guard(retry_after_ms, policy), Guard::Allow);
                        let before = ring.guard(retry_after_ms - 1, policy);
                        prop_assert_ne!(before, Guard::Allow);
                    }
                }
                // After a trim nothing outside the window and nothing in the
                // future remains.
                let mut trimmed = ring.clone();
                trimmed.trim(now, policy.window_ms);
                prop_assert_eq!(trimmed.entries().len(), counted);
                prop_assert!(trimmed.entries().iter().all(|&d| d <= now));
            }
        }

        #[test]
        fn reading_any_entries_gives_a_bounded_sorted_ring(
            raw in prop::collection::vec(any::<i64>(), 0..100),
            now in any::<i64>(),
        ) {
            let ring = CrashRing::from_entries(raw);
            prop_assert!(ring.entries().len() <= CAPACITY);
            prop_assert!(ring.entries().windows(2).all(|w| w[0] <= w[1]));
            // Never panics, never overflows.
            let _ = ring.guard(now, Policy { max: 3, window_ms: i64::MAX });
            let _ = ring.count_in_window(now, 300_000);
        }
    }
}

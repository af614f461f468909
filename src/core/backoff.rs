//! Relaunch back-off and give-up (DESIGN §5), pure.
//!
//! Automatic relaunches (`always` peers, eager relaunches) after deaths in
//! a row wait longer each time: the n-th waits `min(max, base × 2^(n-1))`.
//! A session that stays up for `reset` ends the streak. When the crash-loop
//! guard has refused `give_up_after` windows in a row, iapeer gives up on
//! the peer until an operator resets or starts it. The back-off itself
//! spreads deaths thinner than the guard's window (at the default maximum
//! of one relaunch per 300 s, the guard never sees three deaths in 300 s
//! again), so a streak of `give_up_after` windows' worth of deaths
//! (`give_up_after × IAPEER_CRASHLOOP_MAX`) with no healthy run between
//! counts the same as that many refusals.
//!
//! Times are epoch ms passed in; a death "in the future" (the wall clock
//! went back) counts as now, so a jump never stretches a wait beyond
//! `max`.

use crate::core::clock::EpochMs;

/// The back-off settings (`IAPEER_BACKOFF_*`, `IAPEER_GIVE_UP_AFTER`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub base_ms: i64,
    pub max_ms: i64,
    pub reset_ms: i64,
    pub give_up_after: u32,
    /// The crash-loop guard's `IAPEER_CRASHLOOP_MAX`: one window's worth.
    pub crashloop_max: u32,
}

/// One identity's streak of trouble since its last healthy run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Streak {
    /// Deaths in a row (a session that stayed up for `reset` ends a row).
    pub deaths: u32,
    /// When the last of them happened.
    pub last_death_ms: Option<EpochMs>,
    /// Crash-loop refusals in a row, counted once per window refused.
    pub refusals: u32,
    /// The guard refused the last launch asked; a launch ends that.
    refusing: bool,
}

/// What a refusal leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterRefusal {
    /// Wait for the guard's window, then try again.
    Wait,
    /// Refused `give_up_after` windows in a row: give up.
    GiveUp,
}

impl Streak {
    /// A session died (or a boot failed) after `uptime_ms` up.
    pub fn died(&mut self, at_ms: EpochMs, uptime_ms: i64, s: &Settings) {
        if uptime_ms >= s.reset_ms {
            *self = Streak::default();
        }
        self.deaths = self.deaths.saturating_add(1);
        self.last_death_ms = Some(at_ms);
    }

    /// A session has been up for `uptime_ms`: long enough, and the streak
    /// is over.
    pub fn up_for(&mut self, uptime_ms: i64, s: &Settings) {
        if uptime_ms >= s.reset_ms {
            *self = Streak::default();
        }
    }

    /// The wait before the next automatic relaunch: none with no deaths
    /// in a row.
    pub fn delay_ms(&self, s: &Settings) -> i64 {
        let Some(n) = self.deaths.checked_sub(1) else {
            return 0;
        };
        doubled(s.base_ms, n, s.max_ms).max(0)
    }

    /// The earliest time of the next automatic relaunch, as seen at `now`.
    pub fn relaunch_at(&self, now: EpochMs, s: &Settings) -> EpochMs {
        match self.last_death_ms {
            None => now,
            Some(at) => at.min(now).saturating_add(self.delay_ms(s)),
        }
    }

    /// A relaunch was launched (whatever came of it).
    pub fn launched(&mut self) {
        self.refusing = false;
    }

    /// The crash-loop guard refused a relaunch. Refusals while one window
    /// is already being waited out count once.
    pub fn refused(&mut self, s: &Settings) -> AfterRefusal {
        if !self.refusing {
            self.refusing = true;
            self.refusals = self.refusals.saturating_add(1);
        }
        if self.gave_up(s) {
            AfterRefusal::GiveUp
        } else {
            AfterRefusal::Wait
        }
    }

    /// Whether this streak is past saving: refused `give_up_after` windows
    /// in a row, or that many windows' worth of deaths in a row.
    pub fn gave_up(&self, s: &Settings) -> bool {
        self.refusals >= s.give_up_after
            || self.deaths >= s.give_up_after.saturating_mul(s.crashloop_max.max(1))
    }
}

/// The wait before an automatic launch refused for the `refusals`-th time
/// in a row, for a reason that lasts (its folder is missing, say) is asked
/// again: the next tick at first, then twice as long each time, up to the
/// relaunch maximum. Each refusal is a logged decision, so a reason that
/// lasts a day costs a few hundred lines, not one per tick.
pub fn after_refused_launch_ms(tick_ms: i64, refusals: u32, s: &Settings) -> i64 {
    let tick = tick_ms.max(1);
    doubled(tick, refusals.saturating_sub(1), s.max_ms.max(tick))
}

/// `base` doubled `times` times, at most `max`: every growing wait here.
fn doubled(base: i64, times: u32, max: i64) -> i64 {
    let factor = 1_i64.checked_shl(times.min(62)).unwrap_or(i64::MAX);
    base.saturating_mul(factor).min(max)
}

/// The longest wait before retrying a pass that keeps failing.
pub const ERROR_MAX_MS: i64 = 60_000;
/// A persisting error is logged again, with its count, this often.
pub const RELOG_MS: i64 = 600_000;

/// One identity's run of failing passes (a tmux that refuses, a full or
/// read-only disk): retried with growing delay, the same error logged once
/// and then counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Failing {
    message: String,
    /// Failures of `message` since it was last logged.
    repeats: u64,
    /// Failures in a row, whatever their message.
    failures: u32,
    logged_at: EpochMs,
}

/// What to do about one failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    /// Log this failure.
    pub log: bool,
    /// With this many unlogged repeats of the error before it, if any.
    pub repeats: Option<u64>,
    /// Retry after this long.
    pub retry_in_ms: i64,
}

impl Failing {
    /// A pass failed with `message` at `now`.
    pub fn failed(&mut self, message: &str, now: EpochMs, s: &Settings) -> Report {
        self.failures = self.failures.saturating_add(1);
        let same = self.failures > 1 && self.message == message;
        let (log, repeats) = if !same {
            let repeats = (self.repeats > 0).then_some(self.repeats);
            self.message = message.to_owned();
            self.repeats = 0;
            (true, repeats)
        } else if now.saturating_sub(self.logged_at) >= RELOG_MS || now < self.logged_at {
            let repeats = Some(self.repeats);
            self.repeats = 0;
            (true, repeats)
        } else {
            self.repeats += 1;
            (false, None)
        };
        if log {
            self.logged_at = now;
        }
        let max = s.max_ms.min(ERROR_MAX_MS);
        Report {
            log,
            repeats,
            retry_in_ms: doubled(s.base_ms.max(1), self.failures - 1, max),
        }
    }

    /// Unlogged failures of the last error.
    pub fn unlogged(&self) -> u64 {
        self.repeats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: Settings = Settings {
        base_ms: 1_000,
        max_ms: 300_000,
        reset_ms: 600_000,
        give_up_after: 3,
        crashloop_max: 3,
    };

    #[test]
    fn a_lasting_refusal_is_asked_again_less_and_less_often() {
        let rows = [
            (10_000, 1, 10_000),
            (10_000, 2, 20_000),
            (10_000, 3, 40_000),
            (10_000, 6, 300_000),
            (10_000, 40, 300_000),
            (10_000, u32::MAX, 300_000),
            // A tick longer than the maximum: the tick.
            (600_000, 1, 600_000),
            (600_000, 5, 600_000),
            (0, 1, 1),
        ];
        for (tick, n, want) in rows {
            assert_eq!(
                after_refused_launch_ms(tick, n, &S),
                want,
                "tick {tick}, n {n}"
            );
        }
    }

    #[test]
    fn delays_double_up_to_the_max() {
        let mut st = Streak::default();
        let mut seen = vec![st.delay_ms(&S)];
        for i in 0..12 {
            st.died(i * 10, 5, &S);
            seen.push(st.delay_ms(&S));
        }
        assert_eq!(
            seen,
            [
                0, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000,
                300_000, 300_000
            ]
        );
    }

    #[test]
    fn a_healthy_run_ends_the_streak() {
        // (uptime of each death) → deaths in a row after it
        let rows: [(&[i64], u32); 4] = [
            (&[1, 1, 1], 3),
            (&[1, 1, 600_000], 1),
            (&[1, 600_000, 1], 2),
            (&[599_999, 599_999], 2),
        ];
        for (uptimes, want) in rows {
            let mut st = Streak::default();
            for (i, up) in uptimes.iter().enumerate() {
                st.died(i as i64, *up, &S);
            }
            assert_eq!(st.deaths, want, "{uptimes:?}");
        }
        let mut st = Streak::default();
        st.died(0, 1, &S);
        st.refused(&S);
        st.up_for(599_999, &S);
        assert_eq!(st.deaths, 1, "not yet healthy");
        st.up_for(600_000, &S);
        assert_eq!(st, Streak::default());
    }

    #[test]
    fn gives_up_after_so_many_windows_refused_in_a_row() {
        let mut st = Streak::default();
        assert_eq!(st.refused(&S), AfterRefusal::Wait);
        // Asked again inside the same window: still one.
        assert_eq!(st.refused(&S), AfterRefusal::Wait);
        assert_eq!(st.refusals, 1);
        st.launched();
        assert_eq!(st.refused(&S), AfterRefusal::Wait);
        st.launched();
        assert_eq!(st.refused(&S), AfterRefusal::GiveUp);
        // A healthy run starts the count again.
        let mut st = Streak::default();
        st.refused(&S);
        st.launched();
        st.died(10, 600_000, &S);
        assert_eq!(st.refusals, 0);
    }

    #[test]
    fn gives_up_after_so_many_windows_worth_of_deaths_in_a_row() {
        let mut st = Streak::default();
        for i in 0..8 {
            st.died(i, 1, &S);
            assert!(!st.gave_up(&S), "after {} deaths", i + 1);
        }
        st.died(9, 1, &S);
        assert!(st.gave_up(&S), "3 windows × 3 deaths");
        // With a healthy run among them, the count starts again.
        let mut st = Streak::default();
        for i in 0..8 {
            st.died(i, 1, &S);
        }
        st.died(9, 600_000, &S);
        assert!(!st.gave_up(&S));
    }

    #[test]
    fn a_death_in_the_future_waits_no_more_than_the_delay() {
        let mut st = Streak::default();
        st.died(10_000_000, 1, &S);
        st.died(10_000_001, 1, &S);
        // The clock went back an hour.
        let now = 10_000_001 - 3_600_000;
        assert_eq!(st.relaunch_at(now, &S), now + 2_000);
        assert_eq!(st.relaunch_at(10_000_001, &S), 10_000_001 + 2_000);
    }

    #[test]
    fn a_persisting_error_is_logged_once_then_counted_and_retried_ever_later() {
        let mut f = Failing::default();
        let mut now = 1_000_000;
        let mut logged = Vec::new();
        let mut waits = Vec::new();
        for _ in 0..12 {
            let r = f.failed("disk full", now, &S);
            if r.log {
                logged.push(r.repeats);
            }
            waits.push(r.retry_in_ms);
            now += r.retry_in_ms;
        }
        assert_eq!(logged, [None], "once");
        assert_eq!(
            waits,
            [
                1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000, 60_000, 60_000,
                60_000
            ]
        );
        // Ten minutes on, it is said again, with its count.
        let r = f.failed("disk full", now + RELOG_MS, &S);
        assert_eq!((r.log, r.repeats), (true, Some(11)));
        // Another error is logged at once, with the count of the one before.
        f.failed("disk full", now + RELOG_MS + 1, &S);
        let r = f.failed("read-only", now + RELOG_MS + 2, &S);
        assert_eq!((r.log, r.repeats), (true, Some(1)));
    }

    proptest! {
        /// Between consecutive deaths with no healthy run, the delay never
        /// shrinks; it never exceeds the max; a healthy run brings it back
        /// to the base; and a relaunch is never asked to wait past the max
        /// however the clock jumps.
        #[test]
        fn delays_behave(
            uptimes in proptest::collection::vec(0_i64..1_200_000, 1..40),
            jumps in proptest::collection::vec(-86_400_000_i64..86_400_000, 1..40),
        ) {
            let mut st = Streak::default();
            let mut now: i64 = 1_800_000_000_000;
            let mut last = 0;
            for (i, up) in uptimes.iter().enumerate() {
                now += jumps[i % jumps.len()];
                st.died(now, *up, &S);
                let d = st.delay_ms(&S);
                prop_assert!(d <= S.max_ms);
                prop_assert!(d >= S.base_ms);
                if *up >= S.reset_ms {
                    prop_assert_eq!(d, S.base_ms);
                } else {
                    prop_assert!(d >= last, "{} after {}", d, last);
                }
                last = d;
                let seen_at = now + jumps[(i + 1) % jumps.len()];
                let wait = st.relaunch_at(seen_at, &S) - seen_at;
                prop_assert!(wait <= S.max_ms);
            }
        }
    }
}

//! Time since a stamp, measured so that the wall clock jumping neither ages
//! everything at once nor stops the ageing (DESIGN §7, idle and max age).
//!
//! A stamp (the last activity, a session's start) is read from files the
//! wall clock wrote. The first time a process sees a stamp, the time since
//! it can only be read from the wall clock, and a stamp in the future (the
//! clock went back since) counts as just now. From then on, for as long as
//! the stamp stays the same, the time since it grows with the monotonic
//! clock, whatever the wall clock does.

use crate::core::clock::EpochMs;

/// A stamp as first seen: its value, the monotonic time then (ms from any
/// fixed origin of this process), and the time since it then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sighting {
    pub stamp: EpochMs,
    pub mono_ms: u64,
    pub since_ms: i64,
}

impl Sighting {
    /// The time since the stamp at the monotonic time `mono_ms`.
    pub(crate) fn since_at(&self, mono_ms: u64) -> i64 {
        let more = i64::try_from(mono_ms.saturating_sub(self.mono_ms)).unwrap_or(i64::MAX);
        self.since_ms.saturating_add(more)
    }
}

/// The time since `stamp`, seen now (`wall`, `mono_ms`), given how it was
/// seen before: the same stamp keeps ageing monotonically; a new one is
/// read from the wall clock, and is never taken as older than the stamp it
/// replaces is by now (a newer sign of life cannot be idler than an older
/// one).
pub(crate) fn since(
    prev: Option<Sighting>,
    stamp: EpochMs,
    wall: EpochMs,
    mono_ms: u64,
) -> Sighting {
    match prev {
        Some(p) if p.stamp == stamp => p,
        _ => {
            let by_wall = wall.saturating_sub(stamp).max(0);
            let bound = prev.map_or(i64::MAX, |p| p.since_at(mono_ms));
            Sighting {
                stamp,
                mono_ms,
                since_ms: by_wall.min(bound),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;
    const T: EpochMs = 1_800_000_000_000;

    /// A stamp seen at a wall and a monotonic time.
    type Step = (EpochMs, EpochMs, u64);

    /// Sees the stamps in turn; the time since the last one at the last
    /// sighting.
    fn run(steps: &[Step]) -> i64 {
        let mut seen = None;
        let mut at = 0;
        for &(stamp, wall, mono) in steps {
            seen = Some(since(seen, stamp, wall, mono));
            at = mono;
        }
        seen.unwrap().since_at(at)
    }

    #[test]
    fn table() {
        let rows: &[(&str, &[Step], i64)] = &[
            (
                "first sight: by the wall clock",
                &[(T, T + 5_000, 0)],
                5_000,
            ),
            ("a stamp in the future counts as now", &[(T + DAY, T, 0)], 0),
            (
                "the same stamp ages with the monotonic clock",
                &[(T, T + 5_000, 0), (T, T + 65_000, 60_000)],
                65_000,
            ),
            (
                "a forward jump of a day does not age it",
                &[(T, T + 5_000, 0), (T, T + DAY + 65_000, 60_000)],
                65_000,
            ),
            (
                "a backward jump of a day does not stop it",
                &[(T, T + 5_000, 0), (T, T - DAY, 60_000)],
                65_000,
            ),
            (
                "new activity after a backward jump is new",
                &[(T, T + 5_000, 0), (T - DAY, T - DAY + 1_000, 60_000)],
                1_000,
            ),
            (
                "new activity is read from the wall clock",
                &[(T, T + 5_000, 0), (T + 60_000, T + 62_000, 57_000)],
                2_000,
            ),
            (
                "a newer stamp is never idler than the one it replaces",
                &[(T, T + 5_000, 0), (T + 1, T + DAY, 10_000)],
                15_000,
            ),
        ];
        for (what, steps, want) in rows {
            assert_eq!(run(steps), *want, "{what}");
        }
    }
}

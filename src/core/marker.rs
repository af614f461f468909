//! The marker formats (DESIGN §2), pure: readers are forgiving (an empty
//! file made by `touch` is a valid marker; a garbage `.deaths` reads as no
//! deaths, and says so), writers are exact. The files themselves are
//! `store::markers`'.

use crate::core::clock::{self, EpochMs};
use crate::core::crash_ring::CrashRing;
use crate::core::error::{Error, Result};

/// Longest topic, in bytes (DESIGN §2).
pub const TOPIC_MAX: usize = 256;

/// What a boolean marker said: when it was written and why, when the
/// writer said so (a `touch`-made marker says neither).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlagMarker {
    pub at_ms: Option<EpochMs>,
    pub reason: Option<String>,
}

/// The crash ring as read, with what was wrong with the file if anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deaths {
    pub ring: CrashRing,
    /// Set when the file was garbage and read as "no deaths".
    pub problem: Option<String>,
}

/// Validates a topic as writers must store it: one line, at most 256 bytes,
/// no control characters.
pub(crate) fn check_topic(topic: &str) -> Result<&str> {
    let topic = topic.trim();
    if topic.len() > TOPIC_MAX {
        return Err(Error::input(
            "--topic",
            format!(
                "it is {} bytes, longer than the {TOPIC_MAX} a topic may be",
                topic.len()
            ),
            "shorten it",
        ));
    }
    if topic.chars().any(char::is_control) {
        return Err(Error::input(
            "--topic",
            "it contains a newline or another control character",
            "give a one-line topic",
        ));
    }
    Ok(topic)
}

pub(crate) fn garbage_deaths(problem: String) -> Deaths {
    Deaths {
        ring: CrashRing::default(),
        problem: Some(problem),
    }
}

/// Parses a boolean marker forgivingly: an RFC 3339 first line and a
/// reason line, either, both or neither (a `touch`-made file).
pub fn parse_flag(bytes: &[u8]) -> FlagMarker {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next();
    let at_ms = first.and_then(clock::parse_rfc3339);
    // A first line that is not a timestamp is taken as the reason.
    let reason = match (first, at_ms) {
        (Some(line), None) => Some(line.to_owned()),
        _ => lines.next().map(str::to_owned),
    };
    FlagMarker { at_ms, reason }
}

/// Parses `.topic`: its first line, at most `TOPIC_MAX` bytes.
pub fn parse_topic(bytes: &[u8]) -> std::result::Result<Option<String>, String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.len() > TOPIC_MAX {
        return Err(format!("its topic is longer than {TOPIC_MAX} bytes"));
    }
    Ok((!line.is_empty()).then(|| line.to_owned()))
}

/// Parses `.deaths` forgivingly: a JSON array of numbers, else no deaths.
pub fn parse_deaths(bytes: &[u8]) -> Deaths {
    let value: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return garbage_deaths(format!("not JSON ({e}), read as no deaths")),
    };
    let serde_json::Value::Array(items) = value else {
        return garbage_deaths("not a JSON array, read as no deaths".into());
    };
    let mut deaths = Vec::with_capacity(items.len());
    for item in &items {
        let ms = match item {
            serde_json::Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
            _ => None,
        };
        match ms {
            Some(ms) => deaths.push(ms),
            None => {
                return garbage_deaths(format!(
                    "holds {item} where an epoch-millisecond number belongs, read as no deaths"
                ))
            }
        }
    }
    Deaths {
        ring: CrashRing::from_entries(deaths),
        problem: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deaths_are_read_forgivingly() {
        let cases: &[(&str, Option<&[i64]>)] = &[
            ("[1,2,3]", Some(&[1, 2, 3])),
            ("[3, 1, 2]\n", Some(&[1, 2, 3])),
            ("[]", Some(&[])),
            ("[-5, 1e3]", Some(&[-5, 1000])),
            ("garbage", None),
            ("{\"a\":1}", None),
            ("[1,\"x\"]", None),
            ("[1,null]", None),
            ("[1,2", None),
        ];
        for (text, want) in cases {
            let d = parse_deaths(text.as_bytes());
            match want {
                Some(w) => {
                    assert_eq!(d.ring.entries(), *w, "{text}");
                    assert!(d.problem.is_none(), "{text}");
                }
                None => {
                    assert!(d.ring.is_empty(), "{text}");
                    assert!(d.problem.is_some(), "{text}");
                }
            }
        }
        let huge: Vec<i64> = (0..5000).collect();
        let d = parse_deaths(serde_json::to_string(&huge).unwrap().as_bytes());
        assert_eq!(d.ring.entries().len(), crate::core::crash_ring::CAPACITY);
    }

    proptest::proptest! {
        /// Whatever a script or a crash leaves in a marker, reading it
        /// never panics, and the crash ring stays bounded and sorted.
        #[test]
        fn parsers_take_any_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = parse_flag(&bytes);
            if let Ok(Some(t)) = parse_topic(&bytes) {
                proptest::prop_assert!(t.len() <= TOPIC_MAX && !t.contains('\n'));
            }
            let d = parse_deaths(&bytes);
            proptest::prop_assert!(d.ring.entries().len() <= crate::core::crash_ring::CAPACITY);
            proptest::prop_assert!(d.ring.entries().windows(2).all(|w| w[0] <= w[1]));
            let _ = crate::core::session::SessionRecord::parse(&bytes);
        }

        #[test]
        fn numeric_arrays_are_never_garbage(v in proptest::collection::vec(proptest::prelude::any::<i64>(), 0..40)) {
            let d = parse_deaths(serde_json::to_string(&v).unwrap().as_bytes());
            proptest::prop_assert!(d.problem.is_none());
        }
    }
}

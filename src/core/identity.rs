//! The validated peer name. A name is also the stem of every file about the
//! peer, so it is checked before any path is built from it (DESIGN §1).

use std::fmt;

use crate::core::error::Error;

/// Longest identity, in bytes (all identities are ASCII).
pub(crate) const MAX_LEN: usize = 64;

/// A peer name that matches `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`.
///
/// The only way to get one is [`Identity::parse`], so holding an `Identity`
/// proves it is safe to join onto a directory: no `/`, no `..`, no dot, no
/// space, no NUL, nothing outside ASCII.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity(String);

impl Identity {
    pub fn parse(name: &str) -> Result<Self, Error> {
        match problem(name) {
            None => Ok(Identity(name.to_owned())),
            Some(why) => Err(Error::Identity {
                name: printable(name),
                why,
            }),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Identity {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn problem(name: &str) -> Option<&'static str> {
    let bytes = name.as_bytes();
    let Some(first) = bytes.first() else {
        return Some("it is empty");
    };
    if bytes.len() > MAX_LEN {
        return Some("it is longer than 64 bytes");
    }
    if !first.is_ascii_alphanumeric() {
        return Some("it must start with a letter or a digit");
    }
    if bytes
        .iter()
        .any(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-'))
    {
        return Some("only letters, digits, '_' and '-' are allowed (no '/', '.', spaces or other characters)");
    }
    None
}

/// The name as it can be shown in one line of an error: control characters
/// escaped, and cut short when it is huge, so a hostile name cannot forge
/// output or flood a terminal.
pub(crate) fn printable(name: &str) -> String {
    const SHOW: usize = 80;
    let mut out: String = name
        .chars()
        .take(SHOW)
        .flat_map(char::escape_default)
        .collect();
    if name.chars().count() > SHOW {
        out.push_str(&format!("… ({} bytes)", name.len()));
    }
    out
}

/// A conversation id as runtimes make them (UUIDs and the like). It ends up
/// in file names and on a command line, so nothing that could leave a
/// folder or read as an option.
pub(crate) fn is_conversation_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in [
            "a",
            "alice",
            "A1",
            "0",
            "ccl-auto-11",
            "x_y",
            &"a".repeat(64),
        ] {
            assert!(Identity::parse(ok).is_ok(), "{ok:?} should be accepted");
        }
    }

    #[test]
    fn refuses_everything_else() {
        let long = "a".repeat(65);
        let huge = "b".repeat(10 * 1024);
        for bad in [
            "", "../x", "a/b", ".hidden", "a.b", "..", "-a", "_a", "a b", "a\0b",
            "alicе", // Cyrillic е
            "ａ", "a\n", &long, &huge,
        ] {
            assert!(Identity::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn printable_escapes_and_truncates() {
        assert_eq!(printable("a\nb"), "a\\nb");
        let shown = printable(&"z".repeat(10_000));
        assert!(shown.len() < 120, "{shown}");
        assert!(shown.ends_with("(10000 bytes)"));
    }

    #[test]
    fn conversation_ids_never_leave_a_folder() {
        for ok in ["3f2a-11", "abc_DEF", "a"] {
            assert!(is_conversation_id(ok), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "a/b",
            "a.b",
            "a b",
            "-rf",
            "--x",
            &"x".repeat(129),
        ] {
            assert!(!is_conversation_id(bad), "{bad}");
        }
    }
}

//! Pools of interchangeable agents, `pools/<name>.json`: a prefix, an index
//! range and a member template. Members are named exactly `prefix + index`
//! for index in `[start_index, start_index + max)`, and exist as ordinary
//! peer definitions (marked with `"pool"`), so everything iapeer does for a
//! peer it does for a member: members below `min` are `always` (kept up,
//! relaunched), the others `lazy` and parked after the pool's idle time.
//! Nothing outside the range is ever touched, whatever its name looks like.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::error::{Error, Result};
use crate::core::identity::Identity;
use crate::core::peer;
use crate::core::peer::{Dialogs, Peer, Policy, RuntimeKind};

/// A pool never has more members than this.
pub(crate) const MAX_MEMBERS: u32 = 1000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Pool {
    pub name: String,
    pub prefix: String,
    #[serde(default)]
    pub start_index: u32,
    pub min: u32,
    pub max: u32,
    /// Members above `min` idle longer than this are parked
    /// (default IAPEER_IDLE_SECS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_secs: Option<u64>,
    /// A member is free for a task when nothing has happened in it for
    /// this long since its last one (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_secs: Option<u64>,
    pub template: Template,
}

/// What every member is made from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Template {
    pub cwd: PathBuf,
    #[serde(default = "default_runtime")]
    pub runtime: RuntimeKind,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub initial_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_secs: Option<u64>,
}

fn default_runtime() -> RuntimeKind {
    RuntimeKind::Claude
}

/// How long a member stays busy after a task, by default.
pub(crate) const DEFAULT_QUIET_SECS: u64 = 10;

impl Pool {
    /// The members, in index order. (`validate` guarantees the range fits
    /// and every name is an identity.)
    pub(crate) fn members(&self) -> Vec<Identity> {
        (0..self.max)
            .filter_map(|position| Identity::parse(&self.member_name(position)).ok())
            .collect()
    }

    /// `prefix + (start_index + position)`, computed without overflow.
    fn member_name(&self, position: u32) -> String {
        format!(
            "{}{}",
            self.prefix,
            u64::from(self.start_index) + u64::from(position)
        )
    }

    pub(crate) fn quiet_ms(&self) -> i64 {
        self.quiet_secs
            .unwrap_or(DEFAULT_QUIET_SECS)
            .saturating_mul(1000) as i64
    }

    /// The definition of the member at `position` (0-based in the range).
    pub(crate) fn member(&self, position: u32) -> Peer {
        let t = &self.template;
        Peer {
            name: self.member_name(position),
            cwd: t.cwd.clone(),
            runtime: t.runtime,
            command: t.command.clone(),
            policy: if position < self.min {
                Policy::Always
            } else {
                Policy::Lazy
            },
            conversational: false,
            initial_prompt: t.initial_prompt.clone(),
            external_supervisor: None,
            idle_secs: self.idle_secs,
            max_age_secs: t.max_age_secs,
            ready_pattern: t.ready_pattern.clone(),
            interfaces: None,
            pool: Some(self.name.clone()),
            dialogs: Dialogs::default(),
            on_stuck: Default::default(),
        }
    }

    fn validate(&self, file: &Path) -> Result<()> {
        let bad = |problem: String, hint: &str| {
            Err(Error::input(file.display().to_string(), problem, hint))
        };
        Identity::parse(&self.name).map_err(|e| {
            Error::input(
                file.display().to_string(),
                format!("its name is not valid: {e}"),
                "rename the pool",
            )
        })?;
        if self.prefix.is_empty()
            || !self.prefix.as_bytes()[0].is_ascii_alphanumeric()
            || !self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad(
                format!("prefix {:?} cannot start peer names", self.prefix),
                "use letters, digits, '-' and '_', starting with a letter or digit",
            );
        }
        if u64::from(self.start_index) + u64::from(self.max) > u64::from(u32::MAX) {
            return bad(
                format!(
                    "start_index {} + max {} runs past the largest index",
                    self.start_index, self.max
                ),
                "use a smaller start_index",
            );
        }
        if self.max == 0 || self.max > MAX_MEMBERS || self.min > self.max {
            return bad(
                format!("min {} and max {} do not make a pool", self.min, self.max),
                "use 0 <= min <= max, 1 <= max <= 1000",
            );
        }
        let last = format!(
            "{}{}",
            self.prefix,
            u64::from(self.start_index) + u64::from(self.max) - 1
        );
        if Identity::parse(&last).is_err() {
            return bad(
                format!("its last member, {last}, is not a valid peer name"),
                "shorten the prefix",
            );
        }
        if !self.template.cwd.is_absolute() {
            return bad(
                format!("template cwd {:?} is not absolute", self.template.cwd),
                "give a full path",
            );
        }
        if self.template.runtime == RuntimeKind::Shell
            && self.template.command.as_deref().unwrap_or(&[]).is_empty()
        {
            return bad(
                "a shell pool needs a command".into(),
                "set template.command to an argv array",
            );
        }
        Ok(())
    }
}

/// Parses a pool definition; `expected` is the name its file gives.
pub(crate) fn parse(file: &Path, bytes: &[u8], expected: Option<&str>) -> Result<Pool> {
    let pool: Pool = peer::decode_definition(
        file,
        bytes,
        "pool",
        "fix the JSON, or remove the file and `iapeer pool add` it again",
    )?;
    pool.validate(file)?;
    peer::check_defined_name(file, &pool.name, expected)?;
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(prefix: &str, start: u32, min: u32, max: u32) -> Pool {
        Pool {
            name: "p".into(),
            prefix: prefix.into(),
            start_index: start,
            min,
            max,
            idle_secs: None,
            quiet_secs: None,
            template: Template {
                cwd: "/tmp".into(),
                runtime: RuntimeKind::Claude,
                command: None,
                initial_prompt: None,
                ready_pattern: None,
                max_age_secs: None,
            },
        }
    }

    #[test]
    fn members_are_exactly_prefix_plus_index_in_range() {
        let names: Vec<String> = pool("ccl-auto-", 11, 2, 10)
            .members()
            .iter()
            .map(|m| m.to_string())
            .collect();
        assert_eq!(names.first().map(String::as_str), Some("ccl-auto-11"));
        assert_eq!(names.last().map(String::as_str), Some("ccl-auto-20"));
        assert_eq!(names.len(), 10);
        assert!(!names
            .iter()
            .any(|n| n == "ccl-auto10" || n == "ccl-auto-10" || n == "ccl-auto-21"));
        let p = pool("ccl-auto-", 11, 2, 10);
        assert_eq!(p.member(0).policy, Policy::Always);
        assert_eq!(p.member(1).policy, Policy::Always);
        assert_eq!(p.member(2).policy, Policy::Lazy);
        assert_eq!(p.member(0).pool.as_deref(), Some("p"));
    }

    #[test]
    fn bad_pools_are_refused() {
        for (prefix, start, min, max) in [
            ("", 0, 0, 1),
            ("-x", 0, 0, 1),
            ("a/b", 0, 0, 1),
            ("ok", 0, 3, 2),
            ("ok", 0, 0, 0),
            ("ok", 0, 0, 5000),
            (&*"x".repeat(63), 5, 0, 10),
            // Regression: this range overflowed u32, panicking in debug and
            // wrapping to p0 (someone else's peer) in release.
            ("p", u32::MAX, 0, 2),
        ] {
            let p = pool(prefix, start, min, max);
            assert!(
                p.validate(Path::new("pools/p.json")).is_err(),
                "{prefix:?} {start} {min} {max}"
            );
        }
    }
}

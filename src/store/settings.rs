//! Every setting (DESIGN §10), and `$IAPEER_HOME/config.toml`, which holds
//! the same settings under their variable's name without `IAPEER_`, lower
//! case (`idle_secs = 3600`, `claude_bin = "…"`). The CLI and the daemon
//! read the file alike; the environment overrides it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::core::error::{Error, Result};

/// One setting: its variable, its default as shown, and what it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    pub var: &'static str,
    pub default: &'static str,
    pub about: &'static str,
}

impl Setting {
    /// Its key in config.toml.
    pub fn key(&self) -> String {
        self.var
            .strip_prefix("IAPEER_")
            .unwrap_or(self.var)
            .to_ascii_lowercase()
    }
}

const fn s(var: &'static str, default: &'static str, about: &'static str) -> Setting {
    Setting {
        var,
        default,
        about,
    }
}

/// Every setting config.toml may hold, in the order `iapeer config` shows
/// them. (`IAPEER_HOME` is where the file is, so only the environment can
/// say it.)
pub const SETTINGS: &[Setting] = &[
    s(
        "IAPEER_TICK_SECS",
        "10",
        "the daemon's periodic pass, in seconds",
    ),
    s(
        "IAPEER_IDLE_SECS",
        "3600",
        "a lazy peer idle this long is parked",
    ),
    s(
        "IAPEER_MAX_AGE_SECS",
        "14400",
        "a session this old is parked when its turn ends",
    ),
    s(
        "IAPEER_BOOT_DEADLINE_SECS",
        "240",
        "a boot not ready by then is a death",
    ),
    s(
        "IAPEER_READY_GATE_SECS",
        "120",
        "how long a wake waits at the ready gate",
    ),
    s(
        "IAPEER_CRASHLOOP_MAX",
        "3",
        "deaths in the window that refuse a launch",
    ),
    s(
        "IAPEER_CRASHLOOP_WINDOW_SECS",
        "300",
        "the crash-loop guard's window",
    ),
    s(
        "IAPEER_BACKOFF_BASE_SECS",
        "1",
        "the first relaunch delay after a death",
    ),
    s(
        "IAPEER_BACKOFF_MAX_SECS",
        "300",
        "the longest relaunch delay",
    ),
    s(
        "IAPEER_BACKOFF_RESET_SECS",
        "600",
        "a session up this long ends a streak of deaths",
    ),
    s(
        "IAPEER_GIVE_UP_AFTER",
        "3",
        "refused windows in a row before iapeer gives up",
    ),
    s(
        "IAPEER_STUCK_SECS",
        "1800",
        "mid-turn with no progress this long is stuck",
    ),
    s(
        "IAPEER_MAX_AGE_GRACE_SECS",
        "900",
        "how long a max-age park or `stop --at-turn-end` waits for the turn to end",
    ),
    s(
        "IAPEER_ON_ACTIVITY",
        "",
        "a shell command run when a peer enters a chosen state (none by default)",
    ),
    s(
        "IAPEER_ON_ACTIVITY_STATES",
        "waiting,limited,stuck,failed",
        "the states on_activity is run for",
    ),
    s(
        "IAPEER_HOOK_TIMEOUT_SECS",
        "10",
        "an on_activity command running longer is killed",
    ),
    s(
        "IAPEER_LIFECYCLE_LOG_MAX_BYTES",
        "5242880",
        "lifecycle.log rotates at this size",
    ),
    s("IAPEER_LIFECYCLE_LOG_KEEP", "5", "rotated logs kept"),
    s(
        "IAPEER_SUPERVISE_LOG_VERBOSE",
        "0",
        "log `alive` and skipped peers on every tick",
    ),
    s("IAPEER_CLAUDE_BIN", "claude", "the Claude Code program"),
    s("IAPEER_CODEX_BIN", "codex", "the Codex program"),
    s(
        "CLAUDE_CONFIG_DIR",
        "~/.claude",
        "Claude Code's own configuration and transcripts",
    ),
    s(
        "CODEX_HOME",
        "~/.codex",
        "Codex's own configuration and rollouts",
    ),
    s(
        "IAPEER_WAKE_LOCK_WAIT_SECS",
        "30",
        "how long a wake waits for another wake of the same peer",
    ),
    s(
        "IAPEER_METRICS_FILE",
        "",
        "where the daemon writes Prometheus metrics (none by default)",
    ),
    s(
        "IAPEER_HTTP_ADDR",
        "",
        "where the daemon serves its dashboard (none by default)",
    ),
    s(
        "IAPEER_HTTP_TOKEN_FILE",
        "",
        "the dashboard's bearer token (required off loopback)",
    ),
];

/// The setting a config.toml key names.
pub fn by_key(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key() == key)
}

/// The setting of a variable.
pub fn by_var(var: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.var == var)
}

/// A value read from config.toml, and the line it is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileValue {
    pub value: String,
    pub line: usize,
}

/// The settings config.toml holds, by variable. A missing file holds none;
/// a malformed one is an error naming the file, the line and the key.
pub fn read_file(path: &Path) -> Result<BTreeMap<&'static str, FileValue>> {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| {
            Error::input(
                path.display().to_string(),
                "it is not UTF-8 text",
                "write config.toml as plain TOML",
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(Error::io(path, "read", e)),
    };
    parse(path, &text)
}

fn parse(path: &Path, text: &str) -> Result<BTreeMap<&'static str, FileValue>> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let table: BTreeMap<toml::Spanned<String>, toml::Spanned<toml::Value>> = toml::from_str(text)
        .map_err(|e| {
        let at = e
            .span()
            .map(|s| format!(" line {}", line_of(s.start)))
            .unwrap_or_default();
        Error::input(
            format!("{}{at}", path.display()),
            e.message().trim().to_owned(),
            "fix the TOML (see `iapeer config` for every key)",
        )
    })?;
    let mut out = BTreeMap::new();
    for (key, value) in table {
        let line = line_of(key.span().start);
        let here = || format!("{} line {line}, key {}", path.display(), key.get_ref());
        let Some(setting) = by_key(key.get_ref()) else {
            return Err(Error::input(
                here(),
                "it is not a setting",
                format!(
                    "use one of: {}",
                    SETTINGS
                        .iter()
                        .map(Setting::key)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        let value = match value.into_inner() {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => if b { "1" } else { "0" }.to_owned(),
            other => {
                return Err(Error::input(
                    here(),
                    format!("its value is a {}", other.type_str()),
                    "give a string, a number or a boolean",
                ))
            }
        };
        out.insert(setting.var, FileValue { value, line });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> std::result::Result<BTreeMap<&'static str, FileValue>, String> {
        parse(Path::new("/h/config.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn keys_are_the_variables_without_their_prefix() {
        let got = parsed(
            "# a comment\nidle_secs = 60\nclaude_bin = \"/opt/claude\"\n\
             supervise_log_verbose = true\nbackoff_base_secs = 0.5\ncodex_home = \"/c\"\n",
        )
        .unwrap();
        let v = |var: &str| got.get(var).map(|f| (f.value.as_str(), f.line));
        assert_eq!(v("IAPEER_IDLE_SECS"), Some(("60", 2)));
        assert_eq!(v("IAPEER_CLAUDE_BIN"), Some(("/opt/claude", 3)));
        assert_eq!(v("IAPEER_SUPERVISE_LOG_VERBOSE"), Some(("1", 4)));
        assert_eq!(v("IAPEER_BACKOFF_BASE_SECS"), Some(("0.5", 5)));
        assert_eq!(v("CODEX_HOME"), Some(("/c", 6)));
    }

    #[test]
    fn a_bad_file_names_the_file_the_line_and_the_key() {
        let rows = [
            ("tick_secs = 1\nidle_sec = 5\n", "line 2, key idle_sec"),
            ("tick_secs = [1, 2]\n", "line 1, key tick_secs"),
            ("tick_secs = 1\n\nidle_secs = = 3\n", "line 3"),
        ];
        for (text, want) in rows {
            let err = parsed(text).unwrap_err();
            assert!(err.contains("/h/config.toml"), "{err}");
            assert!(err.contains(want), "{want:?} not in {err}");
        }
    }

    #[test]
    fn every_setting_has_a_distinct_key() {
        let mut keys: Vec<String> = SETTINGS.iter().map(Setting::key).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), SETTINGS.len());
    }
}

//! Peer definitions, `peers/<name>.json` (DESIGN §3): who the agent is, where
//! it works, how it is launched and how it is kept — what a definition
//! means and how its JSON is checked. Reading and writing the files is
//! `store::definitions`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::error::{Error, Result};
use crate::core::identity::Identity;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Claude,
    Codex,
    Shell,
}

impl RuntimeKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Claude => "claude",
            RuntimeKind::Codex => "codex",
            RuntimeKind::Shell => "shell",
        }
    }
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Sleeps until a message wakes it; parked when idle.
    #[default]
    Lazy,
    /// Kept up: started with the daemon, relaunched on death, never parked
    /// for idleness.
    Always,
}

impl Policy {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Policy::Lazy => "lazy",
            Policy::Always => "always",
        }
    }
}

/// A peer definition as stored. Unknown fields are ignored, so a newer
/// definition still loads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    pub name: String,
    pub cwd: PathBuf,
    #[serde(default = "default_runtime")]
    pub runtime: RuntimeKind,
    /// `shell`: the argv to run. `claude`/`codex`: extra arguments for the
    /// runtime's own command line.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub policy: Policy,
    #[serde(default)]
    pub conversational: bool,
    #[serde(default)]
    pub initial_prompt: Option<String>,
    #[serde(default)]
    pub external_supervisor: Option<String>,
    #[serde(default)]
    pub idle_secs: Option<u64>,
    #[serde(default)]
    pub max_age_secs: Option<u64>,
    /// `shell`: text whose appearance on screen means "ready" (otherwise
    /// the session is ready at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_pattern: Option<String>,
    /// Human-facing interfaces; a `telegram` object makes a peer
    /// conversational (as in the reference deployment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<serde_json::Value>,
    /// The pool this peer is a member of (its definition is the pool's to
    /// write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Whether iapeer answers the runtime's known start-up dialogs
    /// (DESIGN §6).
    #[serde(default)]
    pub dialogs: Dialogs,
    /// What iapeer does when the session reads `stuck` (DESIGN §12).
    #[serde(default, skip_serializing_if = "OnStuck::is_default")]
    pub on_stuck: OnStuck,
}

/// `on_stuck`: `tell` (the default: log it, and run the operator's hook)
/// or `restart` (end the session and bring it back fresh, its task queued
/// again, first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStuck {
    #[default]
    Tell,
    Restart,
}

impl OnStuck {
    fn is_default(&self) -> bool {
        *self == OnStuck::Tell
    }
}

/// `dialogs`: `auto` answers the runtime's known start-up dialogs (folder
/// trust, a custom API key, …); `manual` answers none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialogs {
    #[default]
    Auto,
    Manual,
}

fn default_runtime() -> RuntimeKind {
    RuntimeKind::Claude
}

impl Peer {
    /// A human-facing peer never auto-freshes.
    pub(crate) fn is_conversational(&self) -> bool {
        self.conversational
            || self
                .interfaces
                .as_ref()
                .and_then(|i| i.get("telegram"))
                .is_some_and(serde_json::Value::is_object)
    }

    pub(crate) fn identity(&self) -> Identity {
        Identity::parse(&self.name).expect("a loaded peer's name was validated")
    }

    pub(crate) fn extra_args(&self) -> &[String] {
        self.command.as_deref().unwrap_or(&[])
    }

    /// Checks what serde cannot: the name, an absolute cwd, an argv for a
    /// shell peer.
    fn validate(&self, file: &Path) -> Result<()> {
        let subject = || file.display().to_string();
        Identity::parse(&self.name).map_err(|e| {
            Error::input(
                subject(),
                format!("its name is not valid: {e}"),
                "rename the peer",
            )
        })?;
        if !self.cwd.is_absolute() {
            return Err(Error::input(
                subject(),
                format!("cwd {:?} is not an absolute path", self.cwd),
                "give the full path of the agent's working folder",
            ));
        }
        if self.runtime == RuntimeKind::Shell && self.extra_args().is_empty() {
            return Err(Error::input(
                subject(),
                "a shell peer needs a command (an argv array)",
                "set \"command\": [\"program\", \"arg\", …]",
            ));
        }
        if self.extra_args().iter().any(|a| a.contains('\0')) {
            return Err(Error::input(
                subject(),
                "its command contains a NUL byte",
                "remove it",
            ));
        }
        if let Some(prompt) = &self.initial_prompt {
            // Typed in as a task is: held to the same rules (DESIGN §6).
            crate::core::wake_plan::check_task(prompt).map_err(|e| match e {
                Error::Input { problem, hint, .. } => {
                    Error::input(subject(), format!("initial_prompt: {problem}"), hint)
                }
                e => e,
            })?;
        }
        if let Some(pattern) = &self.ready_pattern {
            if pattern.is_empty() {
                return Err(Error::input(
                    subject(),
                    "ready_pattern is empty",
                    "remove it or give text to wait for",
                ));
            }
        }
        Ok(())
    }
}

/// Parses a definition; `expected` is the identity its file name gives.
pub fn parse(file: &Path, bytes: &[u8], expected: Option<&Identity>) -> Result<Peer> {
    let peer: Peer = decode_definition(
        file,
        bytes,
        "peer",
        "fix the JSON, or remove the file and `iapeer add` the peer again",
    )?;
    peer.validate(file)?;
    check_defined_name(file, &peer.name, expected.map(Identity::as_str))?;
    Ok(peer)
}

/// Decodes a definition file's JSON (a `what`: peer, pool); `again` says how
/// to start over when it is broken.
pub(crate) fn decode_definition<T: serde::de::DeserializeOwned>(
    file: &Path,
    bytes: &[u8],
    what: &str,
    again: &str,
) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::input(
            file.display().to_string(),
            format!("not a valid {what} definition ({e})"),
            again,
        )
    })
}

/// A definition must define the name its file is named after.
pub(crate) fn check_defined_name(file: &Path, defined: &str, expected: Option<&str>) -> Result<()> {
    match expected {
        Some(name) if defined != name => Err(Error::input(
            file.display().to_string(),
            format!("it defines {defined:?}, but its file name says {name}"),
            format!("set \"name\": \"{name}\" or rename the file"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(json: &str) -> Result<Peer> {
        parse(
            Path::new("peers/alice.json"),
            json.as_bytes(),
            Identity::parse("alice").ok().as_ref(),
        )
    }

    #[test]
    fn the_design_example_loads() {
        let peer = p(
            r#"{ "name": "alice", "cwd": "/home/u/src/app", "runtime": "claude",
            "command": null, "policy": "lazy", "conversational": false,
            "initial_prompt": null, "external_supervisor": null,
            "idle_secs": null, "max_age_secs": null }"#,
        )
        .unwrap();
        assert_eq!(peer.runtime, RuntimeKind::Claude);
        assert_eq!(peer.policy, Policy::Lazy);
        assert!(!peer.is_conversational());
    }

    #[test]
    fn a_telegram_interface_makes_a_peer_conversational() {
        let peer =
            p(r#"{"name":"alice","cwd":"/x","interfaces":{"telegram":{"chat":1}}}"#).unwrap();
        assert!(peer.is_conversational());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_a_definition_or_an_error(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = parse(Path::new("peers/x.json"), &bytes, None);
        }
    }

    #[test]
    fn bad_definitions_name_the_file() {
        for bad in [
            "",
            "{",
            "[]",
            r#"{"name":"alice"}"#,
            r#"{"name":"alice","cwd":"relative"}"#,
            r#"{"name":"bob","cwd":"/x"}"#,
            r#"{"name":"alice","cwd":"/x","runtime":"vim"}"#,
            r#"{"name":"alice","cwd":"/x","runtime":"shell"}"#,
            r#"{"name":"alice","cwd":"/x","policy":"sometimes"}"#,
            r#"{"name":"alice","cwd":"/x","idle_secs":-1}"#,
        ] {
            let err = p(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
            assert!(err.to_string().contains("peers/alice.json"), "{err}");
        }
    }
}

//! `shell`: any argv. Nothing to resume; activity is tmux's session
//! activity time; ready at once, or when `ready_pattern` shows on screen.

use super::{LaunchPlan, Runtime, Screen};
use crate::core::peer::{Peer, RuntimeKind};

#[derive(Debug)]
pub(crate) struct Shell;

impl Runtime for Shell {
    fn interrupt_keys(&self) -> &'static [&'static str] {
        &["C-c"]
    }

    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Shell
    }

    fn fresh(&self, peer: &Peer, _session: &str) -> LaunchPlan {
        LaunchPlan {
            argv: peer.extra_args().iter().map(Into::into).collect(),
            resume_ref: None,
        }
    }

    fn resume(&self, peer: &Peer, _resume_ref: &str) -> LaunchPlan {
        self.fresh(peer, "")
    }

    fn ready_unseen(&self, peer: &Peer) -> bool {
        peer.ready_pattern.is_none()
    }

    fn screen(&self, peer: &Peer, text: &str) -> Screen {
        match &peer.ready_pattern {
            Some(pattern) if !text.contains(pattern.as_str()) => Screen::NotYet,
            _ => Screen::Ready,
        }
    }
}

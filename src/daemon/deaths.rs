//! Session deaths as events: one thread polls a pidfd per live session
//! (a kqueue on macOS) and reports each exit the moment it happens, so a
//! death is handled in milliseconds instead of at the next tick.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc::{self, Receiver, Sender};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::Event;
use crate::core::identity::Identity;
use crate::os::process::ProcessHandle;

enum Command {
    Watch(Identity, ProcessHandle),
    Forget(Identity),
}

/// The watch; commands go to its thread through a channel and a wake-up
/// pipe. The thread alone owns the process handles, so no descriptor is
/// ever closed while it is being polled.
#[derive(Debug)]
pub(crate) struct DeathWatch {
    commands: Sender<Command>,
    wake: OwnedFd,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Watch(id, h) => write!(f, "Watch({id}, {})", h.pid()),
            Command::Forget(id) => write!(f, "Forget({id})"),
        }
    }
}

impl DeathWatch {
    pub(crate) fn start(events: Sender<Event>) -> std::io::Result<Self> {
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("death-watch".into())
            .spawn(move || run(&read, &rx, &events))?;
        Ok(DeathWatch {
            commands: tx,
            wake: write,
        })
    }

    /// Watches `pid` (started at `start`) for `id`. Returns false if that
    /// process is already gone: the caller should treat it as a death now.
    pub(crate) fn watch(&self, id: &Identity, pid: i32, start: Option<u64>) -> bool {
        match ProcessHandle::open(pid, start) {
            Ok(Some(handle)) => {
                self.send(Command::Watch(id.clone(), handle));
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!("cannot watch pid {pid} of {id}: {e}; the tick will check it");
                true
            }
        }
    }

    pub(crate) fn forget(&self, id: &Identity) {
        self.send(Command::Forget(id.clone()));
    }

    fn send(&self, command: Command) {
        if self.commands.send(command).is_ok() {
            let _ = nix::unistd::write(&self.wake, &[1]);
        }
    }
}

fn run(wake: &OwnedFd, commands: &Receiver<Command>, events: &Sender<Event>) {
    let mut watched: HashMap<Identity, ProcessHandle> = HashMap::new();
    loop {
        let ids: Vec<Identity> = watched.keys().cloned().collect();
        let ready: Vec<bool> = {
            let mut fds = Vec::with_capacity(ids.len() + 1);
            fds.push(PollFd::new(wake.as_fd(), PollFlags::POLLIN));
            for id in &ids {
                // SAFETY: the handle lives in `watched`, untouched until
                // this poll returns.
                let fd = unsafe { BorrowedFd::borrow_raw(watched[id].raw_fd()) };
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => fds.iter().map(|f| f.any().unwrap_or(false)).collect(),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!("death watch: poll failed: {e}; deaths are left to the tick");
                    return;
                }
            }
        };
        for (id, died) in ids.iter().zip(&ready[1..]) {
            if *died {
                watched.remove(id);
                if events.send(Event::Died(id.clone())).is_err() {
                    return;
                }
            }
        }
        if ready[0] {
            let mut buf = [0u8; 64];
            while matches!(nix::unistd::read(wake, &mut buf), Ok(n) if n > 0) {}
            loop {
                match commands.try_recv() {
                    Ok(Command::Watch(id, handle)) => {
                        watched.insert(id, handle);
                    }
                    Ok(Command::Forget(id)) => {
                        watched.remove(&id);
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            }
        }
    }
}

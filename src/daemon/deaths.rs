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

/// Descriptors held back for the death watch. When the process runs out
/// (a flood of dashboard clients, a burst of work), two are given up for
/// each new session to watch: one for its pidfd, one to read its start
/// time.
const RESERVE: usize = 16;

/// The watch; commands go to its thread through a channel and a wake-up
/// pipe. The thread alone owns the process handles, so no descriptor is
/// ever closed while it is being polled.
#[derive(Debug)]
pub(crate) struct DeathWatch {
    commands: Sender<Command>,
    wake: OwnedFd,
    reserve: Vec<OwnedFd>,
    /// Descriptors ran short, and it was logged: said once per shortage.
    short: bool,
    /// Sessions that could not be watched, their error logged once.
    unwatched: std::collections::HashSet<Identity>,
}

/// What [`DeathWatch::watch`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Watch {
    Watching,
    /// The process is gone (or is not the one recorded): a death now.
    Gone,
    /// It could not be looked at (out of descriptors, say): not a death;
    /// ask again on the next pass.
    Later,
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
        let mut watch = DeathWatch {
            commands: tx,
            wake: write,
            reserve: Vec::with_capacity(RESERVE),
            short: false,
            unwatched: std::collections::HashSet::new(),
        };
        watch.refill();
        Ok(watch)
    }

    /// Watches `pid` (started at `start`) for `id`, from the reserve of
    /// descriptors if the process has run out.
    pub(crate) fn watch(&mut self, id: &Identity, pid: i32, start: Option<u64>) -> Watch {
        let mut opened = ProcessHandle::open(pid, start);
        if matches!(&opened, Err(e) if out_of_descriptors(e)) && self.reserve.len() >= 2 {
            self.reserve.truncate(self.reserve.len() - 2);
            if !self.short {
                tracing::warn!(
                    "open files are short: the death watch took descriptors from its reserve \
                     ({} of {RESERVE} left) to watch {id}; see `iapeer doctor` for the limit",
                    self.reserve.len()
                );
            }
            self.short = true;
            opened = ProcessHandle::open(pid, start);
        }
        match opened {
            Ok(Some(handle)) => {
                self.send(Command::Watch(id.clone(), handle));
                self.unwatched.remove(id);
                self.refill();
                Watch::Watching
            }
            Ok(None) => {
                self.unwatched.remove(id);
                Watch::Gone
            }
            Err(e) => {
                let short = out_of_descriptors(&e) && std::mem::replace(&mut self.short, true);
                if self.unwatched.insert(id.clone()) && !short {
                    tracing::warn!(
                        "cannot watch pid {pid} of {id}: {e}; not a death: asked again on its \
                         next pass, and the tick checks it meanwhile"
                    );
                }
                Watch::Later
            }
        }
    }

    /// Tops the reserve up, as far as descriptors allow.
    fn refill(&mut self) {
        while self.reserve.len() < RESERVE {
            match nix::fcntl::open(
                "/dev/null",
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            ) {
                Ok(fd) => self.reserve.push(fd),
                Err(_) => return,
            }
        }
        if std::mem::take(&mut self.short) {
            tracing::info!("open files are no longer short: the death watch's reserve is whole");
        }
    }

    pub(crate) fn forget(&mut self, id: &Identity) {
        self.unwatched.remove(id);
        self.send(Command::Forget(id.clone()));
    }

    fn send(&self, command: Command) {
        if self.commands.send(command).is_ok() {
            let _ = nix::unistd::write(&self.wake, &[1]);
        }
    }
}

fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
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

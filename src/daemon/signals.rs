//! Signals on their own thread: SIGTERM/SIGINT ask the loop to stop (a
//! second one exits at once), SIGHUP asks it to reload peers. The main
//! thread blocks them before any other thread exists, so only this thread's
//! `sigwait` ever sees them; children get a clean mask from `Command`.

use std::sync::mpsc::Sender;

use nix::sys::signal::{SigSet, Signal};

use super::Event;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sig {
    Stop,
    Reload,
}

/// Blocks the signals in the calling thread (and so in every thread it
/// spawns later). Call first thing.
pub(crate) fn block() -> nix::Result<SigSet> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    set.thread_block()?;
    Ok(set)
}

pub(crate) fn start(set: SigSet, events: Sender<Event>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stops = 0;
            loop {
                match set.wait() {
                    Ok(Signal::SIGHUP) => {
                        let _ = events.send(Event::Signal(Sig::Reload));
                    }
                    Ok(sig) => {
                        stops += 1;
                        if stops > 1 {
                            eprintln!("iapeer daemon: second {sig}, exiting now");
                            std::process::exit(130);
                        }
                        let _ = events.send(Event::Signal(Sig::Stop));
                    }
                    Err(e) => {
                        tracing::error!("sigwait failed: {e}");
                        return;
                    }
                }
            }
        })?;
    Ok(())
}

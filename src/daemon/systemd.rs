//! `sd_notify` without libsystemd: READY, STATUS, STOPPING and WATCHDOG as
//! datagrams to `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
//! namespace). Silent when the variable is unset.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

#[derive(Debug)]
pub(crate) struct Notifier {
    target: Option<Target>,
    watchdog: Option<Duration>,
}

#[derive(Debug)]
enum Target {
    Path(std::path::PathBuf),
    #[cfg(target_os = "linux")]
    Abstract(Vec<u8>),
}

impl Notifier {
    pub(crate) fn from_env() -> Self {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|s| {
            use std::os::unix::ffi::OsStrExt;
            let bytes = s.as_bytes();
            match bytes.first() {
                #[cfg(target_os = "linux")]
                Some(b'@') => Some(Target::Abstract(bytes[1..].to_vec())),
                Some(b'/') => Some(Target::Path(s.clone().into())),
                _ => None,
            }
        });
        let pid_ok = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|p| p.parse::<u32>().ok() == Some(std::process::id()));
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0 && pid_ok)
            .map(Duration::from_micros);
        Notifier { target, watchdog }
    }

    /// How often to ping: half the watchdog interval.
    pub(crate) fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    pub(crate) fn ready(&self, status: &str) {
        self.send(&format!(
            "READY=1\nSTATUS={status}\nMAINPID={}",
            std::process::id()
        ));
    }

    pub(crate) fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    pub(crate) fn stopping(&self) {
        self.send("STOPPING=1");
    }

    pub(crate) fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send("WATCHDOG=1");
        }
    }

    pub(crate) fn reloading(&self) {
        self.send("RELOADING=1");
    }

    fn send(&self, msg: &str) {
        let Some(target) = &self.target else { return };
        let Ok(sock) = UnixDatagram::unbound() else {
            return;
        };
        let sent = match target {
            Target::Path(p) => sock.send_to(msg.as_bytes(), p).map(|_| ()),
            #[cfg(target_os = "linux")]
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|addr| sock.send_to_addr(msg.as_bytes(), &addr))
                    .map(|_| ())
            }
        };
        if let Err(e) = sent {
            tracing::warn!("sd_notify {msg:?} failed: {e}");
        }
    }
}

//! `iapeer doctor`: what is wrong here, each with its fix. Every check
//! reads; none changes anything. Exit 1 when something must be fixed.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cli::LsArgs;
use crate::cmd::App;
use crate::core::error::Result;
use crate::core::peer::RuntimeKind;

#[derive(Debug, Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Verdict {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
struct Check {
    what: &'static str,
    verdict: Verdict,
    said: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

fn check(
    what: &'static str,
    verdict: Verdict,
    said: impl Into<String>,
    fix: Option<String>,
) -> Check {
    Check {
        what,
        verdict,
        said: said.into(),
        fix,
    }
}

pub(crate) fn run(app: &App, args: LsArgs) -> Result<i32> {
    let c = &app.config;
    let mut checks = Vec::new();
    checks.push(tmux());
    let peers: Vec<_> = crate::store::definitions::load_peers(&c.paths)
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect();
    for (kind, bin, var) in [
        (RuntimeKind::Claude, &c.claude_bin, "claude_bin"),
        (RuntimeKind::Codex, &c.codex_bin, "codex_bin"),
    ] {
        let users = peers.iter().filter(|p| p.runtime == kind).count();
        checks.push(match find_program(Path::new(bin)) {
            Some(path) => check(
                "runtime",
                Verdict::Ok,
                format!("{} is {}", kind.as_str(), path.display()),
                None,
            ),
            None if users == 0 => check(
                "runtime",
                Verdict::Ok,
                format!(
                    "{} ({}) is not installed; no peer uses it",
                    kind.as_str(),
                    bin.to_string_lossy()
                ),
                None,
            ),
            None => check(
                "runtime",
                Verdict::Fail,
                format!(
                    "{} ({}) is not found, and {users} peer(s) use it",
                    kind.as_str(),
                    bin.to_string_lossy()
                ),
                Some(format!(
                    "install it, or set {var} = \"/path/to/{}\" in {} so the daemon finds it too",
                    kind.as_str(),
                    c.config_file.display()
                )),
            ),
        });
    }
    checks.push(home_modes(
        &c.home,
        &[
            &c.paths.state,
            &c.paths.lifecycle,
            &c.paths.peers,
            &c.paths.run,
        ],
    ));
    checks.push(disk(&c.home));
    checks.push(fds(peers.len()));
    checks.push(sockets(c));
    checks.push(user_manager());
    checks.push(daemon(c));
    let failed = checks.iter().any(|c| c.verdict == Verdict::Fail);
    if args.json {
        println!(
            "{}",
            serde_json::json!({"schema": 1, "ok": !failed, "checks": checks})
        );
    } else {
        for ch in &checks {
            let tag = match ch.verdict {
                Verdict::Ok => "ok  ",
                Verdict::Warn => "warn",
                Verdict::Fail => "FAIL",
            };
            println!("{tag}  {:<12} {}", ch.what, ch.said);
            if let Some(fix) = &ch.fix {
                println!("      {:<12} fix: {fix}", "");
            }
        }
    }
    Ok(i32::from(failed))
}

/// `name` as a path, or found on `PATH` as `exec` would.
fn find_program(name: &Path) -> Option<PathBuf> {
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.components().count() > 1 {
        return executable(name).then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| executable(p))
}

fn tmux() -> Check {
    let bin = std::env::var_os("IAPEER_TMUX_BIN").unwrap_or_else(|| "tmux".into());
    match std::process::Command::new(&bin).arg("-V").output() {
        Ok(out) if out.status.success() => check(
            "tmux",
            Verdict::Ok,
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            None,
        ),
        _ => check(
            "tmux",
            Verdict::Fail,
            format!("{} does not run", bin.to_string_lossy()),
            Some("install tmux (apt install tmux, brew install tmux)".into()),
        ),
    }
}

fn home_modes(home: &Path, dirs: &[&PathBuf]) -> Check {
    let me = crate::store::fsutil::my_uid();
    for dir in std::iter::once(&home.to_path_buf()).chain(dirs.iter().copied()) {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        if meta.uid() != me {
            return check(
                "home",
                Verdict::Fail,
                format!("{} belongs to uid {}, not you", dir.display(), meta.uid()),
                Some(format!("chown -R $(id -u) {}", home.display())),
            );
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o022 != 0 {
            return check(
                "home",
                Verdict::Fail,
                format!(
                    "{} is mode {mode:o}: others may change the agents' state (stop, wake, tasks)",
                    dir.display()
                ),
                Some(format!("chmod 700 {}", dir.display())),
            );
        }
        if mode & 0o077 != 0 {
            return check(
                "home",
                Verdict::Warn,
                format!(
                    "{} is mode {mode:o}: others may read the agents' state and tasks",
                    dir.display()
                ),
                Some(format!("chmod 700 {}", dir.display())),
            );
        }
    }
    check(
        "home",
        Verdict::Ok,
        format!("{} is yours, mode 700", home.display()),
        None,
    )
}

fn disk(home: &Path) -> Check {
    match nix::sys::statvfs::statvfs(home) {
        Ok(st) => {
            // The field types differ by platform (u32 on macOS).
            #[allow(clippy::unnecessary_cast)]
            let free = st.blocks_available() as u64 * st.fragment_size() as u64;
            let mib = free / (1024 * 1024);
            if mib < 64 {
                check(
                    "disk",
                    Verdict::Fail,
                    format!("{mib} MiB free under {}", home.display()),
                    Some("free some space: decisions cannot be logged on a full disk".into()),
                )
            } else {
                check("disk", Verdict::Ok, format!("{mib} MiB free"), None)
            }
        }
        Err(e) => check("disk", Verdict::Warn, format!("cannot tell: {e}"), None),
    }
}

fn fds(peers: usize) -> Check {
    let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap_or((0, 0));
    // A pidfd and a log descriptor or two per live peer, the watcher, HTTP.
    let need = 64 + 4 * peers as u64;
    if soft < need {
        check(
            "files",
            Verdict::Warn,
            format!("the open-file limit is {soft}; {peers} peer(s) may need {need}"),
            Some("raise it (ulimit -n, or LimitNOFILE= in the unit)".into()),
        )
    } else {
        check(
            "files",
            Verdict::Ok,
            format!("open-file limit {soft}"),
            None,
        )
    }
}

fn sockets(c: &crate::store::config::Config) -> Check {
    let longest = c.paths.socket(&"x".repeat(crate::core::identity::MAX_LEN));
    let said = format!(
        "tmux sockets in {} ({} bytes at most)",
        c.paths.run.display(),
        longest.as_os_str().len()
    );
    if c.paths.run_relocated {
        check(
            "sockets",
            Verdict::Warn,
            format!("{said}: the home is too deep for socket paths"),
            None,
        )
    } else {
        check("sockets", Verdict::Ok, said, None)
    }
}

fn user_manager() -> Check {
    if cfg!(target_os = "macos") {
        return check("service", Verdict::Ok, "launchd", None);
    }
    let manager = std::process::Command::new("systemctl")
        .args(["--user", "show-environment"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !manager {
        return check(
            "service",
            Verdict::Warn,
            "no systemd user manager: the unit cannot run here",
            Some("log in through a session that has one, or run `iapeer daemon` under another supervisor".into()),
        );
    }
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    let linger = std::process::Command::new("loginctl")
        .args(["show-user", &user, "--property=Linger", "--value"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "yes");
    if linger {
        check(
            "service",
            Verdict::Ok,
            "systemd user manager, lingering",
            None,
        )
    } else {
        check(
            "service",
            Verdict::Warn,
            "systemd user manager, not lingering: agents stop when you log out",
            Some(format!("loginctl enable-linger {user}")),
        )
    }
}

fn daemon(c: &crate::store::config::Config) -> Check {
    let running = crate::daemon::lock::is_running(&c.paths.daemon_lock());
    if !running {
        return check(
            "daemon",
            Verdict::Warn,
            "no daemon is running: nothing parks, relaunches or watches",
            Some("`iapeer daemon`, or enable the service (make install)".into()),
        );
    }
    match crate::http::look(c, std::time::Duration::from_secs(2)) {
        Some(look) => match look.up {
            Ok(()) => check(
                "daemon",
                Verdict::Ok,
                format!("running; dashboard up on {}", look.url),
                None,
            ),
            Err(why) => check(
                "daemon",
                Verdict::Fail,
                format!(
                    "running, but its dashboard at {} does not answer: {why}",
                    look.url
                ),
                Some("see the daemon's diagnostics in logs/daemon/".into()),
            ),
        },
        None => check("daemon", Verdict::Ok, "running", None),
    }
}

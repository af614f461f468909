//! The command line (DESIGN §9). Doc comments here are the help text.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::core::peer;
use crate::core::wake_mode;
use clap::{Args, Parser, Subcommand};

/// Keeps a fleet of AI coding agents alive, lean and explainable.
///
/// State lives under IAPEER_HOME (default ~/.iapeer); every decision is
/// appended to logs/iapeer/lifecycle.log. Settings come from the
/// environment, then $IAPEER_HOME/config.toml (`iapeer config` shows them).
/// Exit codes: 0 done, 1 failed, 2 bad usage/config/input, 3 refused:
/// stopped, 4 refused: crash loop or given up on, 5 refused: external
/// supervisor, 6 wake lock held (retry), 7 pool full, 8 `wait` timed out.
#[derive(Debug, Parser)]
#[command(
    name = "iapeer",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// More diagnostics on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the supervisor in the foreground (what the service units run).
    Daemon(DaemonArgs),
    /// Define a peer: its name, working folder, runtime and policy.
    Add(AddArgs),
    /// Remove a peer's definition and every state file about it.
    Rm(RmArgs),
    /// Change a peer's definition in place (atomically, validated as
    /// `add`); a running daemon applies it at once.
    Set(SetArgs),
    /// List the defined peers.
    Ls(LsArgs),
    /// Bring a peer up (or deliver to its live session).
    Wake(WakeArgs),
    /// Halt a peer: mark it stopped and park its live session (at once, or
    /// with --at-turn-end once its turn is over).
    Stop(StopArgs),
    /// Lift a stop; an `always` peer is brought back up.
    Start(Targets),
    /// Clear a peer's crash-loop guard (and lift a give-up).
    Reset(Targets),
    /// End a peer's session now and bring it back fresh now.
    Restart(Targets),
    /// Make the peer's next natural wake fresh (a soft reload).
    Refresh(Targets),
    /// Stop the agent's current turn, as its runtime's key does (Esc for
    /// Claude Code and Codex, Ctrl-C for a shell); the session goes on.
    Interrupt(Targets),
    /// From inside an agent's session: end it; it comes back fresh.
    SelfFresh,
    /// State and metrics per peer.
    Status(StatusArgs),
    /// Show what a wake would decide right now, acting on nothing.
    Explain(ExplainArgs),
    /// Read the decision log across rotations.
    Log(LogArgs),
    /// How a peer's last session ended and why the next came up as it did
    /// (-v shows the log lines behind the answer).
    Why(WhyArgs),
    /// The decision log as a live, lossless stream of JSON lines.
    Events(EventsArgs),
    /// Pools of interchangeable agents.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Hand a task to a free member of a pool (or wake one), printing it;
    /// when every member is busy and the pool is at its max, queue it for
    /// the member with the fewest waiting (exit 7 with --no-queue).
    Dispatch(DispatchArgs),
    /// Every effective setting and where it came from (the environment,
    /// config.toml, or the default).
    Config(LsArgs),
    /// What is wrong here, each with its fix (exit 1 when something must
    /// be fixed).
    Doctor(LsArgs),
    /// The agent's terminal (a tmux client); detaching (C-b d) leaves it
    /// running.
    Attach(AttachArgs),
    /// The last lines of the agent's screen.
    Peek(PeekArgs),
    /// Tasks waiting for a busy peer, in the order they will be
    /// delivered (one per turn, once its turn is over); `queue rm NAME
    /// TASK` removes one.
    Queue(QueueArgs),
    /// Wait until a peer is ready, idle, ended, or has no queued task;
    /// exit 8 on timeout.
    Wait(WaitArgs),
    /// Shell completions, generated from these definitions.
    Completions(CompletionsArgs),
    /// The man page (roff), generated from these definitions.
    Man,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Let IAPEER_HTTP_ADDR be a non-loopback address (a bearer token from
    /// IAPEER_HTTP_TOKEN_FILE is then required).
    #[arg(long)]
    pub allow_remote: bool,
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Define a pool: members PREFIX+INDEX for INDEX in [start, start+max).
    Add(PoolAddArgs),
    /// Remove a pool and its members' definitions and state.
    Rm(RmArgs),
    /// List the pools and their members' states.
    Ls(LsArgs),
}

#[derive(Debug, Args)]
pub struct PoolAddArgs {
    pub name: String,
    /// Members are named PREFIX followed by their index.
    #[arg(long)]
    pub prefix: String,
    #[arg(long, default_value_t = 0)]
    pub start_index: u32,
    /// Members kept up at all times.
    #[arg(long, default_value_t = 0)]
    pub min: u32,
    /// Members at most.
    #[arg(long)]
    pub max: u32,
    #[command(flatten)]
    pub agent: AgentArgs,
    /// Members above --min idle this long are parked (default
    /// IAPEER_IDLE_SECS).
    #[arg(long, value_name = "SECS")]
    pub idle_secs: Option<u64>,
    /// A member is free again this long after its last task or activity
    /// (default 10).
    #[arg(long, value_name = "SECS")]
    pub quiet_secs: Option<u64>,
}

#[derive(Debug, Args)]
pub struct DispatchArgs {
    pub pool: String,
    /// The text typed into the member.
    #[arg(long, value_name = "TEXT")]
    pub task: String,
    #[arg(long)]
    pub topic: Option<String>,
    #[arg(long)]
    pub json: bool,
    /// When every member is busy and the pool is at its max, exit 7
    /// rather than queue the task for the member with the fewest waiting.
    #[arg(long)]
    pub no_queue: bool,
}

#[derive(Debug, Args)]
pub struct WhyArgs {
    pub name: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Keep streaming new lines as they are written (across rotations).
    #[arg(long, short)]
    pub follow: bool,
    /// Start at the oldest retained line (the default without --follow).
    #[arg(long, conflicts_with = "since")]
    pub from_start: bool,
    /// Start at the first line at or after this (90s, 15m, 1h, 2d, or an
    /// RFC 3339 time).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
}

#[derive(Debug, Args)]
pub struct NameArg {
    pub name: String,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    pub name: String,
    /// Look only: keys typed are not sent to the agent.
    #[arg(long, short)]
    pub read_only: bool,
}

#[derive(Debug, Args)]
pub struct PeekArgs {
    pub name: String,
    /// How many lines, from the bottom of the screen.
    #[arg(short = 'n', long = "lines", default_value_t = 40)]
    pub lines: usize,
    /// Print the screen again each time it changes, until the session ends.
    #[arg(long, short)]
    pub follow: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WaitFor {
    Ready,
    Idle,
    Ended,
    QueueEmpty,
}

impl WaitFor {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitFor::Ready => "ready",
            WaitFor::Idle => "idle",
            WaitFor::Ended => "ended",
            WaitFor::QueueEmpty => "queue-empty",
        }
    }
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    pub name: String,
    #[arg(long = "for", value_enum)]
    pub r#for: WaitFor,
    /// Give up after this long (90s, 15m, 1h; default 1h): exit 8.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
}

/// The peers a verb acts on: names, every peer, or a pool's members.
#[derive(Debug, Args)]
pub struct Targets {
    #[arg(value_name = "NAME", required_unless_present_any = ["all", "pool"])]
    pub names: Vec<String>,
    /// Every defined peer.
    #[arg(long)]
    pub all: bool,
    /// Every member of this pool.
    #[arg(long, value_name = "POOL")]
    pub pool: Option<String>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub targets: Targets,
    /// Let the agent finish its turn first (waiting at most
    /// IAPEER_MAX_AGE_GRACE_SECS); each peer in turn.
    #[arg(long)]
    pub at_turn_end: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeArg {
    Claude,
    Codex,
    Shell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyArg {
    Lazy,
    Always,
}

/// How an agent is launched: shared by `add` and `pool add`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The agent's working folder.
    #[arg(long)]
    pub cwd: PathBuf,
    #[arg(long, value_enum, default_value = "claude")]
    pub runtime: RuntimeArg,
    /// Typed into every fresh session that starts without a task.
    #[arg(long, value_name = "TEXT")]
    pub initial_prompt: Option<String>,
    /// shell runtime: text on screen that means the program is ready.
    #[arg(long, value_name = "TEXT")]
    pub ready_pattern: Option<String>,
    /// shell: the command to run; claude/codex: extra arguments.
    #[arg(last = true, value_name = "ARGV")]
    pub argv: Vec<String>,
}

impl From<PolicyArg> for peer::Policy {
    fn from(p: PolicyArg) -> Self {
        match p {
            PolicyArg::Lazy => peer::Policy::Lazy,
            PolicyArg::Always => peer::Policy::Always,
        }
    }
}

impl From<RuntimeArg> for peer::RuntimeKind {
    fn from(r: RuntimeArg) -> Self {
        match r {
            RuntimeArg::Claude => peer::RuntimeKind::Claude,
            RuntimeArg::Codex => peer::RuntimeKind::Codex,
            RuntimeArg::Shell => peer::RuntimeKind::Shell,
        }
    }
}

#[derive(Debug, Args)]
pub struct AddArgs {
    pub name: String,
    #[command(flatten)]
    pub agent: AgentArgs,
    /// lazy: sleeps until a message wakes it; always: kept up.
    #[arg(long, value_enum, default_value = "lazy")]
    pub policy: PolicyArg,
    /// A human-facing peer: it never auto-freshes.
    #[arg(long)]
    pub conversational: bool,
    /// Park after this many idle seconds (default IAPEER_IDLE_SECS).
    #[arg(long, value_name = "SECS")]
    pub idle_secs: Option<u64>,
    /// Park sessions older than this (default IAPEER_MAX_AGE_SECS).
    #[arg(long, value_name = "SECS")]
    pub max_age_secs: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DialogsArg {
    Auto,
    Manual,
}

/// A definition key `set --unset` clears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UnsetKey {
    IdleSecs,
    MaxAgeSecs,
    InitialPrompt,
    ReadyPattern,
    ExternalSupervisor,
    Command,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    pub name: String,
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub runtime: Option<RuntimeArg>,
    #[arg(long, value_enum)]
    pub policy: Option<PolicyArg>,
    /// true: a human-facing peer that never auto-freshes.
    #[arg(long, value_name = "BOOL")]
    pub conversational: Option<bool>,
    #[arg(long, value_name = "SECS")]
    pub idle_secs: Option<u64>,
    #[arg(long, value_name = "SECS")]
    pub max_age_secs: Option<u64>,
    #[arg(long, value_name = "TEXT")]
    pub initial_prompt: Option<String>,
    #[arg(long, value_name = "TEXT")]
    pub ready_pattern: Option<String>,
    /// Another supervisor owns the peer (launchd, systemd, …).
    #[arg(long, value_name = "NAME")]
    pub external_supervisor: Option<String>,
    #[arg(long, value_enum)]
    pub dialogs: Option<DialogsArg>,
    /// Clear a key back to its default (repeatable).
    #[arg(long, value_enum, value_name = "KEY")]
    pub unset: Vec<UnsetKey>,
    /// shell: the command to run; claude/codex: extra arguments.
    #[arg(last = true, value_name = "ARGV")]
    pub argv: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    pub name: String,
    /// Also end a live session.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WakeArgs {
    pub name: String,
    /// What the work is about; a new topic starts a parked executor fresh.
    #[arg(long)]
    pub topic: Option<String>,
    /// Text typed into the session once it is up.
    #[arg(long, value_name = "TEXT")]
    pub task: Option<String>,
    /// Start fresh, whatever the markers say.
    #[arg(long, conflicts_with = "resume")]
    pub fresh: bool,
    /// Resume the last conversation; fails if there is none.
    #[arg(long)]
    pub resume: bool,
    /// Print {schema, name, status, woke, mode, cause, runtime, session,
    /// reason, latency_ms}.
    #[arg(long)]
    pub json: bool,
    /// Return once the decision is logged, printing the session id; the
    /// boot and the delivery go on in the background.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct QueueArgs {
    #[command(subcommand)]
    pub action: Option<QueueAction>,
    /// Only this peer's queue.
    pub name: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum QueueAction {
    /// Remove a task that waits (TASK: its name, as `iapeer queue` shows it).
    Rm(QueueRmArgs),
}

#[derive(Debug, Args)]
pub struct QueueRmArgs {
    pub name: String,
    pub task: String,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    pub name: Option<String>,
    /// The same as `-o json`.
    #[arg(long)]
    pub json: bool,
    /// table (the default), wide (session, pid, cause, exact times) or json.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: OutputArg,
    /// Redraw whenever a decision is logged (and every few seconds, for
    /// the ages), until interrupted.
    #[arg(short, long)]
    pub watch: bool,
    /// Colour the states: auto (on a terminal, unless NO_COLOR is set),
    /// always or never.
    #[arg(long, value_enum, default_value = "auto")]
    pub color: ColorArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputArg {
    Table,
    Wide,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorArg {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    pub name: String,
    /// The topic the wake would carry.
    #[arg(long)]
    pub topic: Option<String>,
    /// As if the wake asked for a fresh start.
    #[arg(long, conflicts_with = "resume")]
    pub fresh: bool,
    /// As if the wake asked to resume.
    #[arg(long)]
    pub resume: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Only lines about this peer.
    #[arg(long, value_name = "NAME")]
    pub peer: Option<String>,
    /// Only lines at or after this: a duration back from now (90s, 15m, 1h,
    /// 2d), an RFC 3339 time, HH:MM (local time), today or yesterday.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only lines before this (same forms as --since).
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Only this kind of event: wake, ready, supervise, stop, start, reset,
    /// daemon.
    #[arg(long, value_name = "KIND")]
    pub ev: Option<String>,
    /// Only lines with this cause (crash-or-self-close, crash-loop, …).
    #[arg(long)]
    pub cause: Option<String>,
    /// Print the raw JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Only the last N matching lines (with --follow: N lines of history
    /// before the new ones).
    #[arg(short = 'n', long = "lines", value_name = "N")]
    pub lines: Option<usize>,
    /// Print new matching lines as they are written, starting at the end
    /// of the log (add -n for some history first).
    #[arg(long, short)]
    pub follow: bool,
}

impl Command {
    /// Verbs that only read and print: safe to end at once when the
    /// reader of their output goes away.
    pub fn only_reads(&self) -> bool {
        matches!(
            self,
            Command::Ls(_)
                | Command::Status(_)
                | Command::Explain(_)
                | Command::Log(_)
                | Command::Why(_)
                | Command::Events(_)
                | Command::Config(_)
                | Command::Doctor(_)
                | Command::Peek(_)
                | Command::Completions(_)
                | Command::Man
                | Command::Pool(PoolCommand::Ls(_))
                | Command::Queue(QueueArgs { action: None, .. })
        )
    }
}

/// `--fresh` / `--resume` as the request a wake makes (neither: a message).
pub fn request(fresh: bool, resume: bool) -> Option<wake_mode::Request> {
    match (fresh, resume) {
        (true, _) => Some(wake_mode::Request::Fresh),
        (_, true) => Some(wake_mode::Request::Resume),
        _ => None,
    }
}

/// Anything clap gives us as an OsString that must be UTF-8.
pub fn utf8(arg: &str, value: OsString) -> crate::Result<String> {
    value
        .into_string()
        .map_err(|v| crate::Error::Usage(format!("{arg} {v:?} is not valid UTF-8")))
}

/// A path argument made absolute against the current directory.
pub fn absolute(path: PathBuf) -> crate::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path);
    }
    let cwd = std::env::current_dir().map_err(|e| crate::Error::io(".", "resolve", e))?;
    Ok(cwd.join(path))
}

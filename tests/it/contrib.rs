//! `contrib/`: the Prometheus scrape config and alert rules, checked and
//! exercised by the real `promtool`; the Grafana dashboard and the alerts
//! held to the metrics a real daemon serves; the Vector config held to
//! the log it ships.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{code, wait_until, Home};

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib")
}

/// `promtool`, or `None` when skipping it on purpose.
fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("IAPEER_SKIP_PROMTOOL").is_some(),
            "promtool is missing: `make test` installs Debian's prometheus package; set IAPEER_SKIP_PROMTOOL=1 to skip on purpose"
        );
        return None;
    }
    Some("promtool")
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_scrape_config_and_alert_rules_are_valid_and_fire_when_they_should() {
    let Some(promtool) = promtool() else { return };
    let dir = assert_fs::TempDir::new().unwrap();
    for f in ["prometheus.yml", "alerts.yml", "alerts_test.yml"] {
        std::fs::copy(contrib().join("prometheus").join(f), dir.path().join(f)).unwrap();
    }
    // The token file the scrape config names, as an operator would copy it.
    std::fs::write(dir.path().join("iapeer.token"), "0123456789abcdef0123\n").unwrap();
    for args in [
        &["check", "config", "prometheus.yml"][..],
        &["check", "rules", "alerts.yml"],
        &["test", "rules", "alerts_test.yml"],
    ] {
        let (ok, text) = run(Command::new(promtool).args(args).current_dir(dir.path()));
        assert!(ok, "promtool {}: {text}", args.join(" "));
    }
    // The unit tests can fail: a rule that never fires is caught.
    let broken = std::fs::read_to_string(dir.path().join("alerts.yml"))
        .unwrap()
        .replace("> 600", "> 6000");
    std::fs::write(dir.path().join("alerts.yml"), broken).unwrap();
    let (ok, _) = run(Command::new(promtool)
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(dir.path()));
    assert!(!ok, "a waiting alert that fires too late fails its test");
}

/// The `iapeer_…` metric families an expression names (`_bucket`, `_sum`
/// and `_count` folded into their histogram).
fn families_named(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("iapeer_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_owned();
        out.insert(family);
    }
    out
}

#[test]
fn a_real_scrape_passes_promtool_and_serves_every_metric_contrib_uses() {
    let promtool = promtool();
    let mut home = Home::new();
    home.add("sh", &["--runtime", "shell", "--", "sleep", "600"]);
    home.add("alice", &[]);
    home.set("IAPEER_HTTP_ADDR", "127.0.0.1:0");
    let _d = home.daemon();
    // A bring-up and a session's end, so the histograms have samples.
    assert_eq!(code(&home.run(&["wake", "sh"])), 0);
    assert_eq!(code(&home.run(&["stop", "sh"])), 0);
    assert_eq!(code(&home.run(&["start", "sh"])), 0);
    assert_eq!(code(&home.run(&["wake", "alice"])), 0);
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(home.path().join("state/http.json")).unwrap(),
    )
    .unwrap();
    let url = doc["url"].as_str().unwrap().to_owned();
    let token = std::fs::read_to_string(home.path().join("state/http.token")).unwrap();
    let mut text = String::new();
    wait_until(
        Duration::from_secs(10),
        "a scrape with the lifetime",
        || {
            text = ureq::get(&format!("{url}metrics"))
                .set("Authorization", &format!("Bearer {}", token.trim()))
                .call()
                .unwrap()
                .into_string()
                .unwrap();
            text.contains("iapeer_session_lifetime_seconds_count{peer=\"sh\"} 1")
        },
    );
    let served: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    for file in ["prometheus/alerts.yml", "grafana/iapeer.json"] {
        let used = families_named(&std::fs::read_to_string(contrib().join(file)).unwrap());
        assert!(!used.is_empty(), "{file} names metrics");
        let missing: Vec<_> = used.difference(&served).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics not served: {missing:?}"
        );
    }
    let grafana: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(contrib().join("grafana/iapeer.json")).unwrap(),
    )
    .expect("the Grafana dashboard is JSON");
    assert!(grafana["panels"].as_array().is_some_and(|p| p.len() >= 6));
    let Some(promtool) = promtool else { return };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Vector is not packaged by Debian, so its own `vector validate` cannot
/// run here: the config is held to what it reads instead.
#[test]
fn the_vector_config_ships_the_log_iapeer_writes() {
    let text = std::fs::read_to_string(contrib().join("vector/vector.toml")).unwrap();
    let doc: toml::Table = toml::from_str(&text).expect("vector.toml is TOML");
    let source = &doc["sources"]["iapeer_lifecycle"];
    let include = source["include"].as_array().unwrap()[0].as_str().unwrap();
    let home = Home::new();
    let log = home.log_path();
    let relative = log.strip_prefix(home.path()).unwrap().to_str().unwrap();
    assert_eq!(
        include,
        format!("${{IAPEER_HOME}}/{relative}*"),
        "it reads the log and its rotations"
    );
    // The fields it labels by are in every line of the schema.
    let schema = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/log/schema.md"),
    )
    .unwrap();
    for field in ["ts", "ev", "identity"] {
        assert!(
            schema.contains(&format!("| `{field}`")),
            "{field} is in the schema"
        );
        assert!(text.contains(&format!("parsed.{field}")), "{field} is read");
    }
    assert_eq!(doc["sinks"]["loki"]["type"].as_str(), Some("loki"));
}

//! `iapeer config`: every effective setting and where it came from, so
//! the daemon under a service manager and the operator's shell can be
//! seen to agree.

use serde::Serialize;

use crate::cli::LsArgs;
use crate::cmd::App;
use crate::core::error::Result;
use crate::store::settings::SETTINGS;

#[derive(Debug, Serialize)]
struct Shown {
    key: String,
    var: &'static str,
    value: String,
    /// `env`, `config.toml:LINE` or `default`.
    source: String,
}

pub(crate) fn run(app: &App, args: LsArgs) -> Result<i32> {
    let c = &app.config;
    let shown: Vec<Shown> = SETTINGS
        .iter()
        .map(|s| {
            let (value, source) = match (std::env::var(s.var).ok(), c.from_file.get(s.var)) {
                (Some(v), _) => (v, "env".to_owned()),
                (None, Some(f)) => (f.value.clone(), format!("config.toml:{}", f.line)),
                (None, None) => (s.default.to_owned(), "default".to_owned()),
            };
            // Paths as resolved, whatever said them.
            let value = match s.var {
                "CLAUDE_CONFIG_DIR" => c.claude_config_dir.display().to_string(),
                "CODEX_HOME" => c.codex_home.display().to_string(),
                _ => value,
            };
            Shown {
                key: s.key(),
                var: s.var,
                value,
                source,
            }
        })
        .collect();
    if args.json {
        let doc = serde_json::json!({
            "schema": 1,
            "home": c.home,
            "config_file": c.config_file,
            "config_file_exists": c.config_file.exists(),
            "settings": shown,
        });
        println!("{doc}");
        return Ok(0);
    }
    println!(
        "home: {}\nconfig file: {}{}\n",
        c.home.display(),
        c.config_file.display(),
        if c.config_file.exists() {
            ""
        } else {
            " (none: defaults and the environment only)"
        }
    );
    let mut rows = vec![["KEY", "VALUE", "FROM", "VARIABLE"]
        .map(String::from)
        .to_vec()];
    for s in &shown {
        let value = if s.value.is_empty() {
            "-".to_owned()
        } else {
            s.value.clone()
        };
        rows.push(vec![
            s.key.clone(),
            value,
            s.source.clone(),
            s.var.to_owned(),
        ]);
    }
    print!("{}", super::table(&rows));
    Ok(0)
}

//! The documentation stands alone in a clone: every relative link in the
//! README and docs/ names a file in the repository, and docs/DESIGN.md is
//! the contract as the project keeps it (the copy beside the checkout,
//! where there is one, says the same).

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The targets of `[text](target)` links that are not URLs or anchors.
fn relative_links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].split('#').next().unwrap_or("");
        if !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
            out.push(target.to_owned());
        }
        rest = &rest[end..];
    }
    out
}

#[test]
fn every_link_in_the_readme_and_docs_stays_in_the_repository() {
    let mut files = vec![root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for link in relative_links(&text) {
            let target = file.parent().unwrap().join(&link);
            let inside = target
                .canonicalize()
                .is_ok_and(|t| t.starts_with(root().canonicalize().unwrap()));
            if !inside {
                broken.push(format!("{}: {link}", file.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links that a clone cannot follow: {broken:#?}"
    );
}

#[test]
fn the_contract_in_docs_is_the_shared_one() {
    let shared = root().join("../shared/DESIGN.md");
    let Ok(theirs) = std::fs::read_to_string(&shared) else {
        // A clone on its own: docs/DESIGN.md is the contract.
        return;
    };
    let ours = std::fs::read_to_string(root().join("docs/DESIGN.md")).unwrap();
    assert!(
        ours == theirs,
        "docs/DESIGN.md differs from {}: copy it in",
        shared.display()
    );
}

fn doc(name: &str) -> String {
    std::fs::read_to_string(root().join("docs").join(name)).unwrap()
}

/// Every setting the code reads from config.toml is in the reference,
/// with its key and its default.
#[test]
fn the_configuration_reference_names_every_setting_and_its_default() {
    let text = doc("configuration.md");
    let mut missing = Vec::new();
    for s in iapeer::store::settings::SETTINGS {
        let default = if s.default.is_empty() {
            "none".to_owned()
        } else {
            format!("`{}`", s.default)
        };
        let row = format!("| `{}` | `{}` | {default} |", s.var, s.key());
        if !text.contains(&row) {
            missing.push(row);
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks {missing:#?}"
    );
}

/// Every verb clap knows is in the CLI reference, and every exit code.
#[test]
fn the_cli_reference_names_every_verb_and_exit_code() {
    use clap::CommandFactory;
    let text = doc("cli.md");
    let mut missing: Vec<String> = iapeer::cli::Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .filter(|name| {
            !text.contains(&format!("| `{name}")) && !text.contains(&format!("`{name}`"))
        })
        .collect();
    for code in 0..=8 {
        if !text.contains(&format!("| {code} |")) {
            missing.push(format!("exit code {code}"));
        }
    }
    assert!(missing.is_empty(), "docs/cli.md lacks {missing:?}");
    let help = {
        let mut cmd = iapeer::cli::Cli::command();
        cmd.render_long_help().to_string()
    };
    assert!(
        help.contains("8 `wait` timed out"),
        "--help stops short: {help}"
    );
}

/// Every kind of state file is in the file reference.
#[test]
fn the_file_reference_names_every_state_file() {
    let text = doc("files.md");
    let missing: Vec<&str> = iapeer::store::markers::extensions()
        .into_iter()
        .filter(|ext| !text.contains(&format!("<id>.{ext}")))
        .collect();
    assert!(missing.is_empty(), "docs/files.md lacks {missing:?}");
}

/// Every `config.toml` example in the README is one iapeer takes.
#[test]
fn the_readmes_config_examples_are_valid_config_files() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let blocks: Vec<&str> = readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    assert!(!blocks.is_empty(), "the README shows config.toml");
    for block in blocks {
        let home = crate::support::Home::new();
        std::fs::write(home.path().join("config.toml"), block).unwrap();
        let out = home.run(&["config"]);
        assert_eq!(
            crate::support::code(&out),
            0,
            "{block}\n{}",
            crate::support::stderr(&out)
        );
    }
}

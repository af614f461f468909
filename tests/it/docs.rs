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

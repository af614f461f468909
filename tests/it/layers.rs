//! The source tree's layers hold: dependencies point one way — front ends
//! (`cmd`, `cli`, `daemon`, `http`) → `engine` → `runtime` → `os`/`store`
//! → `core`, never back — and no source file imports one that imports it
//! back. Read from the code as text: every `crate::…` and `super::…` path
//! outside comments is an import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level room and its floor: a room may use rooms on lower floors
/// only. `os` and `store` share a floor and do not use each other.
const FLOORS: &[(&str, u8)] = &[
    ("core", 0),
    ("os", 1),
    ("store", 1),
    ("runtime", 2),
    ("engine", 3),
    ("diagnostics", 4),
    ("http", 4),
    ("daemon", 5),
    ("cli", 6),
    ("cmd", 7),
];

fn floor(room: &str) -> Option<u8> {
    FLOORS.iter().find(|(r, _)| *r == room).map(|(_, f)| *f)
}

/// Every `.rs` file under `src`, as its path relative to `src`.
fn sources(src: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path.strip_prefix(src).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// The module path of a file: `engine/wake.rs` → `engine::wake`,
/// `store/log/mod.rs` → `store::log`.
fn module_of(file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The code without comments and string literals (a doc link or a message
/// naming a module is not an import).
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = ' ';
        let mut kept = String::new();
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if !in_str && c == '/' && chars.get(i + 1) == Some(&'/') {
                break;
            }
            if c == '"' && prev != '\\' && !(prev == '\'' && chars.get(i + 1) == Some(&'\'')) {
                in_str = !in_str;
            } else if !in_str {
                kept.push(c);
            }
            prev = if prev == '\\' && c == '\\' { ' ' } else { c };
            i += 1;
        }
        out.push_str(&kept);
        out.push('\n');
    }
    out
}

/// The module paths a file's code names: `crate::a::b::{c, d::e}` gives
/// `a::b::c` and `a::b::d::e`; `super::x` is resolved against the file.
fn imports(module: &[String], is_mod_rs: bool, code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (start, _) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        if start > 0 {
            let before = code[..start].chars().next_back().unwrap();
            if before.is_alphanumeric() || before == '_' || before == ':' {
                continue;
            }
        }
        let (base, rest) = if code[start..].starts_with("crate::") {
            (Vec::new(), &code[start + 7..])
        } else {
            // `super` of `a/b.rs` is `a`; of `a/b/mod.rs` it is `a` too.
            let mut base = module.to_vec();
            if !is_mod_rs || !base.is_empty() {
                base.pop();
            }
            (base, &code[start + 7..])
        };
        let path: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let mut segs: Vec<String> = base;
        segs.extend(
            path.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
        let after = &rest[path.len()..];
        if path.ends_with("::") && after.starts_with('{') {
            let inner: String = after[1..].chars().take_while(|c| *c != '}').collect();
            for item in inner.split(',') {
                let first: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let mut s = segs.clone();
                s.extend(
                    first
                        .split("::")
                        .filter(|x| !x.is_empty() && *x != "self")
                        .map(str::to_owned),
                );
                out.push(s);
            }
        } else {
            out.push(segs);
        }
    }
    out
}

/// The file a module path lands in: the longest prefix that is a file.
fn file_of(files: &BTreeSet<PathBuf>, path: &[String]) -> Option<PathBuf> {
    (1..=path.len()).rev().find_map(|n| {
        let joined = path[..n].join("/");
        [
            PathBuf::from(format!("{joined}.rs")),
            PathBuf::from(format!("{joined}/mod.rs")),
        ]
        .into_iter()
        .find(|f| files.contains(f))
    })
}

/// What is wrong with the tree under `src`: back-imports and cycles.
fn problems(src: &Path) -> Vec<String> {
    let files: BTreeSet<PathBuf> = sources(src).into_iter().collect();
    let mut problems = Vec::new();
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for file in &files {
        let module = module_of(file);
        let Some(room) = module.first().cloned() else {
            continue;
        };
        let text = std::fs::read_to_string(src.join(file)).unwrap();
        let is_mod_rs = file.ends_with("mod.rs");
        for import in imports(&module, is_mod_rs, &code_only(&text)) {
            let Some(to_room) = import.first() else {
                continue;
            };
            if matches!(room.as_str(), "lib" | "main") {
                continue;
            }
            match (floor(&room), floor(to_room)) {
                (Some(a), Some(b)) if to_room != &room && b >= a => problems.push(format!(
                    "{} (floor {a}) imports crate::{} (floor {b}): a layer may only use lower ones",
                    file.display(),
                    import.join("::")
                )),
                (None, _) => problems.push(format!(
                    "{} is in no layer: add its room to FLOORS",
                    file.display()
                )),
                _ => {}
            }
            if let Some(target) = file_of(&files, &import) {
                if &target != file {
                    edges.entry(file.clone()).or_default().insert(target);
                }
            }
        }
    }
    // A cycle: a file that reaches itself.
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<(PathBuf, Vec<PathBuf>)> = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, trail)) = stack.pop() {
            for next in edges.get(&at).into_iter().flatten() {
                // Once per cycle, from its first file by name.
                if next == start && trail.iter().min() == Some(start) {
                    let names: Vec<String> =
                        trail.iter().map(|p| p.display().to_string()).collect();
                    problems.push(format!(
                        "a cycle: {} → {}",
                        names.join(" → "),
                        start.display()
                    ));
                } else if next != start && seen.insert(next.clone()) {
                    let mut t = trail.clone();
                    t.push(next.clone());
                    stack.push((next.clone(), t));
                }
            }
        }
    }
    problems.sort();
    problems.dedup();
    problems
}

#[test]
fn dependencies_point_one_way_and_no_file_imports_itself_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = problems(&src);
    assert!(
        found.is_empty(),
        "the layers are broken:\n{}",
        found.join("\n")
    );
}

/// The checker itself: a deliberate back-import and a cycle are seen.
#[test]
fn a_back_import_and_a_cycle_are_caught() {
    let tree = assert_fs::TempDir::new().unwrap();
    let src = tree.path();
    let write = |p: &str, text: &str| {
        let path = src.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("lib.rs", "pub mod core;\npub mod engine;\n");
    write("core/mod.rs", "pub mod a;\npub mod b;\n");
    write(
        "core/a.rs",
        "// crate::engine in a comment is fine\nuse crate::engine::wake::{self, Woke};\nuse super::b::B;\n",
    );
    write(
        "core/b.rs",
        "pub struct B;\nfn f() { let _ = crate::core::a::x(); }\n",
    );
    write("engine/mod.rs", "pub mod wake;\n");
    write(
        "engine/wake.rs",
        "use crate::core::{a, b::B};\nconst S: &str = \"crate::cmd\";\n",
    );
    let found = problems(src);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("core/a.rs (floor 0) imports crate::engine::wake")),
        "{found:#?}"
    );
    assert!(
        found.iter().any(|p| p.starts_with("a cycle:")
            && p.contains("core/a.rs")
            && p.contains("core/b.rs")),
        "{found:#?}"
    );
    assert!(
        !found.iter().any(|p| p.contains("crate::cmd")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .filter(|p| p.contains(" imports "))
            .all(|p| p.starts_with("core/a.rs ")),
        "only the back-import is one: {found:#?}"
    );
}

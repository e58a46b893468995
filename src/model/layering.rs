//! Enforces the model's layering (the list in `mod.rs`): a module's code
//! names only modules listed before it, through `crate::model::NAME`,
//! `super::NAME` or a name `mod.rs` re-exports. Test code is exempt: the
//! `#[cfg(test)] mod NAME;` files and the inline `#[cfg(test)] mod NAME {`
//! that ends a file may drive a module through the device above it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One source file: its module path below `model` (`device/dma.rs` is
/// `["device", "dma"]`, `mod.rs` is `[]`) and its text.
struct Source {
    module: Vec<String>,
    text: String,
}

/// The layer list of `mod.rs`'s doc comment, bottom first: its
/// "//! - `NAME`: ..." lines.
fn layers(mod_rs: &str) -> Vec<String> {
    mod_rs
        .lines()
        .filter_map(|l| l.strip_prefix("//! - `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

/// Names `mod.rs` re-exports (`pub use NAME::{A, B};`), to their module.
fn reexports(mod_rs: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for line in mod_rs.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, items)) = rest.split_once("::") else {
            continue;
        };
        let items = items
            .trim_end_matches(';')
            .trim_matches(|c| c == '{' || c == '}');
        for item in items.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            names.insert(item.to_string(), module.to_string());
        }
    }
    names
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The identifiers a path continues with after `at`: one name, or each
/// first name of a `{...}` group.
fn names_after(s: &str) -> Vec<&str> {
    match s.strip_prefix('{') {
        Some(group) => group[..group.find('}').unwrap_or(group.len())]
            .split(',')
            .map(|i| ident_at(i.trim()))
            .filter(|i| !i.is_empty())
            .collect(),
        None => vec![ident_at(s)],
    }
}

/// The file's production code: comments dropped, and cut where an inline
/// test module starts.
fn production_code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" {
            let next = lines.peek().map_or("", |l| l.trim());
            if next.starts_with("mod ") && next.ends_with('{') {
                break;
            }
        }
        out.push_str(line.split("//").next().unwrap_or(""));
        out.push('\n');
    }
    out
}

/// Model modules (top-level names) that `src` names, with how it names
/// them.
fn imports(src: &Source, reexported: &BTreeMap<String, String>) -> BTreeSet<(String, String)> {
    let code = production_code(&src.text);
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::model::") {
        for name in names_after(&code[i + "crate::model::".len()..]) {
            let module = reexported.get(name).map_or(name, String::as_str);
            found.insert((module.to_string(), format!("crate::model::{name}")));
        }
    }
    for (i, _) in code.match_indices("super::") {
        // Only the first `super::` of a chain.
        if code[..i].ends_with("super::") {
            continue;
        }
        let mut rest = &code[i..];
        let mut up = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            rest = r;
            up += 1;
        }
        // `super` of a file below a module stays inside that module.
        if up < src.module.len() {
            continue;
        }
        for name in names_after(rest) {
            let module = reexported.get(name).map_or(name, String::as_str);
            found.insert((module.to_string(), format!("super::{name}")));
        }
    }
    found
}

/// Every import that does not point down the layer list, as a message.
fn violations(sources: &[Source]) -> Vec<String> {
    let Some(root) = sources.iter().find(|s| s.module.is_empty()) else {
        return vec!["no mod.rs among the sources".into()];
    };
    let order = layers(&root.text);
    let reexported = reexports(&root.text);
    let rank = |m: &str| order.iter().position(|l| l == m);
    // Files that `#[cfg(test)] mod NAME;` declares, by module path.
    let mut test_only: Vec<Vec<String>> = Vec::new();
    for s in sources {
        let mut lines = s.text.lines().map(str::trim).peekable();
        while let Some(line) = lines.next() {
            if line != "#[cfg(test)]" {
                continue;
            }
            if let Some(name) = lines.peek().and_then(|l| l.strip_prefix("mod ")) {
                if let Some(name) = name.strip_suffix(';') {
                    let mut m = s.module.clone();
                    m.push(name.to_string());
                    test_only.push(m);
                }
            }
        }
    }
    let mut bad = Vec::new();
    for s in sources.iter().filter(|s| !s.module.is_empty()) {
        if test_only.iter().any(|t| s.module.starts_with(t)) {
            continue;
        }
        let me = &s.module[0];
        let file = s.module.join("/");
        let Some(my_rank) = rank(me) else {
            bad.push(format!(
                "{file}.rs: module `{me}` is not in the layer list of mod.rs ({order:?})"
            ));
            continue;
        };
        for (module, how) in imports(s, &reexported) {
            if module == *me {
                continue;
            }
            match rank(&module) {
                Some(r) if r < my_rank => {}
                Some(_) => bad.push(format!(
                    "{file}.rs names `{how}`: module `{module}` is not below `{me}` in {order:?}"
                )),
                None => bad.push(format!(
                    "{file}.rs names `{how}`: `{module}` is not in the layer list {order:?}"
                )),
            }
        }
    }
    bad
}

fn read_tree(dir: &Path, module: &[String], out: &mut Vec<Source>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_stem().and_then(|n| n.to_str()).unwrap_or("");
        let mut m = module.to_vec();
        if path.is_dir() {
            m.push(name.to_string());
            read_tree(&path, &m, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            if name != "mod" {
                m.push(name.to_string());
            }
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            out.push(Source { module: m, text });
        }
    }
}

#[test]
fn model_modules_import_only_modules_below_them() {
    // The check itself: an upward import and an undocumented module are
    // caught, a downward one is not.
    let src = |module: &[&str], text: &str| Source {
        module: module.iter().map(|m| m.to_string()).collect(),
        text: text.to_string(),
    };
    let fake = [
        src(&[], "//! - `low`: a\n//! - `high`: b\npub use high::Top;\n"),
        src(&["low"], "use crate::model::Top;\n"),
        src(
            &["high", "part"],
            "use super::super::low::X;\nuse super::Y;\n",
        ),
        src(&["odd"], ""),
    ];
    assert_eq!(
        violations(&fake).len(),
        2,
        "expected low -> high and the undocumented `odd`: {:#?}",
        violations(&fake)
    );

    let mut sources = Vec::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/model");
    read_tree(&dir, &[], &mut sources);
    let bad = violations(&sources);
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
}

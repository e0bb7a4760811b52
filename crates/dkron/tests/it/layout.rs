//! The layout's rules, as checks: every top-level module of `crates/dkron/src` is named in
//! ARCHITECTURE.md with the modules it may use, those allowances form no cycle, no source
//! reaches a module it may not use, and no non-test source file grows past 450 lines.
//!
//! The allowances are read from ARCHITECTURE.md itself (a `#### \`module/\`` heading per
//! module, then a `May use:` line), so the document and the code cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest a non-test source file may be.
const MAX_LINES: usize = 450;

/// Items of the crate root that are not modules (`crate::VERSION`).
const ROOT_ITEMS: &[&str] = &["VERSION"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn architecture() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ARCHITECTURE.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("reading src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The top-level module a source file belongs to (`None` for the crate root files).
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).expect("under src");
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .to_string();
    match first.strip_suffix(".rs") {
        Some("lib" | "main") => None,
        Some(stem) => Some(stem.to_string()),
        None => Some(first),
    }
}

/// The top-level modules that exist: folders and files under `src`.
fn modules() -> BTreeSet<String> {
    rust_files(&src())
        .iter()
        .filter_map(|f| module_of(f))
        .collect()
}

/// `module -> modules it may use`, from ARCHITECTURE.md: the `May use:` paragraph (it may
/// wrap over several lines) of each `#### \`module/\`` section.
fn allowances(doc: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut lines = doc.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("#### `") {
            let name = rest.split('`').next().unwrap_or("");
            let name = name.trim_end_matches('/').trim_end_matches(".rs");
            current = Some(name.to_string());
            continue;
        }
        if line.starts_with('#') {
            current = None;
            continue;
        }
        let (Some(module), Some(first)) = (&current, line.strip_prefix("May use:")) else {
            continue;
        };
        let mut list = first.to_string();
        while let Some(next) = lines.next_if(|l| !l.trim().is_empty() && !l.starts_with('#')) {
            list.push(' ');
            list.push_str(next);
        }
        let allowed: BTreeSet<String> = list
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|m| m.trim_end_matches('/').trim_end_matches(".rs").to_string())
            .collect();
        assert!(
            !out.contains_key(module),
            "ARCHITECTURE.md gives `{module}` two `May use:` lines"
        );
        out.insert(module.clone(), allowed);
    }
    out
}

/// Code without its line comments (doc comments and `//` remarks name modules in prose).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with("//") {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first path segment of every `crate::` path in `code`, with its line; a grouped
/// import (`crate::{a::X, b::{Y, Z}}`, over several lines or not) yields `a` and `b`.
fn crate_references(code: &str) -> Vec<(usize, String)> {
    let line_of = |i: usize| code[..i].matches('\n').count() + 1;
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        // `dkron_core::...` or `my_crate::...` are other crates' paths.
        if code[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push((line_of(i), ident));
            continue;
        };
        // Top-level items of the group: split at commas outside nested braces.
        let (mut depth, mut item, mut items) = (0usize, String::new(), Vec::new());
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                _ if depth == 0 => item.push(c),
                _ => {}
            }
        }
        items.push(item);
        for item in items {
            let first = item
                .trim()
                .split("::")
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            if !first.is_empty() {
                out.push((line_of(i), first));
            }
        }
    }
    out
}

/// Modules in a cycle of the allowance graph, if any.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut found = path[i..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn architecture_names_every_module_with_what_it_may_use() {
    let allowed = allowances(&architecture());
    let modules = modules();
    let missing: Vec<&String> = modules
        .iter()
        .filter(|m| !allowed.contains_key(*m))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md has no `#### \\`module/\\`` section with a `May use:` line for {missing:?}"
    );
    let stale: Vec<&String> = allowed.keys().filter(|m| !modules.contains(*m)).collect();
    assert!(
        stale.is_empty(),
        "ARCHITECTURE.md describes modules that do not exist: {stale:?}"
    );
    for (module, uses) in &allowed {
        for used in uses {
            assert!(
                modules.contains(used),
                "ARCHITECTURE.md lets `{module}` use `{used}`, which does not exist"
            );
        }
    }
    assert_eq!(
        cycle(&allowed),
        None,
        "the allowed dependencies form a cycle"
    );
}

#[test]
fn no_module_uses_one_it_may_not() {
    let allowed = allowances(&architecture());
    let modules = modules();
    let mut violations = Vec::new();
    for file in rust_files(&src()) {
        let text = std::fs::read_to_string(&file).expect("reading a source file");
        let code = code_of(&text);
        let rel = file.strip_prefix(src()).unwrap().display().to_string();
        let Some(module) = module_of(&file) else {
            continue;
        };
        // A module's own root file reaching past `super::` would reach the crate root, and
        // `super::super` from anywhere climbs out of the module: both bypass the check.
        // (Its unit tests, an inline module, use `super::` for the file itself.)
        let root_file = rel == format!("{module}.rs") || rel == format!("{module}/mod.rs");
        let before_tests = code
            .lines()
            .position(|l| l.starts_with("#[cfg(test)]"))
            .unwrap_or(usize::MAX);
        for (n, line) in code.lines().enumerate() {
            let reaches_root = root_file && n < before_tests && line.contains("super::");
            if line.contains("super::super") || reaches_root {
                violations.push(format!(
                    "{rel}:{}: `super::` reaches out of `{module}`",
                    n + 1
                ));
            }
        }
        let may = allowed.get(&module).cloned().unwrap_or_default();
        for (line, used) in crate_references(&code) {
            if used == module || ROOT_ITEMS.contains(&used.as_str()) || used == "self" {
                continue;
            }
            if !modules.contains(&used) {
                violations.push(format!(
                    "{rel}:{line}: `crate::{used}` is not a top-level module"
                ));
            } else if !may.contains(&used) {
                violations.push(format!(
                    "{rel}:{line}: `{module}` may not use `{used}` (ARCHITECTURE.md, `{module}`: May use {may:?})"
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layout rules broken:\n{}",
        violations.join("\n")
    );
}

#[test]
fn no_source_file_is_longer_than_450_lines_without_its_tests() {
    let mut long = Vec::new();
    for file in rust_files(&src()) {
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("reading a source file");
        // Lines before the unit tests (`#[cfg(test)]` at the start of a line).
        let lines = text
            .lines()
            .take_while(|l| !l.starts_with("#[cfg(test)]"))
            .count();
        if lines > MAX_LINES {
            long.push(format!(
                "{} ({lines} lines)",
                file.strip_prefix(src()).unwrap().display()
            ));
        }
    }
    assert!(
        long.is_empty(),
        "split these by concern (at most {MAX_LINES} lines each, tests aside): {long:?}"
    );
}

#[test]
fn the_checks_see_what_they_check() {
    // Grouped and nested imports, other crates' paths, and prose.
    let code = code_of(
        "use crate::{\n    raft::Proposer,\n    rpc::wire::{A, B},\n};\nuse dkron_core::x;\n/// see crate::leader\nlet c = crate::clock::wall();",
    );
    let found: Vec<(usize, String)> = crate_references(&code);
    let found: Vec<(usize, &str)> = found.iter().map(|(n, m)| (*n, m.as_str())).collect();
    assert_eq!(found, [(1, "raft"), (1, "rpc"), (7, "clock")]);
    let graph = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert!(cycle(&graph).is_some());
    let doc = "#### `worker/` — runs orders\n\nMay use: `rpc`,\n`clock.rs`.\n\nNot `leader`.\n#### `clock.rs`\nMay use: nothing.\n";
    let parsed = allowances(doc);
    assert_eq!(
        parsed["worker"],
        BTreeSet::from(["rpc".to_string(), "clock".to_string()])
    );
    assert!(parsed["clock"].is_empty());
    assert!(modules().contains("leader") && modules().contains("clock"));
}

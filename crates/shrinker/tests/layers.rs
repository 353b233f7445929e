//! The source layout's import rule (crate docs, "Layout of the source"):
//! every `crate::…`, `super::…` or child-module path in a source file names
//! a file of its own layer or of a layer drawn above it, and no two files
//! import each other, directly or round a circle. Unit tests (`tests.rs`,
//! `#[cfg(test)]` items) are exempt.
//!
//! A text scan, not a compiler pass: it reads paths the way the crate
//! writes them (`use crate::a::b::{C, D}`, `super::x::Y`, `child::Z` in a
//! module with a folder), which is all this crate needs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Layers from the top of the drawing down; a file may import its own
/// layer and those before it. Matched by path prefix, first match wins.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "contract",
        &[
            "shrink.rs",
            "info.rs",
            "error.rs",
            "request.rs",
            "topology.rs",
            "group_id.rs",
            "freed.rs",
        ],
    ),
    ("lifetime", &["lifetime/"]),
    ("engine", &["engine/"]),
    (
        "registry internals",
        &[
            "registry/object.rs",
            "registry/ids.rs",
            "registry/call_counts.rs",
            "registry/gate.rs",
            "registry/pin.rs",
            "registry/walk.rs",
        ],
    ),
    ("groups", &["groups/"]),
    ("registry facade", &["registry/"]),
    ("reclaim", &["reclaim/"]),
    ("lru", &["lru/"]),
    ("metrics", &["metrics.rs"]),
    ("control", &["control/"]),
];

fn layer_of(file: &str) -> usize {
    LAYERS
        .iter()
        .position(|(_, prefixes)| prefixes.iter().any(|p| file.starts_with(p)))
        .unwrap_or_else(|| panic!("{file} is in no layer: add it to LAYERS and the crate docs"))
}

/// Every `.rs` file under `dir`, as (path relative to `src/`, text).
fn sources(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((rel, fs::read_to_string(&path).unwrap()));
        }
    }
}

/// The module path of a source file: `registry/mod.rs` → `registry`,
/// `lru/list_lru.rs` → `lru::list_lru`.
fn module_of(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The text without comments and without `#[cfg(...test...)]` items
/// (a crude brace count from the item's first line).
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        if t.starts_with("#[cfg(") && t.contains("test") {
            // Skip the attributed item: to its `;` or its closing brace.
            let mut depth = 0i32;
            for l in lines.by_ref() {
                depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
                if depth <= 0 && (l.contains('}') || l.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Identifier paths in `code` starting with `head::` (`crate`, `super`, or
/// a child module), with one level of `{a, b::c}` groups expanded.
fn paths_after(code: &str, head: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let pat = format!("{head}::");
    let mut from = 0;
    while let Some(i) = code[from..].find(&pat) {
        let at = from + i;
        from = at + pat.len();
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[from..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let base: Vec<String> = rest[..end]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if rest[end..].starts_with('{') {
            let close = rest[end..].find('}').map_or(rest.len(), |c| end + c);
            for item in rest[end + 1..close].split(',') {
                let item: Vec<String> = item
                    .trim()
                    .split("::")
                    .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_'))
                    .map(String::from)
                    .collect();
                found.push(base.iter().cloned().chain(item).collect());
            }
        }
        found.push(base);
    }
    found
}

#[test]
fn imports_flow_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &src, &mut files);
    let modules: BTreeMap<Vec<String>, String> = files
        .iter()
        .map(|(f, _)| (module_of(f), f.clone()))
        .collect();
    // The longest module prefix of a path.
    let resolve = |path: &[String]| -> Option<&String> {
        (1..=path.len()).rev().find_map(|n| modules.get(&path[..n]))
    };
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, text) in &files {
        if file == "lib.rs" || file.ends_with("tests.rs") || file.ends_with("model.rs") {
            continue;
        }
        let code = code_of(text);
        let module = module_of(file);
        let parent = &module[..module.len() - 1];
        let mut targets = BTreeSet::new();
        let mut add = |path: Vec<String>| {
            if let Some(t) = resolve(&path) {
                if t != file && t != "lib.rs" {
                    targets.insert(t.clone());
                }
            }
        };
        for p in paths_after(&code, "crate") {
            add(p);
        }
        for p in paths_after(&code, "super") {
            add(parent.iter().cloned().chain(p).collect());
        }
        // Child modules named without a prefix (`use one::ListOne;`).
        for (m, _) in modules
            .iter()
            .filter(|(m, _)| m.len() == module.len() + 1 && m.starts_with(&module))
        {
            let child = m.last().unwrap();
            for p in paths_after(&code, child) {
                add(m.iter().cloned().chain(p).collect());
            }
        }
        edges.insert(file.clone(), targets);
    }
    let mut wrong = Vec::new();
    for (from, targets) in &edges {
        for to in targets {
            if layer_of(to) > layer_of(from) {
                wrong.push(format!(
                    "{from} ({}) imports {to} ({}), a layer drawn below it",
                    LAYERS[layer_of(from)].0,
                    LAYERS[layer_of(to)].0
                ));
            }
        }
    }
    // Circles among files (within a layer too): depth-first search.
    fn visit<'a>(
        f: &'a str,
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
        wrong: &mut Vec<String>,
    ) {
        state.insert(f, 1);
        stack.push(f);
        for t in edges.get(f).into_iter().flatten() {
            match state.get(t.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|s| s == t).unwrap();
                    wrong.push(format!(
                        "import circle: {} -> {t}",
                        stack[at..].join(" -> ")
                    ));
                }
                Some(_) => {}
                None => visit(t, edges, state, stack, wrong),
            }
        }
        stack.pop();
        state.insert(f, 2);
    }
    let mut state = BTreeMap::new();
    for f in edges.keys() {
        if !state.contains_key(f.as_str()) {
            visit(f, &edges, &mut state, &mut Vec::new(), &mut wrong);
        }
    }
    assert!(
        wrong.is_empty(),
        "the layout's import rule is broken:\n{}",
        wrong.join("\n")
    );
    assert!(
        edges.values().map(BTreeSet::len).sum::<usize>() > 50,
        "the scan found the imports"
    );
}

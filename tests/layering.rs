//! Options flow one way (docs/DEVELOPMENT.md, "Options flow one way"):
//! only `main.rs` and the app layer (`app`, `mount`) refer to the command
//! line (`crate::cli`), and no two top-level modules of `src/` refer to
//! each other, directly or round a longer circle.
//!
//! Read from the source text: every `crate::X` (and `secretfs::X` in
//! `main.rs`), also inside `use crate::{X, Y}`, counts as module → X.
//! The same holds between files (`crate::a::b`, `super::c`), but for a
//! file's references to the modules it is inside of.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The modules that may refer to `crate::cli`: the binary and the app
/// layer, which converts clap structs into the options of each layer.
const MAY_USE_CLI: &[&str] = &["main", "app", "mount"];

/// Every `.rs` file below `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`fs/view/mod.rs`:
/// `fs`; `main.rs`: `main`), or `None` for `lib.rs`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "lib").then_some(name)
}

/// The text of a file without its comments (a line's text after `//`:
/// that may also cut a string such as a URL, which names no module).
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The modules `text` refers to through `prefix` (`crate::`): the first
/// name after it, and in `prefix{a, b::c}` each name the braces list.
fn referred(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + prefix.len()..];
        // `$crate::`, `my_crate::`, `super::super::`: not ours.
        if before.is_some_and(|c| is_ident(c) || c == '$' || c == ':') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            let mut items = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                    _ => {}
                }
                item.push(c);
            }
            items.push(item);
            for item in items {
                let name: String = item
                    .trim_start_matches(',')
                    .trim()
                    .chars()
                    .take_while(|&c| is_ident(c))
                    .collect();
                if !name.is_empty() && name != "self" {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// Module → the other top-level modules it refers to.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let text = without_comments(&std::fs::read_to_string(file).expect("read a source file"));
        let prefix = if module == "main" {
            "secretfs::"
        } else {
            "crate::"
        };
        let edges = graph.entry(module.clone()).or_default();
        for name in referred(&text, prefix) {
            if name != module && modules.contains(&name) {
                edges.insert(name);
            }
        }
    }
    graph
}

/// Each circle of modules (strongly connected set of more than one), as
/// the edges that tie it, found with Tarjan's algorithm.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut set = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    set.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if set.len() > 1 {
                    set.sort();
                    self.found.push(set);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

/// The module path of a file of `src/` (`fs/view/mod.rs`: `fs::view`;
/// `lib.rs`, `main.rs`: the crate itself).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("below src/");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") || parts == ["lib"] || parts == ["main"] {
        parts.pop();
    }
    parts
}

/// Every path `text` names through `crate::` or `super::` (as segments,
/// `super` kept), a `use` group giving one path per item.
fn paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for prefix in ["crate::", "super::"] {
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().next_back();
            let start = &rest[at..];
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| is_ident(c) || c == '$' || c == ':') {
                continue;
            }
            let mut segments = Vec::new();
            let mut tail = start;
            loop {
                let name: String = tail.chars().take_while(|&c| is_ident(c)).collect();
                if name.is_empty() {
                    break;
                }
                tail = &tail[name.len()..];
                segments.push(name);
                match tail.strip_prefix("::") {
                    Some(t) => tail = t,
                    None => break,
                }
            }
            let group = tail.strip_prefix('{').map(|g| {
                referred(&format!("x::{{{g}"), "x::")
                    .into_iter()
                    .collect::<Vec<_>>()
            });
            match group {
                Some(items) if !items.is_empty() => {
                    for item in items {
                        let mut path = segments.clone();
                        path.push(item);
                        out.push(path);
                    }
                }
                _ => out.push(segments),
            }
        }
    }
    out
}

/// File → the other files of `src/` it refers to, as paths relative to
/// `src/`. A file's references to the modules it is inside of (a child's
/// `super::Item`, defined by the `mod.rs` that declares it) are left out:
/// that is how Rust modules share their items, not a layer above.
fn file_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let by_module: BTreeMap<Vec<String>, &PathBuf> = files
        .iter()
        .filter(|f| !f.ends_with("main.rs"))
        .map(|f| (module_path(&src, f), f))
        .collect();
    let name = |f: &Path| {
        f.strip_prefix(&src)
            .expect("below src/")
            .display()
            .to_string()
    };
    let mut graph = BTreeMap::new();
    for file in &files {
        let me = module_path(&src, file);
        let text = without_comments(&std::fs::read_to_string(file).expect("read a source file"));
        let mut edges = BTreeSet::new();
        for path in paths(&text) {
            let (mut base, mut segments) = match path.first().map(String::as_str) {
                Some("crate") => (Vec::new(), &path[1..]),
                Some("super") => (me[..me.len().saturating_sub(1)].to_vec(), &path[1..]),
                _ => continue,
            };
            while segments.first().is_some_and(|s| s == "super") {
                base.pop();
                segments = &segments[1..];
            }
            base.extend(segments.iter().cloned());
            // The longest prefix that is a file of its own.
            let target = (1..=base.len())
                .rev()
                .find_map(|n| by_module.get(&base[..n]).map(|f| (n, *f)));
            let Some((n, target)) = target else {
                continue;
            };
            if target != file && me.get(..n) != Some(&base[..n]) {
                edges.insert(name(target));
            }
        }
        graph.insert(name(file), edges);
    }
    graph
}

/// The circles of `graph`, each with the edges that tie it, one line each.
fn described_circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    circles(graph)
        .iter()
        .map(|set| {
            let edges: Vec<String> = set
                .iter()
                .flat_map(|from| {
                    graph
                        .get(from)
                        .into_iter()
                        .flatten()
                        .filter(|to| set.contains(to))
                        .map(move |to| format!("{from} -> {to}"))
                })
                .collect();
            format!("{{{}}}: {}", set.join(", "), edges.join(", "))
        })
        .collect()
}

#[test]
fn only_main_and_the_app_layer_refer_to_the_command_line() {
    let graph = graph();
    assert!(graph.contains_key("cli"), "no src/cli.rs read: {graph:?}");
    let users: Vec<&String> = graph
        .iter()
        .filter(|(module, edges)| edges.contains("cli") && !MAY_USE_CLI.contains(&module.as_str()))
        .map(|(module, _)| module)
        .collect();
    assert!(
        users.is_empty(),
        "refer to crate::cli, which only {MAY_USE_CLI:?} may: {users:?}"
    );
}

#[test]
fn no_two_top_level_modules_refer_to_each_other() {
    let described = described_circles(&graph());
    assert!(
        described.is_empty(),
        "circles between modules of src/:\n  {}",
        described.join("\n  ")
    );
}

#[test]
fn no_two_files_refer_to_each_other() {
    let graph = file_graph();
    assert!(
        graph
            .get("store/vault/auth.rs")
            .is_some_and(|e| e.contains("store/vault/nodes.rs")),
        "{graph:?}"
    );
    let described = described_circles(&graph);
    assert!(
        described.is_empty(),
        "circles between the files of src/:\n  {}",
        described.join("\n  ")
    );
}

#[test]
fn references_are_read_from_paths_and_use_groups() {
    let text = "use crate::{fs::view::Layout, hook, store::{self, x}};\n\
                let a = crate::exec::run(); $crate::nope; other_crate::nope; ::crate::nope;";
    let names: Vec<String> = referred(text, "crate::").into_iter().collect();
    assert_eq!(names, ["exec", "fs", "hook", "store"]);
}

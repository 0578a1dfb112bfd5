//! Options flow one way (docs/DEVELOPMENT.md, "Options flow one way"):
//! only `main.rs` and the app layer (`app`, `mount`) refer to the command
//! line (`crate::cli`), and no two top-level modules of `src/` refer to
//! each other, directly or round a longer circle.
//!
//! Read from the source text: every `crate::X` (and `secretfs::X` in
//! `main.rs`), also inside `use crate::{X, Y}`, counts as module → X.
//! Inside a folder the same holds between its files (`super::X`): no two
//! of them refer to each other.

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

/// Per folder below `src/`, each of its files (`mod.rs`, which declares
/// them, left out) → the other files and subfolders of that folder it
/// refers to (`super::X`, `crate::folder::X`).
fn sibling_graphs() -> BTreeMap<PathBuf, BTreeMap<String, BTreeSet<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let name_of = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".rs").to_string())
            .unwrap_or_default()
    };
    let mut graphs: BTreeMap<PathBuf, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in &files {
        let Some(dir) = file.parent().filter(|d| *d != src) else {
            continue;
        };
        let me = name_of(file);
        if me == "mod" {
            continue;
        }
        let siblings: BTreeSet<String> = std::fs::read_dir(dir)
            .expect("read a folder of src/")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "rs"))
            .map(|p| name_of(&p))
            .filter(|n| n != "mod" && *n != me)
            .collect();
        let text = without_comments(&std::fs::read_to_string(file).expect("read a source file"));
        let folder_path = dir
            .strip_prefix(&src)
            .expect("below src/")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("::");
        let mut names = referred(&text, "super::");
        names.extend(referred(&text, &format!("crate::{folder_path}::")));
        let edges = graphs
            .entry(dir.strip_prefix(&src).expect("below src/").to_path_buf())
            .or_default()
            .entry(me)
            .or_default();
        edges.extend(names.into_iter().filter(|n| siblings.contains(n)));
    }
    graphs
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
fn no_two_files_of_a_folder_refer_to_each_other() {
    let graphs = sibling_graphs();
    assert!(graphs.contains_key(Path::new("store/vault")), "{graphs:?}");
    let described: Vec<String> = graphs
        .iter()
        .flat_map(|(dir, graph)| {
            described_circles(graph)
                .into_iter()
                .map(move |c| format!("src/{}: {c}", dir.display()))
        })
        .collect();
    assert!(
        described.is_empty(),
        "circles between the files of a folder:\n  {}",
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

//! The dependency direction of `txn`'s modules: the graph of `crate::<module>` references
//! between the crate's top-level modules (a module directory counts as one module) has no cycle
//! besides the handler core named in `HANDLER_CORE`, and that knot may only shrink.
//!
//! `cargo modules dependencies --acyclic` would be the usual tool, but it builds rust-analyzer
//! (many minutes on CI); this reads the sources instead, which is what `use` lines say anyway.
//! `TXN_MODULE_GRAPH_SRC` points it at another `src` directory (to check an older tree).
//!
//! It also checks the workspace's test layout: where a member compiles its integration tests as
//! one binary (`autotests = false`, `tests/suite.rs`), every file under `tests/` is compiled.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The one cycle left, and why: an application's handlers take a `TxnCtx` (`app` → `context`),
/// which runs on a partition's state (`context` → `partition`) read through the application's
/// definition (`context`, `partition`, `query` → `app`), and snapshot queries read partitions
/// while partitions run queries (`partition` ↔ `query`).
const HANDLER_CORE: [&str; 4] = ["app", "context", "partition", "query"];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src_dir() -> PathBuf {
    match std::env::var_os("TXN_MODULE_GRAPH_SRC") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
    }
}

/// Every `.rs` file under `dir`, with the top-level module it belongs to.
fn module_files(dir: &Path, top: Option<&str>, out: &mut Vec<(String, PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("txn's src directory is readable")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let module = top.map_or(name.clone(), str::to_string);
        if path.is_dir() {
            module_files(&path, Some(&module), out);
        } else if path.extension().is_some_and(|e| e == "rs") && module != "lib" {
            out.push((module, path));
        }
    }
}

/// The identifier starting at `s` (empty if none).
fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first path segment of each item of a `{a::b, c, d::{e, f}}` group starting after `{`.
fn group_heads(s: &str, out: &mut BTreeSet<String>) {
    let (mut depth, mut at_item) = (0usize, true);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return,
            '}' => depth -= 1,
            ',' if depth == 0 => at_item = true,
            c if at_item && !c.is_whitespace() => {
                at_item = false;
                out.insert(ident(&s[i..]).to_string());
            }
            _ => {}
        }
    }
}

/// The modules `source` names through `crate::`, comments left out.
fn references(source: &str) -> BTreeSet<String> {
    let code: String = source
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        match rest.strip_prefix('{') {
            Some(group) => group_heads(group, &mut out),
            None => {
                out.insert(ident(rest).to_string());
            }
        }
    }
    out
}

fn module_graph(dir: &Path) -> Graph {
    let mut files = Vec::new();
    module_files(dir, None, &mut files);
    let mut graph = Graph::new();
    for (module, path) in &files {
        let source = std::fs::read_to_string(path).expect("a readable source file");
        graph
            .entry(module.clone())
            .or_default()
            .extend(references(&source));
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for (module, deps) in graph.iter_mut() {
        deps.retain(|d| modules.contains(d) && d != module);
    }
    graph
}

/// The strongly connected components of more than one module (Tarjan's algorithm).
fn cycles(graph: &Graph) -> Vec<BTreeSet<String>> {
    struct Walk<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        found: Vec<BTreeSet<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, v: &'g str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            for w in &self.graph[v] {
                if !self.index.contains_key(w.as_str()) {
                    self.visit(w);
                    self.low.insert(v, self.low[v].min(self.low[w.as_str()]));
                } else if self.stack.contains(&w.as_str()) {
                    self.low.insert(v, self.low[v].min(self.index[w.as_str()]));
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    component.insert(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

#[test]
fn no_import_cycles_besides_the_handler_core() {
    let graph = module_graph(&src_dir());
    // The reader sees the edges it must: a vacuous graph would pass any check.
    assert!(graph["runtime"].contains("envelope"), "graph: {graph:#?}");
    assert!(graph["dedup"].contains("outcome"), "graph: {graph:#?}");
    let core: BTreeSet<String> = HANDLER_CORE.iter().map(|m| m.to_string()).collect();
    for cycle in cycles(&graph) {
        let outside: Vec<&String> = cycle.difference(&core).collect();
        assert!(
            outside.is_empty(),
            "import cycle through {cycle:?}: {outside:?} joined it; each module's dependencies: {:#?}",
            cycle
                .iter()
                .map(|m| (m, graph[m].intersection(&cycle).collect::<Vec<_>>()))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn leaf_modules_depend_on_no_pipeline_module() {
    let graph = module_graph(&src_dir());
    let allowed: BTreeSet<&str> = ["ids", "error", "clock", "limits", "storage"].into();
    for leaf in [
        "clock",
        "envelope",
        "outcome",
        "row",
        "row_key",
        "table_shape",
    ] {
        let deps = &graph[leaf];
        let extra: Vec<&String> = deps
            .iter()
            .filter(|d| !allowed.contains(d.as_str()))
            .collect();
        assert!(extra.is_empty(), "leaf module {leaf} depends on {extra:?}");
    }
}

/// The workspace members' directories, read from the workspace's `Cargo.toml`.
fn workspace_members() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest =
        std::fs::read_to_string(root.join("Cargo.toml")).expect("the workspace manifest");
    let list = manifest
        .split_once("members = [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .expect("a members list")
        .0;
    list.split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
        .map(|m| root.join(m))
        .collect()
}

/// The files under `tests/` that no test target of `member` compiles. A member with
/// `autotests = false` compiles a test file only as a module of `tests/suite.rs` or as a
/// `[[test]]` target naming its path; any other file would be silently left out.
fn uncompiled_test_files(member: &Path) -> Vec<PathBuf> {
    let manifest = std::fs::read_to_string(member.join("Cargo.toml")).expect("a member manifest");
    if !manifest.contains("autotests = false") {
        return Vec::new();
    }
    let suite = std::fs::read_to_string(member.join("tests/suite.rs")).unwrap_or_default();
    let Ok(entries) = std::fs::read_dir(member.join("tests")) else {
        return Vec::new();
    };
    let mut missing: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable tests directory").path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .filter(|p| {
            let stem = p
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("a UTF-8 name");
            stem != "suite"
                && !suite.lines().any(|l| l.trim() == format!("mod {stem};"))
                && !manifest.contains(&format!("path = \"tests/{stem}.rs\""))
        })
        .collect();
    missing.sort();
    missing
}

// Goal: a test file added to a member that compiles its tests as one binary is not silently
// ignored: it must be named in `tests/suite.rs` or given a target of its own.
#[test]
fn every_test_file_is_compiled() {
    let members = workspace_members();
    assert!(
        members.len() >= 5,
        "members read from the workspace: {members:?}"
    );
    let suites = members
        .iter()
        .filter(|m| m.join("tests/suite.rs").exists())
        .count();
    assert!(suites >= 4, "members with a test suite: {suites}");
    let missing: Vec<PathBuf> = members
        .iter()
        .flat_map(|m| uncompiled_test_files(m))
        .collect();
    assert!(
        missing.is_empty(),
        "test files no target compiles (add `mod <name>;` to tests/suite.rs): {missing:?}"
    );
}

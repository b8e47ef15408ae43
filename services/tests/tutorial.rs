//! The ledger tutorial cannot drift from code that compiles: every Rust block of
//! `docs/tutorial-ledger.md` must be a verbatim excerpt — whole lines — of the ledger
//! (`services/src/ledger.rs`), its example program (`services/examples/ledger.rs`) or its tests
//! (`services/tests/ledger.rs`), all of which are built and run by `cargo test -p services`.

const TUTORIAL: &str = include_str!("../../docs/tutorial-ledger.md");

/// The files snippets may quote, by the path the failure messages name them with.
const SOURCES: [(&str, &str); 3] = [
    ("services/src/ledger.rs", include_str!("../src/ledger.rs")),
    (
        "services/examples/ledger.rs",
        include_str!("../examples/ledger.rs"),
    ),
    ("services/tests/ledger.rs", include_str!("ledger.rs")),
];

/// A line of a snippet that marks where something was left out: the parts on either side of
/// it are separate excerpts.
const ELLIPSIS: &str = "// ...";

/// The body of every fenced block whose info string starts with `rust`, with the line number
/// of its opening fence.
fn rust_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, bool, Vec<&str>)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => open = Some((i + 1, info.trim().starts_with("rust"), Vec::new())),
            (Some(_), Some(_)) => {
                let (start, is_rust, lines) = open.take().expect("matched Some");
                if is_rust {
                    blocks.push((start, lines.join("\n")));
                }
            }
            (Some((_, _, lines)), None) => lines.push(line),
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a code block is never closed");
    blocks
}

/// The excerpts a snippet is made of: its lines split at `// ...` lines, without the blank
/// lines at either end.
fn excerpts(block: &str) -> Vec<String> {
    block
        .split('\n')
        .collect::<Vec<_>>()
        .split(|line| line.trim() == ELLIPSIS)
        .map(|part| part.join("\n").trim_matches('\n').to_string())
        .filter(|part| !part.trim().is_empty())
        .collect()
}

/// Whether `excerpt` is a run of whole lines of `source`.
fn is_excerpt_of(excerpt: &str, source: &str) -> bool {
    format!("\n{source}\n").contains(&format!("\n{excerpt}\n"))
}

/// Every excerpt of the tutorial that no source contains, as "line N: first line".
fn drifted(markdown: &str, sources: &[(&str, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    for (line, block) in rust_blocks(markdown) {
        for excerpt in excerpts(&block) {
            if !sources.iter().any(|(_, s)| is_excerpt_of(&excerpt, s)) {
                let first = excerpt.lines().next().unwrap_or_default();
                out.push(format!("block at line {line}: {first}"));
            }
        }
    }
    out
}

// Goal: the tutorial as committed quotes only code that compiles, and quotes plenty of it.
#[test]
fn every_rust_block_of_the_tutorial_is_an_excerpt_of_compiled_code() {
    let drifted = drifted(TUTORIAL, &SOURCES);
    let names: Vec<&str> = SOURCES.iter().map(|(name, _)| *name).collect();
    assert!(
        drifted.is_empty(),
        "these snippets of docs/tutorial-ledger.md are not verbatim excerpts of {names:?}; copy \
         them again from the code:\n{}",
        drifted.join("\n")
    );
    let n_excerpts: usize = rust_blocks(TUTORIAL)
        .iter()
        .map(|(_, b)| excerpts(b).len())
        .sum();
    assert!(
        n_excerpts >= 20,
        "only {n_excerpts} excerpts: is the parser broken?"
    );
}

// Goal: a snippet that differs from the code by one line, or quotes code that does not exist,
// is reported, naming its block.
#[test]
fn a_drifted_snippet_is_reported() {
    let real = "        let balance = credit(\"account\", ev.account, balance, ev.amount)?;";
    assert!(
        TUTORIAL.contains(real),
        "the tutorial no longer shows the deposit"
    );
    let edited = TUTORIAL.replacen(real, "        let balance = 0;", 1);
    let drifted = drifted(&edited, &SOURCES);
    assert_eq!(drifted.len(), 1, "{drifted:?}");
    assert!(drifted[0].contains("The `accounts` service"), "{drifted:?}");
    let invented = format!("{TUTORIAL}\n```rust\nfn not_in_the_code() {{}}\n```\n");
    let drifted = self::drifted(&invented, &SOURCES);
    assert_eq!(drifted.len(), 1, "{drifted:?}");
    assert!(
        drifted[0].ends_with(": fn not_in_the_code() {}"),
        "{drifted:?}"
    );
}

// Goal: `// ...` splits a snippet into excerpts checked one by one, and non-Rust blocks are
// not checked.
#[test]
fn ellipsis_splits_and_other_blocks_are_skipped() {
    let source = "fn a() {\n    one();\n    two();\n    three();\n}\n";
    let sources = [("s.rs", source)];
    let ok =
        "```rust\nfn a() {\n    one();\n// ...\n    three();\n}\n```\n```text\nanything\n```\n";
    assert!(drifted(ok, &sources).is_empty());
    // Out of order is fine (each part is an excerpt), a partial line is not.
    let partial = "```rust\n    thr\n```\n";
    assert_eq!(drifted(partial, &sources).len(), 1);
}

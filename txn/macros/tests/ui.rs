//! Compile errors of macro misuse, checked against the snapshots in `tests/ui/*.stderr`.
//!
//! Regenerate a snapshot after changing a message with
//! `TRYBUILD=overwrite cargo test -p txn-macros --test ui`, then read the diff: each error must
//! point at the user's mistake and say how to fix it.

#[test]
fn macro_misuse_is_a_clear_compile_error() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}

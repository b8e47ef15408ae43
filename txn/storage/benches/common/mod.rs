//! What the benches of this crate share.

/// How many rows a bench writes: `VMSDB_BENCH_ROWS`, else `default`; `None` when cargo only
/// lists the benches (`--list`), which must run nothing.
pub fn bench_rows(default: u64) -> Option<u64> {
    if std::env::args().any(|arg| arg == "--list") {
        return None;
    }
    let rows = std::env::var("VMSDB_BENCH_ROWS").ok();
    Some(rows.and_then(|rows| rows.parse().ok()).unwrap_or(default))
}

//! What the bench harness's PostgreSQL-backed tests share: whether the server binaries exist,
//! failing in CI when they do not.

use std::io::Write as _;

/// Whether this is a CI run: `CI` set to anything but empty, `0` or `false` (CI services set
/// `CI=true`).
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// Whether the PostgreSQL server binaries exist, which `test` needs for `purpose`. In CI a
/// missing server fails the test, since CI installs it and a test that did not run must not be
/// counted as passed; elsewhere this prints a loud skip line and returns false.
pub fn postgres_available(test: &str, purpose: &str) -> bool {
    match bench_harness::postgres::instance::find_binaries() {
        Ok(_) => true,
        Err(e) if in_ci() => panic!(
            "{test}: CI is set but the PostgreSQL server binaries are missing, so {purpose} \
             cannot run: install them (apt-get install -y postgresql, as .ci/run does): {e}"
        ),
        Err(e) => {
            // Straight to the stderr handle, which the test harness does not capture (it
            // captures `eprintln!`), so the skip shows in a normal `cargo test` run.
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED (not run, not passed): {test} — PostgreSQL server binaries not \
                 found; install with apt-get install -y postgresql ({e}); with CI=true this \
                 fails ***\n"
            );
            false
        }
    }
}

//! The README's example is `txn/examples/bank.rs` verbatim, and it is durable by default: a
//! second run against the same directory sees the first run's data.

#[allow(dead_code)]
#[path = "../examples/bank.rs"]
mod bank;

/// The first ```rust block of the README.
fn readme_example() -> String {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("```rust\n")
        .expect("the README has a rust block")
        + "```rust\n".len();
    let len = readme[start..].find("```\n").expect("the rust block ends");
    readme[start..start + len].to_string()
}

#[test]
fn readme_example_is_the_example_file_verbatim() {
    assert_eq!(readme_example(), include_str!("../examples/bank.rs"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_example_keeps_its_data_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    // Account 2 gets 5 per run: a second run that started empty would see 5 again.
    assert_eq!(bank::run(dir.path()).await.unwrap(), Some(5));
    assert_eq!(bank::run(dir.path()).await.unwrap(), Some(10));
}

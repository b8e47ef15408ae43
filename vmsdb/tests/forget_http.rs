//! `POST /v1/subjects/{subject}/forget` on a running marketplace server: the customer's name
//! leaves every file of the data directory while the server keeps serving, everyone else's
//! stays, and the server restarts on the erased store.

use crate::common::TestServer;
use vmsdb::AppChoice;

/// The files of `dir` (the store keeps no subdirectories here) that contain `needle`.
fn files_with(dir: &std::path::Path, needle: &str) -> usize {
    let holds = |path: std::path::PathBuf| {
        let bytes = std::fs::read(path).unwrap_or_default();
        bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
    };
    let entries = std::fs::read_dir(dir).unwrap();
    entries
        .filter(|e| holds(e.as_ref().unwrap().path()))
        .count()
}

async fn load_customer(server: &TestServer, id: u32) {
    let body = format!("{{\"customer_ids\": [{id}]}}");
    let answer = server
        .post("/v1/services/customer/events/LoadCustomers", &body)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_over_http_erases_a_customer_from_the_running_server() {
    let server = TestServer::start(AppChoice::Marketplace, |_| {}).await;
    for id in [7, 8] {
        load_customer(&server, id).await;
    }
    // Erasing someone else checkpoints everyone's rows: now the name is on disk.
    let answer = server.post("/v1/subjects/999/forget", "").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["rows_erased"], 0, "{}", answer.body);
    assert!(files_with(server.dir.path(), "customer-7") > 0);

    let answer = server.post("/v1/subjects/7/forget", "").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["subject"], "7");
    assert_eq!(answer.body["rows_erased"], 1, "{}", answer.body);
    assert_eq!(files_with(server.dir.path(), "customer-7"), 0);
    assert!(files_with(server.dir.path(), "customer-8") > 0);

    load_customer(&server, 9).await;
    let server = server.restart(AppChoice::Marketplace).await;
    assert_eq!(files_with(server.dir.path(), "customer-7"), 0);
    load_customer(&server, 10).await;
    server.stop().await;
}

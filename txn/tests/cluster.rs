//! A cluster node's identity is its application's fingerprint: the same application is
//! admitted, another partition count, another service or another store format version is named as
//! a difference, worded peer against this node; `join` starts a node that presents it.

use crate::common;

use txn::cluster::{ClusterConfig, compare_identities, identity_of, join};

/// The common chain application with `n_services` services (`s0`, `s1`, ...) of `n_partitions`.
fn identity(n_services: usize, n_partitions: u32) -> Vec<u8> {
    identity_of(&common::build(n_services, n_partitions).app)
}

#[test]
fn the_same_application_has_no_differences() {
    assert_eq!(
        compare_identities(&identity(2, 4), &identity(2, 4)),
        Vec::<String>::new()
    );
}

#[test]
fn another_partition_count_or_service_is_named() {
    let differences = compare_identities(&identity(2, 4), &identity(1, 8));
    assert_eq!(
        differences,
        vec![
            "service `s1` added after every service on the peer".to_string(),
            "service `s0`: 8 partitions on the peer, 4 on this node".to_string(),
        ]
    );
}

#[test]
fn another_format_version_or_garbage_is_named() {
    let ours = identity(1, 4);
    let mut older = ours.clone();
    older[..4].copy_from_slice(&3u32.to_le_bytes());
    let version = txn::fingerprint::STORE_FORMAT_VERSION;
    assert_eq!(
        compare_identities(&ours, &older),
        vec![format!(
            "store format version 3 on the peer, {version} on this node"
        )]
    );
    let garbage = compare_identities(&ours, &[1, 2]);
    assert_eq!(garbage.len(), 1);
    assert!(garbage[0].contains("too short"), "{garbage:?}");
}

#[tokio::test]
async fn join_starts_a_node_alone_when_it_has_no_seeds() {
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let config = ClusterConfig::new("solo", listen, "cookie", Vec::new());
    let app = common::build(1, 4).app;
    let node = join(&app, config).await.expect("node starts");
    let members: Vec<String> = node.members().into_iter().map(|m| m.name).collect();
    assert_eq!(members, vec!["solo".to_string()]);
    assert_eq!(node.placement(4), vec!["solo".to_string(); 4]);
    node.shutdown().await;
}

//! One cluster node in this process (the only kind a process may run): it starts alone, owns
//! every partition, refuses unusable settings by name, refuses a second node in the process,
//! and frees the process for another node when it shuts down. Multi-node behaviour is tested
//! with real processes in `vmsdb/tests/cluster.rs`.

use actor_runtime::cluster::{Cluster, ClusterConfig, ClusterError, identical_bytes};
use std::net::SocketAddr;
use std::time::Duration;

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

fn config(name: &str) -> ClusterConfig {
    ClusterConfig::new(name, free_addr(), "cookie", b"app".to_vec())
}

fn refused(config: &ClusterConfig) -> String {
    match config.validate() {
        Err(ClusterError::InvalidConfig(why)) => why,
        other => panic!("expected an invalid configuration, got {other:?}"),
    }
}

#[test]
fn unusable_settings_are_refused_by_name() {
    let mut c = config("a");
    c.failure_timeout = c.heartbeat_interval;
    assert!(refused(&c).contains("failure timeout"), "{}", refused(&c));
    let mut c = config("a");
    c.cookie.clear();
    assert!(refused(&c).contains("cookie"));
    let mut c = config("a");
    c.listen.set_port(0);
    assert!(refused(&c).contains("port is 0"));
    let mut c = config("a");
    c.heartbeat_interval = Duration::from_millis(1);
    assert!(refused(&c).contains("heartbeat interval"));
    let mut c = config("a");
    c.request_timeout = Duration::ZERO;
    assert!(refused(&c).contains("request timeout"));
}

#[tokio::test]
async fn a_lone_node_owns_every_partition_and_is_the_only_node_of_its_process() {
    let first = Cluster::start(config("first"), identical_bytes())
        .await
        .expect("the first node starts");
    let names: Vec<String> = first.members().into_iter().map(|m| m.name).collect();
    assert_eq!(names, vec!["first".to_string()]);
    assert_eq!(first.placement(3), vec!["first".to_string(); 3]);

    let second = Cluster::start(config("second"), identical_bytes()).await;
    assert!(matches!(second, Err(ClusterError::AlreadyRunning)));

    first.shutdown().await;
    let again = Cluster::start(config("again"), identical_bytes())
        .await
        .expect("a node starts once the previous one shut down");
    again.shutdown().await;
}

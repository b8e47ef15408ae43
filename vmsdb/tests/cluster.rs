//! `vmsdb node` processes on 127.0.0.1: three nodes agree on membership and placement, a wrong
//! cookie and another application are refused, a SIGKILLed node is declared dead and only its
//! partitions move, a frozen node (SIGSTOP: its sessions stay open) is declared dead by the
//! heartbeats, and a restarted node rejoins. Every wait polls the nodes' stdout with a deadline;
//! every child is killed when its guard drops.

use crate::common::node::{FAILURE_TIMEOUT, Node, WAIT, free_addr, spawn_node};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn ledger_node(name: &str, listen: SocketAddr, seeds: &[SocketAddr]) -> Node {
    spawn_node(
        name,
        listen,
        seeds,
        &["--app", "ledger", "--partitions", "16"],
    )
}

#[test]
fn three_nodes_agree_and_a_killed_node_is_declared_dead_and_rejoins() {
    let addrs = [free_addr(), free_addr(), free_addr()];
    let mut n1 = ledger_node("n1", addrs[0], &[]);
    n1.wait_listening();
    let mut n2 = ledger_node("n2", addrs[1], &[addrs[0]]);
    let mut n3 = ledger_node("n3", addrs[2], &[addrs[0]]);
    let all = ["n1", "n2", "n3"];
    let placement = n1.wait_members(&all);
    assert_eq!(
        n2.wait_members(&all),
        placement,
        "n2 places partitions like n1"
    );
    assert_eq!(
        n3.wait_members(&all),
        placement,
        "n3 places partitions like n1"
    );
    assert_eq!(placement.len(), 32, "ledger: 2 services x 16 partitions");
    assert!(all.iter().all(|n| placement.iter().any(|o| o == n)));

    n3.child.kill().expect("SIGKILL n3");
    let killed_at = Instant::now();
    for survivor in [&mut n1, &mut n2] {
        survivor.wait_line(WAIT, |l| l.starts_with("down n3"));
    }
    let detected_in = killed_at.elapsed();
    assert!(
        detected_in <= FAILURE_TIMEOUT + Duration::from_millis(500),
        "n3 was declared dead {detected_in:?} after the kill"
    );
    let after = n1.wait_members(&["n1", "n2"]);
    assert_eq!(n2.wait_members(&["n1", "n2"]), after);
    for (partition, (was, is)) in placement.iter().zip(&after).enumerate() {
        assert!(
            was == is || was == "n3",
            "partition {partition} moved from {was} to {is}, but only n3's may move"
        );
        assert_ne!(is, "n3");
    }

    drop(n3);
    let mut n3 = ledger_node("n3", addrs[2], &[addrs[0]]);
    assert_eq!(
        n3.wait_members(&all),
        placement,
        "the rejoined n3 places as before"
    );
    assert_eq!(n1.wait_members(&all), placement);
    assert_eq!(n2.wait_members(&all), placement);

    // A frozen process keeps its TCP sessions open: only the heartbeats can tell it is gone.
    n2.signal("-STOP");
    let line = n1.wait_line(WAIT, |l| l.starts_with("down n2"));
    assert!(line.contains("no heartbeat"), "{line}");
    n3.wait_line(WAIT, |l| l.starts_with("down n2"));
    n2.signal("-KILL");
}

#[test]
fn a_wrong_cookie_and_another_application_are_refused() {
    let seed = free_addr();
    let mut n1 = ledger_node("n1", seed, &[]);
    n1.wait_listening();

    let mut intruder = spawn_node(
        "intruder",
        free_addr(),
        &[seed],
        &[
            "--app",
            "ledger",
            "--partitions",
            "16",
            "--cookie",
            "another-cookie",
        ],
    );
    let (status, stderr) = intruder.wait_exit();
    assert!(!status.success());
    assert!(stderr.contains("cookies differ"), "{stderr}");
    n1.wait_line(WAIT, |l| l.starts_with("unauthenticated"));

    let mut ycsb = spawn_node("y1", free_addr(), &[seed], &["--app", "ycsb"]);
    let (status, stderr) = ycsb.wait_exit();
    assert!(!status.success());
    assert!(stderr.contains("refused by node `n1`"), "{stderr}");
    assert!(stderr.contains("service `accounts`"), "{stderr}");
    let line = n1.wait_line(WAIT, |l| l.starts_with("refused y1"));
    assert!(line.contains("service `ycsb`"), "{line}");

    let mut resized = ledger_node_with_partitions("l8", seed, 8);
    let (status, stderr) = resized.wait_exit();
    assert!(!status.success());
    assert!(
        stderr.contains("16 partitions on the peer, 8 on this node"),
        "{stderr}"
    );
    let line = n1.wait_line(WAIT, |l| l.starts_with("refused l8"));
    assert!(
        line.contains("8 partitions on the peer, 16 on this node"),
        "{line}"
    );

    n1.signal("-TERM");
    let (status, _) = n1.wait_exit();
    assert!(status.success(), "SIGTERM stops a node cleanly");
    assert!(
        n1.seen.iter().all(|l| !l.starts_with("up ")),
        "{:?}",
        n1.seen
    );
}

fn ledger_node_with_partitions(name: &str, seed: SocketAddr, partitions: u32) -> Node {
    let partitions = partitions.to_string();
    spawn_node(
        name,
        free_addr(),
        &[seed],
        &["--app", "ledger", "--partitions", &partitions],
    )
}

#[test]
fn node_settings_come_from_flags_over_the_config_file_over_defaults() {
    use txn::cluster::ClusterError;
    use vmsdb::node::{NodeArgs, NodeError};
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("node.toml");
    let file = "app = \"ledger\"\nname = \"from-file\"\ncookie = \"file-cookie\"\n\
                seeds = [\"127.0.0.1:7001\"]\nheartbeat_interval = \"50ms\"\n\
                failure_timeout = \"400ms\"\n";
    std::fs::write(&path, file).expect("write the config file");
    let args = NodeArgs {
        config: Some(path.clone()),
        name: Some("from-flag".into()),
        ..NodeArgs::default()
    };
    let settings = args.resolve().expect("valid settings");
    let cluster = &settings.cluster;
    assert_eq!(cluster.node_name, "from-flag");
    assert_eq!(cluster.cookie, "file-cookie");
    assert_eq!(cluster.seeds, vec!["127.0.0.1:7001".parse().unwrap()]);
    assert_eq!(cluster.heartbeat_interval, Duration::from_millis(50));
    assert_eq!(cluster.failure_timeout, Duration::from_millis(400));
    assert_eq!(cluster.listen, "127.0.0.1:7070".parse().unwrap());

    let no_cookie = NodeArgs {
        app: Some(vmsdb::AppChoice::Ledger),
        ..NodeArgs::default()
    };
    assert!(matches!(no_cookie.resolve(), Err(NodeError::NoCookie)));
    let too_impatient = NodeArgs {
        config: Some(path.clone()),
        failure_timeout: Some(Duration::from_millis(60)),
        ..NodeArgs::default()
    };
    assert!(matches!(
        too_impatient.resolve(),
        Err(NodeError::Cluster(ClusterError::InvalidConfig(_)))
    ));

    let serving = |store: Option<&str>, http: Option<&str>| NodeArgs {
        config: Some(path.clone()),
        store: store.map(str::to_string),
        http: http.map(|a| a.parse().unwrap()),
        ..NodeArgs::default()
    };
    let http = Some("127.0.0.1:8080");
    let settings = serving(Some("postgres://db/vmsdb"), http).resolve();
    let settings = settings.expect("a serving node");
    let serving_settings = settings
        .serving
        .expect("--store and --http: the node serves");
    assert_eq!(serving_settings.store_url, "postgres://db/vmsdb");
    assert!(settings_of(serving(None, None)).serving.is_none());
    assert!(matches!(
        serving(None, http).resolve(),
        Err(NodeError::ServingNeedsBoth)
    ));
    assert!(matches!(
        serving(Some("/var/lib/vmsdb"), http).resolve(),
        Err(NodeError::NotPostgres(_))
    ));
}

fn settings_of(args: vmsdb::node::NodeArgs) -> vmsdb::node::NodeSettings {
    args.resolve().expect("valid settings")
}

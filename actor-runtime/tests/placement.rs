//! Placement by rendezvous hashing: balance and minimal movement when nodes join or leave.

use actor_runtime::{ActorId, ActorSystem, Directory, NodeId, ServiceId, SystemConfig};

const N_PARTITIONS: u32 = 10_000;

fn placement(directory: &Directory) -> Vec<NodeId> {
    (0..N_PARTITIONS)
        .map(|partition| directory.node_of(ActorId::new(ServiceId(0), partition)))
        .collect()
}

fn four_nodes() -> Directory {
    Directory::new(NodeId(0), [NodeId(1), NodeId(2), NodeId(3)])
}

// Goal: adding a 5th node to 4 moves about 1/5 of the partitions, all of them onto the new node.
#[test]
fn adding_a_node_moves_about_one_nth() {
    let directory = four_nodes();
    let before = placement(&directory);
    assert!(directory.add_node(NodeId(4)));
    let after = placement(&directory);

    let moved: Vec<usize> = (0..before.len())
        .filter(|&i| before[i] != after[i])
        .collect();
    let moved_share = moved.len() as f64 / f64::from(N_PARTITIONS);
    assert!(
        (0.15..=0.25).contains(&moved_share),
        "moved {:.1}% of partitions",
        moved_share * 100.0
    );
    assert!(
        moved.iter().all(|&i| after[i] == NodeId(4)),
        "partitions only move to the new node"
    );
}

// Goal: removing a node moves only that node's partitions, and spreads them over the others.
#[test]
fn removing_a_node_moves_only_its_partitions() {
    let directory = Directory::new(NodeId(0), (1..5).map(NodeId));
    let before = placement(&directory);
    assert!(directory.remove_node(NodeId(2)));
    let after = placement(&directory);

    let mut receivers = [0u32; 5];
    for (old, new) in before.iter().zip(&after) {
        if old == new {
            continue;
        }
        assert_eq!(*old, NodeId(2), "a partition of a surviving node moved");
        receivers[new.0 as usize] += 1;
    }
    assert!(after.iter().all(|&node| node != NodeId(2)));
    let n_orphans = before.iter().filter(|&&node| node == NodeId(2)).count() as u32;
    for node in [0, 1, 3, 4] {
        assert!(
            receivers[node] > n_orphans / 8,
            "node {node} took too few of the orphaned partitions: {receivers:?}"
        );
    }
}

// Goal: partitions spread evenly over nodes (each of 4 nodes holds 25% +- 3%).
#[test]
fn placement_is_balanced() {
    let directory = four_nodes();
    let mut counts = [0u32; 4];
    for node in placement(&directory) {
        counts[node.0 as usize] += 1;
    }
    for count in counts {
        assert!((2200..=2800).contains(&count), "{counts:?}");
    }
}

// Goal: placement is a pure function of the node set, not of join order or the process.
#[test]
fn placement_depends_only_on_the_node_set() {
    let grown = Directory::new(NodeId(3), []);
    for node in [NodeId(1), NodeId(0), NodeId(2)] {
        grown.add_node(node);
    }
    assert_eq!(placement(&grown), placement(&four_nodes()));
    // Pinned values: other processes and later builds must agree on these.
    let pinned: Vec<NodeId> = (0..6)
        .map(|partition| four_nodes().node_of(ActorId::new(ServiceId(1), partition)))
        .collect();
    assert_eq!(pinned, PINNED);
}

const PINNED: [NodeId; 6] = [
    NodeId(1),
    NodeId(0),
    NodeId(3),
    NodeId(1),
    NodeId(1),
    NodeId(2),
];

// Goal: embedded mode has one node that hosts everything, and it cannot be removed.
#[test]
fn embedded_system_places_everything_on_its_node() {
    let system = ActorSystem::new(SystemConfig::embedded());
    let directory = system.directory();
    assert_eq!(directory.nodes(), vec![NodeId(0)]);
    assert!(placement(directory).iter().all(|&node| node == NodeId(0)));
    assert!(!directory.remove_node(NodeId(0)), "the last node stays");
    assert!(!directory.add_node(NodeId(0)), "already present");
    assert_eq!(directory.nodes(), vec![NodeId(0)]);
}

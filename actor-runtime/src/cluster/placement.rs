//! Placement of a service's partitions over the live cluster members, by the rendezvous
//! `Directory`: every node computes the same owners from the same member names, and a join or a
//! leave moves only the partitions the joining node wins or the leaving node held.

use std::hash::Hasher;

use crate::directory::Directory;
use crate::id::{ActorId, NodeId, ServiceId, StableHasher};

/// The directory id of the node named `name`: a seedless hash of the name, so every node (and
/// every build) derives the same id from the same name. Two names with the same id cannot be
/// members at once (the second is refused at join).
pub fn node_id_of(name: &str) -> NodeId {
    let mut hasher = StableHasher::new();
    hasher.write(name.as_bytes());
    // The low half of a well-mixed 64-bit hash; the directory's ids are 32 bits.
    NodeId(hasher.finish() as u32)
}

/// The owner of each partition `0..n_partitions` (by index) among `members` (node names, in any
/// order, duplicates ignored). Empty when there are no members.
pub fn place_partitions<S: AsRef<str>>(n_partitions: u32, members: &[S]) -> Vec<String> {
    let Some((first, rest)) = members.split_first() else {
        return Vec::new();
    };
    let directory = Directory::new(
        node_id_of(first.as_ref()),
        rest.iter().map(|name| node_id_of(name.as_ref())),
    );
    let name_of = |node: NodeId| {
        members
            .iter()
            .map(AsRef::as_ref)
            .find(|name| node_id_of(name) == node)
            .expect("the directory only holds members' ids")
            .to_string()
    };
    (0..n_partitions)
        .map(|partition| name_of(directory.node_of(ActorId::new(ServiceId(0), partition))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moved(before: &[String], after: &[String]) -> Vec<usize> {
        (0..before.len())
            .filter(|&p| before[p] != after[p])
            .collect()
    }

    #[test]
    fn every_order_of_the_members_gives_the_same_placement() {
        let one = place_partitions(64, &["a", "b", "c"]);
        assert_eq!(one, place_partitions(64, &["c", "a", "b", "a"]));
        assert!(["a", "b", "c"].iter().all(|n| one.iter().any(|o| o == n)));
    }

    #[test]
    fn a_leave_moves_only_the_partitions_of_the_node_that_left() {
        let before = place_partitions(256, &["n1", "n2", "n3"]);
        let after = place_partitions(256, &["n1", "n2"]);
        let moved = moved(&before, &after);
        assert!(!moved.is_empty());
        assert!(moved.iter().all(|&p| before[p] == "n3"), "{moved:?}");
        assert!(after.iter().all(|owner| owner != "n3"));
    }

    #[test]
    fn a_join_moves_only_the_partitions_the_new_node_takes() {
        let before = place_partitions(256, &["n1", "n2"]);
        let after = place_partitions(256, &["n1", "n2", "n3"]);
        let moved = moved(&before, &after);
        assert!(!moved.is_empty());
        assert!(moved.iter().all(|&p| after[p] == "n3"), "{moved:?}");
    }

    #[test]
    fn no_members_place_nothing() {
        assert!(place_partitions::<&str>(8, &[]).is_empty());
    }
}

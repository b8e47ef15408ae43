//! Cluster membership for a transaction application: a node joins others with its application's
//! [`Fingerprint`] as identity, so a node running another application (other services, tables,
//! partition counts, or store format version) is refused at join with each difference named.
//!
//! Membership here; epochs across nodes are `RuntimeConfig::cluster` with a `PartitionHost` on
//! every other node (`Cluster` is their `NodeLink`); see `docs/cluster.md`.

use std::sync::Arc;

use crate::app::{App, AppDef};
use crate::fingerprint::{Fingerprint, FingerprintDecodeError, STORE_FORMAT_VERSION};

pub use actor_runtime::cluster::{
    Cluster, ClusterConfig, ClusterError, ClusterEvent, DownReason, LinkHandler, Member,
    PeerLinkStats, place_partitions,
};

/// Starts a cluster node for `app`: `config.app_identity` is replaced by the app's encoded
/// fingerprint, and peers are compared with [`compare_identities`].
pub async fn join<A: App>(
    app: &AppDef<A>,
    mut config: ClusterConfig,
) -> Result<Cluster, ClusterError> {
    config.app_identity = identity_of(app);
    Cluster::start(config, Arc::new(compare_identities)).await
}

/// The identity a node running `app` presents: its encoded fingerprint.
pub fn identity_of<A: App>(app: &AppDef<A>) -> Vec<u8> {
    Fingerprint::of(app).encode()
}

/// Every difference between this node's identity (`ours`) and a peer's (`theirs`), worded from
/// this node's side; empty when both run the same application.
pub fn compare_identities(ours: &[u8], theirs: &[u8]) -> Vec<String> {
    let theirs = match Fingerprint::decode(theirs) {
        Ok(fingerprint) => fingerprint,
        Err(FingerprintDecodeError::OtherVersion { version }) => {
            return vec![format!(
                "store format version {version} on the peer, {STORE_FORMAT_VERSION} on this node"
            )];
        }
        Err(e) => return vec![format!("the peer's application identity: {e}")],
    };
    let ours = match Fingerprint::decode(ours) {
        Ok(fingerprint) => fingerprint,
        Err(e) => return vec![format!("this node's application identity: {e}")],
    };
    theirs
        .differences(&ours)
        .into_iter()
        .map(|difference| as_seen_between_nodes(&difference))
        .collect()
}

/// `Fingerprint::differences` words a difference as "in the store" (here: the peer) against "in
/// the application" (here: this node); say which node instead.
fn as_seen_between_nodes(difference: &str) -> String {
    difference
        .replace("in the store's", "in the peer's")
        .replace("in the store", "on the peer")
        .replace("the store has", "the peer has")
        .replace("in the application", "on this node")
        .replace("by the application", "by this node")
}

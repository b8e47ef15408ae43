//! The membership protocol's messages: what one node's member actor sends another's, and how
//! they cross the wire (rmp-serde inside ractor_cluster's cast frames).

use ractor::message::{BoxedDowncastErr, SerializedMessage};
use serde::{Deserialize, Serialize};

/// The variant name ractor_cluster carries beside the encoded peer message.
const PEER_VARIANT: &str = "vmsdb.peer";

/// A message between the member actors of two nodes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum PeerMessage {
    /// Sent once to every node whose member actor appears: who this node is and which
    /// application it runs.
    Hello {
        node: String,
        listen: String,
        identity: Vec<u8>,
    },
    /// Sent back when the receiver's identity check found differences, so both sides refuse.
    Refuse {
        node: String,
        differences: Vec<String>,
    },
    /// Sent to every admitted member each heartbeat interval.
    Heartbeat { node: String },
}

/// What a session of the node server reported (forwarded by the event subscription).
#[derive(Clone, Debug)]
pub(crate) enum SessionEvent {
    /// The session to `peer` passed the cookie challenge.
    Authenticated { session: u64, peer: String },
    /// The session ended (whether it had authenticated, the member actor knows).
    Closed {
        session: u64,
        peer_addr: String,
        outgoing: bool,
    },
}

/// The member actor's mailbox.
#[derive(Debug)]
pub(crate) enum MemberMsg {
    /// From another node's member actor.
    Peer(PeerMessage),
    /// From this node's server: a session changed.
    Session(SessionEvent),
    /// Send heartbeats and look for silent members.
    Tick,
}

// ractor's `cluster` feature drops the blanket `Message` impl: only `Peer` ever crosses the wire,
// the other variants are sent to the local actor and never serialized.
impl ractor::Message for MemberMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        let MemberMsg::Peer(message) = self else {
            return Err(BoxedDowncastErr);
        };
        let args = rmp_serde::to_vec(&message).map_err(|_| BoxedDowncastErr)?;
        Ok(SerializedMessage::Cast {
            variant: PEER_VARIANT.to_string(),
            args,
            metadata: None,
        })
    }

    fn deserialize(bytes: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        match bytes {
            SerializedMessage::Cast { variant, args, .. } if variant == PEER_VARIANT => {
                rmp_serde::from_slice(&args)
                    .map(MemberMsg::Peer)
                    .map_err(|_| BoxedDowncastErr)
            }
            _ => Err(BoxedDowncastErr),
        }
    }
}

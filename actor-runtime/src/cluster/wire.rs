//! The membership protocol's messages: what one node's member actor sends another's, and how
//! they cross the wire (rmp-serde inside ractor_cluster's cast frames). Link frames
//! (`link.rs`) travel the same way under their own variant name, in their own byte layout.

use ractor::message::{BoxedDowncastErr, SerializedMessage};
use serde::{Deserialize, Serialize};

use super::link::LinkFrame;

/// The variant name ractor_cluster carries beside the encoded peer message.
const PEER_VARIANT: &str = "vmsdb.peer";

/// The variant name of a link frame (a request or a reply between two nodes' link users).
const LINK_VARIANT: &str = "vmsdb.link";

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
    /// The session to `peer` (which accepts peers on `listen`) passed the cookie challenge.
    Authenticated {
        session: u64,
        peer: String,
        listen: String,
    },
    /// The session ended (whether it had authenticated, the member actor knows); `peer` is the
    /// name the peer gave, if it got that far.
    Closed {
        session: u64,
        peer_addr: String,
        outgoing: bool,
        peer: Option<String>,
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
    /// A link request or reply, to or from another node.
    Link(LinkFrame),
}

// ractor's `cluster` feature drops the blanket `Message` impl: only `Peer` and `Link` ever cross
// the wire, the other variants are sent to the local actor and never serialized.
impl ractor::Message for MemberMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        let (variant, args) = match self {
            MemberMsg::Peer(message) => {
                let args = rmp_serde::to_vec(&message).map_err(|_| BoxedDowncastErr)?;
                (PEER_VARIANT, args)
            }
            MemberMsg::Link(frame) => (LINK_VARIANT, frame.encode()),
            MemberMsg::Session(_) | MemberMsg::Tick => return Err(BoxedDowncastErr),
        };
        Ok(SerializedMessage::Cast {
            variant: variant.to_string(),
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
            SerializedMessage::Cast { variant, args, .. } if variant == LINK_VARIANT => {
                LinkFrame::decode(args)
                    .map(MemberMsg::Link)
                    .ok_or(BoxedDowncastErr)
            }
            _ => Err(BoxedDowncastErr),
        }
    }
}

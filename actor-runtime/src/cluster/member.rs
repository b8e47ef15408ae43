//! The member actor: one per node. It greets every peer's member actor with this node's name
//! and application identity, admits or refuses it, sends heartbeats, and declares a member dead
//! when it falls silent for the failure timeout or its session closes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::pg::GroupChangeMessage;
use ractor::{
    Actor, ActorCell, ActorId as RactorActorId, ActorProcessingErr, ActorRef, SupervisionEvent,
};

use super::link::LinkFrame;
use super::placement::node_id_of;
use super::wire::{MemberMsg, PeerMessage, SessionEvent};
use super::{ClusterEvent, DownReason, IdentityCompare, Member, Shared};

/// The process group every node's member actor joins; ractor_cluster mirrors it across
/// sessions, which is how a node finds its peers' member actors.
pub(crate) const MEMBERS_GROUP: &str = "vmsdb.cluster.members";

/// What the member actor needs from the node's configuration.
pub(crate) struct MemberSettings {
    pub node_name: String,
    pub listen: String,
    pub identity: Vec<u8>,
    pub heartbeat_interval: Duration,
    pub failure_timeout: Duration,
    pub compare: IdentityCompare,
}

pub(crate) struct MemberActor {
    pub settings: Arc<MemberSettings>,
    pub shared: Arc<Shared>,
}

/// Whether a greeted peer is a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Up,
    /// Declared dead by the failure detector while its session stayed open; a heartbeat brings
    /// it back.
    Silent,
    Refused,
}

struct Peer {
    session: u64,
    status: Status,
    last_heard: Instant,
    listen: String,
}

/// The member actor's state: sessions, the peers' member actors, and each peer's status.
#[derive(Default)]
pub(crate) struct MemberState {
    /// Authenticated sessions: session id → the peer's node name.
    session_names: HashMap<u64, String>,
    /// Authenticated sessions: session id → the address the peer accepts peers on.
    session_listens: HashMap<u64, String>,
    /// The peer's member actor on each session.
    cells: HashMap<u64, ActorCell>,
    /// Hellos that arrived before their session's name or member actor was known.
    pending: BTreeMap<String, PeerMessage>,
    /// Greeted peers by name (ordered, so heartbeats and timeouts go out in one order).
    peers: BTreeMap<String, Peer>,
    /// When the last heartbeat tick ran: a tick much later than the interval means this node
    /// itself was not running (frozen, swapped out, starved), see [`discount_own_pause`].
    last_tick: Option<Instant>,
}

impl Actor for MemberActor {
    type Msg = MemberMsg;
    type State = MemberState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<MemberMsg>,
        _: (),
    ) -> Result<MemberState, ActorProcessingErr> {
        ractor::pg::monitor(MEMBERS_GROUP.to_string(), myself.get_cell());
        ractor::pg::join(MEMBERS_GROUP.to_string(), vec![myself.get_cell()]);
        let mut state = MemberState::default();
        // Peers whose member actors were mirrored before this actor monitored the group.
        for cell in ractor::pg::get_members(&MEMBERS_GROUP.to_string()) {
            self.on_cell_joined(&mut state, cell);
        }
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<MemberMsg>,
        message: MemberMsg,
        state: &mut MemberState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MemberMsg::Peer(peer) => self.on_peer_message(state, peer),
            MemberMsg::Session(event) => self.on_session_event(state, event),
            MemberMsg::Tick => self.on_tick(state),
            MemberMsg::Link(frame) => self.on_link_frame(state, frame),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<MemberMsg>,
        event: SupervisionEvent,
        state: &mut MemberState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ProcessGroupChanged(GroupChangeMessage::Join(_, group, cells))
                if group == MEMBERS_GROUP =>
            {
                for cell in cells {
                    self.on_cell_joined(state, cell);
                }
            }
            SupervisionEvent::ProcessGroupChanged(GroupChangeMessage::Leave(_, group, cells))
                if group == MEMBERS_GROUP =>
            {
                for cell in cells {
                    if let Some(session) = session_of(&cell) {
                        state.cells.remove(&session);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The session a remote actor was mirrored over; `None` for a local actor.
fn session_of(cell: &ActorCell) -> Option<u64> {
    match cell.get_id() {
        RactorActorId::Remote { node_id, .. } => Some(node_id),
        RactorActorId::Local(_) => None,
    }
}

impl MemberActor {
    fn on_cell_joined(&self, state: &mut MemberState, cell: ActorCell) {
        let Some(session) = session_of(&cell) else {
            return;
        };
        if state.cells.contains_key(&session) {
            return;
        }
        let hello = PeerMessage::Hello {
            node: self.settings.node_name.clone(),
            listen: self.settings.listen.clone(),
            identity: self.settings.identity.clone(),
        };
        send(&cell, hello);
        // A member that moved to this session (its other one closed) is reached through it.
        let moved_here = state
            .peers
            .iter()
            .find(|(_, p)| p.session == session && p.status == Status::Up);
        if let Some((name, _)) = moved_here {
            self.shared.link.peer_up(name, cell.clone());
        }
        state.cells.insert(session, cell);
        self.retry_pending(state);
    }

    fn on_session_event(&self, state: &mut MemberState, event: SessionEvent) {
        match event {
            SessionEvent::Authenticated {
                session,
                peer,
                listen,
            } => {
                state.session_names.insert(session, peer);
                state.session_listens.insert(session, listen);
                self.retry_pending(state);
            }
            SessionEvent::Closed {
                session,
                peer_addr,
                outgoing,
                peer,
            } => {
                state.session_listens.remove(&session);
                match state.session_names.remove(&session) {
                    Some(name) => self.on_member_session_closed(state, session, name),
                    None => {
                        self.on_unauthenticated_closed(state, session, peer_addr, outgoing, peer)
                    }
                }
            }
        }
    }

    /// A session closed before it authenticated: a peer with another cookie, unless another
    /// session to the same node did authenticate. Two nodes that connect to each other at once
    /// (a join, where the seed's members connect back) keep one session and close the other,
    /// which is no sign of a wrong cookie.
    fn on_unauthenticated_closed(
        &self,
        state: &mut MemberState,
        session: u64,
        peer_addr: String,
        outgoing: bool,
        peer: Option<String>,
    ) {
        state.cells.remove(&session);
        let duplicate = state.session_names.iter().any(|(other, name)| {
            peer.as_ref() == Some(name) || state.session_listens.get(other) == Some(&peer_addr)
        });
        if duplicate {
            tracing::debug!(%peer_addr, ?peer, "a duplicate cluster session closed");
            return;
        }
        tracing::warn!(
            %peer_addr,
            "a cluster session closed before authenticating (wrong cookie?)"
        );
        self.publish(ClusterEvent::Unauthenticated {
            peer_addr,
            outgoing,
        });
    }

    /// The authenticated session `session` to `name` closed: if it was the member's current
    /// session, the member is gone (a newer session of a restarted node is left alone), unless
    /// another authenticated session to it remains: two nodes that connected to each other at
    /// once keep one session, and the member moves to it.
    fn on_member_session_closed(&self, state: &mut MemberState, session: u64, name: String) {
        state.cells.remove(&session);
        let Some(peer) = state.peers.get(&name).filter(|p| p.session == session) else {
            return;
        };
        let was_up = peer.status == Status::Up;
        let remaining = state
            .session_names
            .iter()
            .filter(|(_, other)| **other == name)
            .map(|(other, _)| *other)
            .max();
        if let Some(remaining) = remaining.filter(|_| was_up) {
            tracing::info!(node = %name, session, remaining, "cluster node moved to its other session");
            if let Some(peer) = state.peers.get_mut(&name) {
                peer.session = remaining;
            }
            // Until the remaining session's member actor is known, requests fail at once
            // rather than wait on the closed one (`on_cell_joined` routes them again).
            match state.cells.get(&remaining) {
                Some(cell) => self.shared.link.peer_up(&name, cell.clone()),
                None => self.shared.link.peer_down(&name, &DownReason::Disconnected),
            }
            return;
        }
        state.peers.remove(&name);
        if was_up {
            self.declare_down(&name, DownReason::Disconnected);
        }
    }

    fn retry_pending(&self, state: &mut MemberState) {
        let names: Vec<String> = state.pending.keys().cloned().collect();
        for name in names {
            if let Some(hello) = state.pending.remove(&name) {
                self.on_peer_message(state, hello);
            }
        }
    }

    /// The newest authenticated session to `node` whose member actor is known.
    fn session_to(state: &MemberState, node: &str) -> Option<u64> {
        state
            .session_names
            .iter()
            .filter(|(session, name)| *name == node && state.cells.contains_key(session))
            .map(|(session, _)| *session)
            .max()
    }

    fn on_peer_message(&self, state: &mut MemberState, message: PeerMessage) {
        match message {
            PeerMessage::Hello {
                ref node,
                ref listen,
                ref identity,
            } => {
                let Some(session) = Self::session_to(state, node) else {
                    state.pending.insert(node.clone(), message);
                    return;
                };
                self.on_hello(state, session, node, listen, identity);
            }
            PeerMessage::Refuse { node, differences } => {
                self.shared.refused_by.send_modify(|names| {
                    names.insert(node.clone());
                });
                self.on_refused(state, node, differences)
            }
            PeerMessage::Heartbeat { node } => self.on_heartbeat(state, &node),
        }
    }

    fn on_hello(&self, st: &mut MemberState, session: u64, node: &str, listen: &str, id: &[u8]) {
        let current = st.peers.get(node);
        if current.is_some_and(|p| p.status == Status::Up && p.session == session) {
            // A member that moved to this session greets again over it: nothing changed.
            return;
        }
        let differences = self.admission_differences(st, node, id);
        if !differences.is_empty() {
            let refuse = PeerMessage::Refuse {
                node: self.settings.node_name.clone(),
                differences: differences.clone(),
            };
            send(&st.cells[&session], refuse);
            self.on_refused(st, node.to_string(), differences);
            return;
        }
        let peer = Peer {
            session,
            status: Status::Up,
            last_heard: Instant::now(),
            listen: listen.to_string(),
        };
        st.peers.insert(node.to_string(), peer);
        self.shared.link.peer_up(node, st.cells[&session].clone());
        let member = Member {
            name: node.to_string(),
            listen: listen.to_string(),
        };
        self.shared.members.insert(node.to_string(), member.clone());
        tracing::info!(node = %node, listen = %listen, "cluster node up");
        self.publish(ClusterEvent::NodeUp { member });
    }

    /// Why `node` presenting `identity` cannot be a member; empty when it can.
    fn admission_differences(
        &self,
        state: &MemberState,
        node: &str,
        identity: &[u8],
    ) -> Vec<String> {
        let mut differences = (self.settings.compare)(&self.settings.identity, identity);
        let id = node_id_of(node);
        let ours = &self.settings.node_name;
        let colliding = std::iter::once(ours)
            .chain(
                state
                    .peers
                    .iter()
                    .filter(|(_, p)| p.status == Status::Up)
                    .map(|(n, _)| n),
            )
            .find(|name| *name != node && node_id_of(name) == id);
        if node == ours {
            differences.push(format!("node name `{node}` is this node's own name"));
        } else if let Some(other) = colliding {
            differences.push(format!(
                "node name `{node}` hashes to the same placement id as member `{other}`: rename one"
            ));
        }
        differences
    }

    fn on_refused(&self, state: &mut MemberState, node: String, differences: Vec<String>) {
        let was_up = state
            .peers
            .get(&node)
            .is_some_and(|p| p.status == Status::Up);
        let already_refused = state
            .peers
            .get(&node)
            .is_some_and(|p| p.status == Status::Refused);
        if let Some(session) = Self::session_to(state, &node) {
            let peer = Peer {
                session,
                status: Status::Refused,
                last_heard: Instant::now(),
                listen: String::new(),
            };
            state.peers.insert(node.clone(), peer);
        }
        if was_up {
            self.declare_down(&node, DownReason::Refused);
        }
        if already_refused {
            return;
        }
        tracing::warn!(node = %node, ?differences, "cluster node refused: it runs another application");
        self.publish(ClusterEvent::Refused { node, differences });
    }

    fn on_heartbeat(&self, state: &mut MemberState, node: &str) {
        let Some(peer) = state.peers.get_mut(node) else {
            return;
        };
        match peer.status {
            Status::Up => peer.last_heard = Instant::now(),
            Status::Silent => {
                peer.status = Status::Up;
                peer.last_heard = Instant::now();
                if let Some(cell) = state.cells.get(&peer.session) {
                    self.shared.link.peer_up(node, cell.clone());
                }
                let member = Member {
                    name: node.to_string(),
                    listen: peer.listen.clone(),
                };
                tracing::info!(node = %node, "cluster node heard again after being declared dead");
                self.shared.members.insert(node.to_string(), member.clone());
                self.publish(ClusterEvent::NodeUp { member });
            }
            Status::Refused => {}
        }
    }

    fn on_tick(&self, state: &mut MemberState) {
        let now = Instant::now();
        let paused = discount_own_pause(
            state.last_tick.replace(now),
            now,
            self.settings.heartbeat_interval,
            state.peers.values_mut().map(|p| &mut p.last_heard),
        );
        if !paused.is_zero() {
            tracing::warn!(
                paused_ms = paused.as_millis() as u64,
                "this node did not run for a while: its peers' silence during the pause is not counted"
            );
        }
        let heartbeat = PeerMessage::Heartbeat {
            node: self.settings.node_name.clone(),
        };
        let mut silent = Vec::new();
        for (name, peer) in state.peers.iter_mut() {
            match peer.status {
                Status::Up => {
                    let quiet = now.saturating_duration_since(peer.last_heard);
                    if quiet > self.settings.failure_timeout {
                        peer.status = Status::Silent;
                        silent.push((name.clone(), quiet));
                        continue;
                    }
                }
                // A silent peer is still sent heartbeats over its open session: when the two
                // can hear each other again (a pause or a network fault ended), each brings the
                // other back, instead of both waiting for a heartbeat neither sends.
                Status::Silent => {}
                Status::Refused => continue,
            }
            if let Some(cell) = state.cells.get(&peer.session) {
                send(cell, heartbeat.clone());
            }
        }
        for (name, silent_for) in silent {
            self.declare_down(&name, DownReason::HeartbeatTimeout { silent_for });
        }
    }

    fn declare_down(&self, node: &str, reason: DownReason) {
        self.shared.members.remove(node);
        self.shared.link.peer_down(node, &reason);
        tracing::warn!(node = %node, %reason, "cluster node down");
        self.publish(ClusterEvent::NodeDown {
            node: node.to_string(),
            reason,
        });
    }

    /// A link frame from `frame.from`: a request is answered on its own task; a request from a
    /// node not admitted (yet) is answered, with that reason, over its session.
    fn on_link_frame(&self, state: &MemberState, frame: LinkFrame) {
        let fallback = if self.shared.link.needs_fallback(&frame) {
            Self::session_to(state, &frame.from).map(|s| state.cells[&s].clone())
        } else {
            None
        };
        self.shared.link.on_frame(frame, fallback);
    }

    fn publish(&self, event: ClusterEvent) {
        // No subscriber is not an error: events are for whoever listens.
        let _ = self.shared.events.send(event);
    }
}

/// Moves each `last_heard` forward by how much later than `interval` this tick came after the
/// previous one (`previous`, `None` at the first tick), when that is more than another whole
/// interval (a pause), and returns what it discounted (zero for a tick on time).
///
/// A node that was not running (SIGSTOP, a VM paused, a starved runtime) processes its tick
/// before the heartbeats its peers sent meanwhile, which wait in its sockets and mailbox: judged
/// on the times it last heard them before the pause, every peer would look silent. Only the time
/// this node was itself running counts as a peer's silence; a tick on time moves nothing, so a
/// peer that really stopped is still declared dead after the failure timeout.
fn discount_own_pause<'a>(
    previous: Option<Instant>,
    now: Instant,
    interval: Duration,
    last_heard: impl Iterator<Item = &'a mut Instant>,
) -> Duration {
    let Some(previous) = previous else {
        return Duration::ZERO;
    };
    let late = now
        .saturating_duration_since(previous)
        .saturating_sub(interval);
    // A tick a little late is a busy scheduler, not a pause: discounting that jitter at every
    // tick would add up and keep a dead peer looking alive for longer than the failure timeout
    // (and warn ten times a second on a loaded machine).
    if late <= interval {
        return Duration::ZERO;
    }
    for heard in last_heard {
        *heard = (*heard + late).min(now);
    }
    late
}

/// Casts `message` to a peer's member actor; a peer that just went away is found by the
/// failure detector or its session's close, so a failed send needs no handling here.
fn send(cell: &ActorCell, message: PeerMessage) {
    let _ = cell.send_message::<MemberMsg>(MemberMsg::Peer(message));
}

#[cfg(test)]
mod tests {
    use super::discount_own_pause;
    use std::time::{Duration, Instant};

    const INTERVAL: Duration = Duration::from_millis(100);

    #[test]
    fn a_tick_on_time_moves_no_last_heard() {
        let start = Instant::now();
        let mut heard = [start, start + Duration::from_millis(50)];
        let now = start + INTERVAL;
        let paused = discount_own_pause(Some(start), now, INTERVAL, heard.iter_mut());
        assert_eq!(paused, Duration::ZERO);
        assert_eq!(heard, [start, start + Duration::from_millis(50)]);
    }

    #[test]
    fn a_tick_late_by_less_than_an_interval_moves_no_last_heard() {
        let start = Instant::now();
        let mut heard = [start - Duration::from_millis(30), start];
        let now = start + INTERVAL + Duration::from_millis(90);
        let paused = discount_own_pause(Some(start), now, INTERVAL, heard.iter_mut());
        assert_eq!(paused, Duration::ZERO);
        assert_eq!(heard, [start - Duration::from_millis(30), start]);
    }

    #[test]
    fn a_late_tick_does_not_count_the_pause_as_the_peers_silence() {
        let start = Instant::now();
        // Last heard 80 ms before the previous tick, then this node stopped for 3 s.
        let mut heard = [start - Duration::from_millis(80), start];
        let now = start + Duration::from_secs(3);
        let paused = discount_own_pause(Some(start), now, INTERVAL, heard.iter_mut());
        assert_eq!(paused, Duration::from_secs(3) - INTERVAL);
        // Each peer is as quiet as it was when the pause began, plus one interval.
        assert_eq!(now - heard[0], Duration::from_millis(180));
        assert_eq!(now - heard[1], INTERVAL);
    }

    #[test]
    fn no_last_heard_moves_past_now_or_at_the_first_tick() {
        let start = Instant::now();
        let now = start + Duration::from_secs(1);
        let mut heard = [now];
        discount_own_pause(Some(start), now, INTERVAL, heard.iter_mut());
        assert_eq!(heard, [now]);
        let mut heard = [start];
        assert_eq!(
            discount_own_pause(None, now, INTERVAL, heard.iter_mut()),
            Duration::ZERO
        );
        assert_eq!(heard, [start]);
    }
}

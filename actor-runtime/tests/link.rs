//! The link between cluster nodes, with three nodes in three processes on 127.0.0.1 (ractor
//! keeps one registry per process, so one node per process): each node sends a batch of
//! requests to each other node and checks every reply and the byte counts of `link_stats` on
//! both sides; a request a slow peer does not answer times out; a request pending on a frozen
//! node (SIGSTOP) fails when the heartbeats declare it dead, one pending on a SIGKILLed node
//! fails as soon as its session closes, and a new request to either fails at once; each error
//! names the node. The frozen node, resumed, declares nobody dead for its own pause and is taken
//! back. The killed node, restarted, answers again.
//!
//! The nodes are this test binary run again as child processes: `link_node_process` (ignored
//! in normal runs) becomes a node when `LINK_TEST_NODE` is set, and takes commands on stdin.
//! Every wait polls the children's stdout with a deadline; every child is killed when its
//! guard drops.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use actor_runtime::cluster::{Cluster, ClusterConfig, identical_bytes};

const COOKIE: &str = "link-test-cookie";
const HEARTBEAT: Duration = Duration::from_millis(100);
const FAILURE_TIMEOUT: Duration = Duration::from_millis(1000);
/// Longer than every failure this test provokes, so none of them is a timeout by accident.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The timeout of the one request that is meant to time out.
const SHORT_TIMEOUT: Duration = Duration::from_millis(300);
/// Longest wait for anything a node should print.
const WAIT: Duration = Duration::from_secs(15);
/// Requests each node sends each other node, all in flight at once.
const REQUESTS_PER_PEER: usize = 20;
/// Bytes of each request's payload.
const REQUEST_BYTES: usize = 1000;
/// A payload whose handler never answers.
const HANG: &[u8] = b"hang";
/// The link counts each frame as its payload plus the sender's name plus this many bytes.
const FRAME_TRAILER_BYTES: u64 = 11;

/// The payload `from` sends `to` as its request number `index`.
fn request_payload(from: &str, to: &str, index: usize) -> Vec<u8> {
    let mut payload = format!("{from}->{to}#{index}:").into_bytes();
    payload.extend((payload.len()..REQUEST_BYTES).map(|j| (j * 7 + index) as u8));
    payload
}

/// What node `me` answers to `payload`: the payload reversed, then its own name.
fn reply_payload(me: &str, payload: &[u8]) -> Vec<u8> {
    let mut reply: Vec<u8> = payload.iter().rev().copied().collect();
    reply.extend_from_slice(me.as_bytes());
    reply
}

// ---- the child: one node, driven by commands on stdin -------------------------------------

#[test]
#[ignore = "one node of `three_nodes_exchange_requests_and_a_lost_node_fails_its_requests`, \
            started by it as a child process"]
fn link_node_process() {
    let Ok(name) = std::env::var("LINK_TEST_NODE") else {
        return;
    };
    let listen: SocketAddr = std::env::var("LINK_TEST_LISTEN").unwrap().parse().unwrap();
    let seeds: Vec<SocketAddr> = std::env::var("LINK_TEST_SEEDS")
        .unwrap()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run_node(name, listen, seeds));
}

async fn run_node(name: String, listen: SocketAddr, seeds: Vec<SocketAddr>) {
    let mut config = ClusterConfig::new(name.clone(), listen, COOKIE, b"link-test".to_vec());
    config.seeds = seeds;
    config.heartbeat_interval = HEARTBEAT;
    config.failure_timeout = FAILURE_TIMEOUT;
    config.request_timeout = REQUEST_TIMEOUT;
    let cluster = Arc::new(Cluster::start(config, identical_bytes()).await.unwrap());
    let me = name.clone();
    cluster.serve(move |from, payload| {
        let me = me.clone();
        async move {
            if payload == HANG {
                println!("serving hang from {from}");
                std::future::pending::<()>().await;
            }
            reply_payload(&me, &payload)
        }
    });
    print_members(&cluster);
    let mut events = cluster.subscribe();
    let watched = cluster.clone();
    tokio::spawn(async move {
        while events.recv().await.is_ok() {
            print_members(&watched);
        }
    });
    let (commands, mut received) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if commands.send(line).is_err() {
                break;
            }
        }
    });
    println!("node {name} listening");
    while let Some(line) = received.recv().await {
        let (command, peer) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        run_command(&cluster, command, peer.to_string()).await;
    }
}

fn print_members(cluster: &Cluster) {
    let names: Vec<String> = cluster.members().into_iter().map(|m| m.name).collect();
    println!("members {}", names.join(","));
}

async fn run_command(cluster: &Arc<Cluster>, command: &str, peer: String) {
    match command {
        "exchange" => exchange(cluster, peer.split(',').map(str::to_string).collect()).await,
        "members" => {
            let names: Vec<String> = cluster.members().into_iter().map(|m| m.name).collect();
            println!("now members {}", names.join(","));
        }
        "stats" => {
            for (peer, s) in cluster.link_stats() {
                let (ms, bs, mr, br) = (
                    s.messages_sent,
                    s.bytes_sent,
                    s.messages_received,
                    s.bytes_received,
                );
                println!("stats {peer} {ms} {bs} {mr} {br}");
            }
            println!("stats end");
        }
        "hang" | "request" | "slow" => {
            let cluster = cluster.clone();
            let command = command.to_string();
            tokio::spawn(async move {
                let started = Instant::now();
                let result = match command.as_str() {
                    "slow" => {
                        cluster
                            .request_with_timeout(&peer, HANG.to_vec(), SHORT_TIMEOUT)
                            .await
                    }
                    "hang" => cluster.request(&peer, HANG.to_vec()).await,
                    _ => cluster.request(&peer, b"ping".to_vec()).await,
                };
                let ms = started.elapsed().as_millis();
                match result {
                    Ok(_) => println!("answered {peer} after {ms}ms"),
                    Err(e) => println!("failed {peer} after {ms}ms: {e}"),
                }
            });
        }
        other => panic!("unknown command {other:?}"),
    }
}

/// Sends `REQUESTS_PER_PEER` requests to each of `peers`, all at once, and checks each reply.
async fn exchange(cluster: &Arc<Cluster>, peers: Vec<String>) {
    let me = cluster.node_name().to_string();
    let mut requests = tokio::task::JoinSet::new();
    for peer in peers {
        for index in 0..REQUESTS_PER_PEER {
            let (cluster, me, peer) = (cluster.clone(), me.clone(), peer.clone());
            requests.spawn(async move {
                let payload = request_payload(&me, &peer, index);
                let expected = reply_payload(&peer, &payload);
                let reply = cluster.request(&peer, payload).await;
                match reply {
                    Ok(reply) if reply == expected => Ok(()),
                    Ok(_) => Err(format!("wrong reply from {peer} to request {index}")),
                    Err(e) => Err(format!("request {index} to {peer}: {e}")),
                }
            });
        }
    }
    let mut problems = Vec::new();
    while let Some(done) = requests.join_next().await {
        if let Err(problem) = done.unwrap() {
            problems.push(problem);
        }
    }
    if problems.is_empty() {
        println!("exchanged");
    } else {
        println!("exchange failed: {}", problems.join("; "));
    }
}

// ---- the parent: three child nodes ---------------------------------------------------------

/// A child node process, killed on drop, with its stdout lines arriving on a channel.
struct Node {
    name: String,
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on 127.0.0.1 nothing listens on right now.
fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address")
}

fn spawn_node(name: &str, listen: SocketAddr, seeds: &[SocketAddr]) -> Node {
    let seeds: Vec<String> = seeds.iter().map(ToString::to_string).collect();
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args(["link_node_process", "--exact", "--ignored", "--nocapture"])
        .env("LINK_TEST_NODE", name)
        .env("LINK_TEST_LISTEN", listen.to_string())
        .env("LINK_TEST_SEEDS", seeds.join(","))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn a node process");
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut node = Node {
        name: name.to_string(),
        child,
        stdin,
        lines,
        seen: Vec::new(),
    };
    let listening = format!("node {name} listening");
    node.wait_line(|l| l == listening);
    node
}

impl Node {
    /// The next line (after those already read) that satisfies `wanted`, waiting at most `WAIT`.
    fn wait_line(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => panic!(
                    "node {} did not print the expected line within {WAIT:?}; it printed:\n{}",
                    self.name,
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits until the membership this node printed last is `members` (a node may print it
    /// before it says it is listening, while `spawn_node` still waits for that line).
    fn wait_members(&mut self, members: &str) {
        let last = self.seen.iter().rev().find(|l| l.starts_with("members "));
        if last.is_some_and(|l| l == members) {
            return;
        }
        self.wait_line(|l| l == members);
    }

    /// The next line saying how a request of this node to `peer` ended.
    fn outcome_with(&mut self, peer: &str) -> String {
        let (failed, answered) = (format!("failed {peer} "), format!("answered {peer} "));
        self.wait_line(|l| l.starts_with(&failed) || l.starts_with(&answered))
    }

    fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write a command to the node");
        self.stdin.flush().expect("flush the command");
    }

    /// The node's `link_stats`: per peer (messages sent, bytes sent, messages received, bytes
    /// received).
    fn stats(&mut self) -> PeerCounts {
        self.command("stats");
        let mut stats = Vec::new();
        loop {
            let line = self.wait_line(|l| l.starts_with("stats "));
            let fields: Vec<&str> = line.split(' ').collect();
            if fields[1] == "end" {
                return stats;
            }
            let counts = [2, 3, 4, 5].map(|i| fields[i].parse::<u64>().expect("a count"));
            stats.push((fields[1].to_string(), counts));
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }
}

/// A node's link stats: per peer, (messages sent, bytes sent, messages received, bytes
/// received).
type PeerCounts = Vec<(String, [u64; 4])>;

/// What a node named like the others (two bytes) sends a peer in the exchange: its requests,
/// and its replies to the peer's requests (reversed payload plus its name).
fn expected_exchange_bytes() -> u64 {
    let name = 2;
    let requests = REQUEST_BYTES as u64 + name + FRAME_TRAILER_BYTES;
    let replies = REQUEST_BYTES as u64 + name + name + FRAME_TRAILER_BYTES;
    REQUESTS_PER_PEER as u64 * (requests + replies)
}

#[test]
fn three_nodes_exchange_requests_and_a_lost_node_fails_its_requests() {
    let names = ["n1", "n2", "n3"];
    let addrs = [free_addr(), free_addr(), free_addr()];
    let mut nodes = vec![spawn_node(names[0], addrs[0], &[])];
    nodes.push(spawn_node(names[1], addrs[1], &[addrs[0]]));
    nodes.push(spawn_node(names[2], addrs[2], &[addrs[0]]));
    for node in &mut nodes {
        node.wait_members("members n1,n2,n3");
    }

    for (i, node) in nodes.iter_mut().enumerate() {
        let others: Vec<&str> = names.iter().copied().filter(|n| *n != names[i]).collect();
        node.command(&format!("exchange {}", others.join(",")));
    }
    for node in &mut nodes {
        let line = node.wait_line(|l| l.starts_with("exchange"));
        assert_eq!(line, "exchanged", "node {}", node.name);
    }
    check_link_stats(&mut nodes);

    let [n1, n2, n3] = &mut nodes[..] else {
        unreachable!()
    };
    n1.command("slow n2");
    n2.wait_line(|l| l == "serving hang from n1");
    let line = n1.outcome_with("n2");
    assert!(
        line.contains("node `n2` did not answer a request within 300ms"),
        "{line}"
    );

    // A frozen process keeps its session open: only the heartbeats can tell it is gone.
    let (line, failed_in) = lose_with_a_pending_request(n1, n2, "-STOP");
    assert!(line.contains("no heartbeat"), "{line}");
    assert!(
        failed_in <= FAILURE_TIMEOUT + Duration::from_millis(1000),
        "the request pending on the frozen n2 failed {failed_in:?} after the freeze"
    );
    let (line, failed_in) = lose_with_a_pending_request(n1, n3, "-KILL");
    assert!(line.contains("its session closed"), "{line}");
    assert!(
        failed_in <= FAILURE_TIMEOUT + Duration::from_millis(500),
        "the request pending on the killed n3 failed {failed_in:?} after the kill"
    );
    resume_counting_no_peer_dead(n1, n2);
    n2.signal("-KILL");
    n1.wait_line(|l| l == "members n1");

    // A restarted node is reachable again once it is a member again.
    nodes[2] = spawn_node(names[2], addrs[2], &[addrs[0]]);
    nodes[0].wait_line(|l| l == "members n1,n3");
    nodes[0].command("request n3");
    let line = nodes[0].outcome_with("n3");
    assert!(line.starts_with("answered n3"), "{line}");
}

/// `frozen`, stopped (SIGSTOP) long enough for `peer` to declare it dead, resumes: its first
/// tick comes before the heartbeats `peer` sent meanwhile, but it does not count its own pause
/// as `peer`'s silence, so it never declares `peer` dead, and its heartbeats bring it back at
/// `peer`.
fn resume_counting_no_peer_dead(peer: &mut Node, frozen: &mut Node) {
    let before = frozen.seen.len();
    frozen.signal("-CONT");
    let back = format!("members {},{}", peer.name, frozen.name);
    peer.wait_line(|l| l == back);
    frozen.command("members");
    frozen.wait_line(|l| l.starts_with("now members "));
    let lists_peer = |l: &str| l.split([' ', ',']).any(|n| n == peer.name);
    let listed_without_peer: Vec<&String> = frozen.seen[before..]
        .iter()
        .filter(|l| l.contains("members ") && !lists_peer(l))
        .collect();
    assert!(
        listed_without_peer.is_empty(),
        "{} declared {} dead after it resumed: {listed_without_peer:?}",
        frozen.name,
        peer.name
    );
}

/// Sends `lost` a request its handler never answers, then `signal`s it: the request fails
/// with an error naming `lost` (returned, with how long after the signal it came), and a new
/// request to `lost` fails at once.
fn lose_with_a_pending_request(
    from: &mut Node,
    lost: &mut Node,
    signal: &str,
) -> (String, Duration) {
    from.command(&format!("hang {}", lost.name));
    let serving = format!("serving hang from {}", from.name);
    lost.wait_line(|l| l == serving);
    lost.signal(signal);
    let signalled_at = Instant::now();
    let line = from.outcome_with(&lost.name);
    let failed_in = signalled_at.elapsed();
    eprintln!(
        "{} after {signal}: {line} ({failed_in:?} after the signal)",
        lost.name
    );
    let dead = format!("failed {} after", lost.name);
    assert!(line.starts_with(&dead), "{line}");
    let named = format!(
        "node `{}` was declared dead while a request to it waited",
        lost.name
    );
    assert!(line.contains(&named), "{line}");
    from.command(&format!("request {}", lost.name));
    let again = from.outcome_with(&lost.name);
    let unavailable = format!("no link to node `{}`", lost.name);
    assert!(again.contains(&unavailable), "{again}");
    (line, failed_in)
}

/// Every node counted, for each peer, exactly the frames of the exchange both ways, and what
/// one side counts as sent the other counts as received.
fn check_link_stats(nodes: &mut [Node]) {
    let all: Vec<(String, PeerCounts)> = nodes
        .iter_mut()
        .map(|node| (node.name.clone(), node.stats()))
        .collect();
    let messages = 2 * REQUESTS_PER_PEER as u64;
    let bytes = expected_exchange_bytes();
    for (name, stats) in &all {
        let peers: Vec<&str> = stats.iter().map(|(peer, _)| peer.as_str()).collect();
        assert_eq!(peers.len(), 2, "{name} counted traffic with {peers:?}");
        for (peer, counts) in stats {
            assert_eq!(
                *counts,
                [messages, bytes, messages, bytes],
                "{name}'s link stats for {peer}"
            );
            let (_, theirs) = all.iter().find(|(n, _)| n == peer).expect("a node");
            let (_, back) = theirs.iter().find(|(p, _)| p == name).expect("counted");
            assert_eq!(
                [counts[0], counts[1]],
                [back[2], back[3]],
                "{name} sent {peer} what {peer} received"
            );
        }
    }
}

//! Three `vmsdb node` processes serving one application over HTTP from one store, for the
//! cluster tests: their addresses, starting the cluster (n1 first, so it becomes the
//! sequencer), killing and restarting a node, following the failover and the re-placement of
//! spread partitions, and waiting for what the nodes print (every node's log on a timeout);
//! and the [`Progress`] a run's clients share with the test while a node is killed and
//! restarted.

use super::node::{Node, WAIT, free_addr, spawn_node};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

pub const NAMES: [&str; 3] = ["n1", "n2", "n3"];
/// A run's victim is killed once this many requests were acknowledged.
pub const ACKS_BEFORE_KILL: usize = 150;
/// Acknowledgements of requests sent after the kill before the victim restarts.
pub const ACKS_AFTER_KILL: usize = 100;
/// Acknowledgements the restarted node must give itself.
pub const ACKS_BY_RESTARTED: usize = 20;

/// The three nodes: processes (a slot is empty while its node is dead) and their addresses.
pub struct ServingCluster {
    pub nodes: Vec<Option<Node>>,
    links: [SocketAddr; 3],
    pub urls: Vec<String>,
    /// What every node is started with after its name and addresses (`--app`, `--store`, ...).
    args: Vec<String>,
    /// The store lease's term the nodes follow the sequencer under (from their `sequencer`
    /// lines).
    term: u64,
}

impl ServingCluster {
    /// Starts n1 alone and waits until it is the sequencer, then the two others until they
    /// follow it (with `--spread-partitions`, until n1 placed partitions on all three), then
    /// until every node answers `/ready`.
    pub async fn start(http: &reqwest::Client, args: &[&str]) -> ServingCluster {
        let mut cluster = ServingCluster::new(args);
        for index in 0..3 {
            cluster.spawn(index);
            let followed = cluster.wait_line(index, "sequencer n1 term");
            cluster.term = term_of(&followed);
        }
        if cluster.spread() {
            // The sequencer re-placed the partitions as the others joined: every node owns some.
            cluster.wait_spread(0, &NAMES);
        }
        for url in &cluster.urls {
            super::wait_ready(http, url).await;
        }
        cluster
    }

    /// No node started yet; each gets its link and HTTP addresses. `args`: what every node is
    /// started with after its name and addresses.
    pub fn new(args: &[&str]) -> ServingCluster {
        ServingCluster {
            nodes: vec![None, None, None],
            links: [free_addr(), free_addr(), free_addr()],
            urls: (0..3).map(|_| format!("http://{}", free_addr())).collect(),
            args: args.iter().map(|a| a.to_string()).collect(),
            term: 0,
        }
    }

    /// Starts node `index`, seeded with the two others (none for the very first node).
    pub fn spawn(&mut self, index: usize) {
        let seeds: Vec<SocketAddr> = if index == 0 && self.nodes.iter().all(Option::is_none) {
            Vec::new()
        } else {
            (0..3)
                .filter(|&i| i != index)
                .map(|i| self.links[i])
                .collect()
        };
        let http = self.urls[index].trim_start_matches("http://").to_string();
        let mut args: Vec<&str> = vec!["--http", &http];
        args.extend(self.args.iter().map(String::as_str));
        self.nodes[index] = Some(spawn_node(NAMES[index], self.links[index], &seeds, &args));
    }

    pub fn node(&mut self, index: usize) -> &mut Node {
        self.nodes[index].as_mut().expect("a live node")
    }

    /// SIGKILLs node `index` (its slot is empty until it is spawned again).
    pub fn kill(&mut self, index: usize) {
        self.node(index).child.kill().expect("SIGKILL the node");
        self.nodes[index] = None;
    }

    /// Waits (off the async workers) until node `index` prints a line starting with `prefix`.
    pub fn wait_line(&mut self, index: usize, prefix: &str) -> String {
        let node = self.node(index);
        tokio::task::block_in_place(|| node.wait_line(WAIT, |l| l.starts_with(prefix)))
    }

    /// Whether the nodes spread the partitions over themselves (`--spread-partitions`).
    pub fn spread(&self) -> bool {
        self.args.iter().any(|a| a == "--spread-partitions")
    }

    /// Waits until the sequencer, node `index`, started a runtime whose placement gives
    /// partitions to every node of `members` and to no other; prints and returns the line.
    pub fn wait_spread(&mut self, index: usize, members: &[&str]) -> String {
        let node = self.node(index);
        let placed_exactly = |line: &str| {
            let owners = line.split(' ').nth(3).unwrap_or("");
            NAMES
                .iter()
                .all(|name| owners.split(',').any(|o| o == *name) == members.contains(name))
        };
        let line = tokio::task::block_in_place(|| {
            node.wait_line(WAIT, |l| l.starts_with("spread term ") && placed_exactly(l))
        });
        eprintln!("{}: {line}", NAMES[index]);
        line
    }

    /// Prints how the sequencer, node `index`, last replaced its runtime: how long the runtime
    /// before took to stop, and how the next one started (handed over, or recovered).
    fn print_re_placement(&mut self, index: usize) {
        let node = self.node(index);
        let replacing = ["replacing the runtime", "handed over:", "recovered:"];
        let mut lines: Vec<&String> = (node.seen.iter().rev())
            .filter(|line| replacing.iter().any(|p| line.starts_with(p)))
            .take(2)
            .collect();
        lines.reverse();
        for line in lines {
            eprintln!("{}: {line}", NAMES[index]);
        }
    }

    /// What every live node printed on stdout and stderr so far, for a failed run.
    pub fn report(&mut self) -> String {
        let mut text = String::new();
        for node in self.nodes.iter_mut().flatten() {
            node.drain();
            text += &format!(
                "--- {} stdout:\n{}\n--- {} stderr:\n{}\n",
                node.name,
                node.seen.join("\n"),
                node.name,
                node.stderr()
            );
        }
        text
    }

    /// Waits until `count` (one of `shared`'s counters) reaches `at_least`; if it does not
    /// within the deadline, fails with what every node printed.
    pub async fn wait_count(
        &mut self,
        shared: &Progress,
        count: &AtomicUsize,
        at_least: usize,
        what: &str,
    ) {
        if let Err(reached) = shared.reach(count, at_least).await {
            panic!(
                "never reached {at_least} {what} (reached {reached}); the nodes:\n{}",
                self.report()
            );
        }
    }

    pub fn wait_members(&mut self, index: usize, members: &[&str]) {
        let node = self.node(index);
        tokio::task::block_in_place(|| node.wait_members(members));
    }

    /// After `victim` was killed: waits until both survivors saw it go down and, if it was the
    /// sequencer, follow one new sequencer under the lease's next term; with the partitions
    /// spread, until the sequencer placed them over the survivors exactly. The sequencer's
    /// index.
    pub fn follow_the_failover(&mut self, victim: usize, sequencer: usize) -> usize {
        let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
        for &survivor in &survivors {
            self.wait_line(survivor, &format!("down {}", NAMES[victim]));
        }
        let sequencer = if victim == sequencer {
            self.follow_the_election(&survivors, victim)
        } else {
            sequencer
        };
        if self.spread() {
            let live: Vec<&str> = survivors.iter().map(|&i| NAMES[i]).collect();
            self.wait_spread(sequencer, &live);
        }
        sequencer
    }

    /// Waits until both `survivors` follow one new sequencer, not `victim`, under the lease's
    /// next term. Its index.
    fn follow_the_election(&mut self, survivors: &[usize], victim: usize) -> usize {
        let elected: Vec<String> = survivors
            .iter()
            .map(|&survivor| self.wait_line(survivor, "sequencer n"))
            .collect();
        assert_eq!(
            elected[0], elected[1],
            "the survivors follow different sequencers"
        );
        let next_term = format!(" term {}", self.term + 1);
        assert!(elected[0].ends_with(&next_term), "{}", elected[0]);
        assert!(
            !elected[0].starts_with(&format!("sequencer {} ", NAMES[victim])),
            "{}",
            elected[0]
        );
        self.term += 1;
        index_of(&elected[0])
    }

    /// Restarts `victim` and waits until it follows the running sequencer (under the current
    /// term, unless the partitions are spread: a re-placement may hand the lease on, a term
    /// more), both survivors list the three members again, with the partitions spread the
    /// sequencer placed them on all three (the rejoined node gets partitions back), and it
    /// answers `/ready`. The sequencer's index.
    pub async fn rejoin(&mut self, http: &reqwest::Client, victim: usize) -> usize {
        let restarted_at = Instant::now();
        self.spawn(victim);
        let followed = self.wait_line(victim, "sequencer ");
        let term = format!(" term {}", self.term);
        assert!(
            (self.spread() || followed.ends_with(&term))
                && !followed.starts_with(&format!("sequencer {} ", NAMES[victim])),
            "the restarted node follows the running sequencer: {followed}"
        );
        self.term = term_of(&followed);
        let sequencer = index_of(&followed);
        for survivor in (0..3).filter(|&i| i != victim) {
            self.wait_members(survivor, &NAMES);
        }
        if self.spread() {
            self.wait_spread(sequencer, &NAMES);
            eprintln!(
                "{}: restarted -> placed on all three nodes in {:.2} s",
                NAMES[victim],
                restarted_at.elapsed().as_secs_f64()
            );
            self.print_re_placement(sequencer);
        }
        super::wait_ready(http, &self.urls[victim]).await;
        sequencer
    }

    /// The middle of a run whose clients share `shared`: once `ACKS_BEFORE_KILL` requests were
    /// acknowledged, SIGKILLs `victim` (n1 is the sequencer) and follows the failover; once
    /// `ACKS_AFTER_KILL` requests sent after the kill were acknowledged, restarts the victim,
    /// follows its rejoin and waits until it acknowledged `ACKS_BY_RESTARTED` itself. The
    /// failover time: kill → first commit of a request sent after it.
    pub async fn kill_and_rejoin(
        &mut self,
        http: &reqwest::Client,
        shared: &Progress,
        victim: usize,
    ) -> Duration {
        let acks = &shared.acks;
        self.wait_count(shared, acks, ACKS_BEFORE_KILL, "acks before the kill")
            .await;
        self.kill(victim);
        *shared.killed.lock() = Some((Instant::now(), victim));
        self.follow_the_failover(victim, 0);
        let after = &shared.acks_after_kill;
        self.wait_count(shared, after, ACKS_AFTER_KILL, "acks after the kill")
            .await;
        let failover = shared
            .first_commit_after_kill
            .lock()
            .expect("a commit after the kill");
        self.rejoin(http, victim).await;
        shared.restarted.store(true, Ordering::Release);
        let by_restarted = &shared.acks_by_restarted;
        let what = "acks by the restarted node";
        self.wait_count(shared, by_restarted, ACKS_BY_RESTARTED, what)
            .await;
        failover
    }

    /// Fails if a node exited on its own, with what it printed on stderr.
    pub fn assert_all_running(&mut self) {
        for node in self.nodes.iter_mut().flatten() {
            if let Ok(Some(status)) = node.child.try_wait() {
                let (_, stderr) = tokio::task::block_in_place(|| node.wait_exit());
                panic!(
                    "node {} exited during the run ({status}): {stderr}",
                    node.name
                );
            }
        }
    }
}

/// The node index of the name in a `sequencer NAME term T` line.
fn index_of(line: &str) -> usize {
    let name = line.split(' ').nth(1).unwrap_or_default();
    NAMES
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| panic!("no node named in {line:?}"))
}

/// The term in a `sequencer NAME term T` line.
fn term_of(line: &str) -> u64 {
    let term = line.rsplit(' ').next().unwrap_or_default();
    term.parse()
        .unwrap_or_else(|_| panic!("no term at the end of {line:?}"))
}

/// Longest wait for the cluster to reach a state a test waits for.
pub const DEADLINE: Duration = Duration::from_secs(40);

/// What a run's clients and the test share: the nodes' URLs, the stop flag, and the
/// acknowledgements counted for the phases the test waits for (before the kill, of requests
/// sent after it, by the restarted node).
pub struct Progress {
    pub urls: Vec<String>,
    pub stop: AtomicBool,
    pub acks: AtomicUsize,
    pub acks_after_kill: AtomicUsize,
    pub acks_by_restarted: AtomicUsize,
    /// Set at the kill: (when, the victim's index); and when the restarted node is up.
    pub killed: parking_lot::Mutex<Option<(Instant, usize)>>,
    pub restarted: AtomicBool,
    pub first_commit_after_kill: parking_lot::Mutex<Option<Duration>>,
    progress: Notify,
    /// Answers `outcome_unknown` (retried with the same id), and every other retry.
    pub outcome_unknown: AtomicUsize,
    pub retries: AtomicUsize,
}

impl Progress {
    pub fn new(urls: Vec<String>) -> Arc<Progress> {
        Arc::new(Progress {
            urls,
            stop: AtomicBool::new(false),
            acks: AtomicUsize::new(0),
            acks_after_kill: AtomicUsize::new(0),
            acks_by_restarted: AtomicUsize::new(0),
            killed: parking_lot::Mutex::new(None),
            restarted: AtomicBool::new(false),
            first_commit_after_kill: parking_lot::Mutex::new(None),
            progress: Notify::new(),
            outcome_unknown: AtomicUsize::new(0),
            retries: AtomicUsize::new(0),
        })
    }

    /// Submits through node after node (`submit` sends the request to a URL) until one
    /// acknowledges (200); every other answer is retried on the next node (the request keeps
    /// its id). The outcome and the node that answered; a 4xx fails the test.
    pub async fn submit_until_acked<F, A>(
        &self,
        node: &mut usize,
        id: &str,
        submit: F,
    ) -> (Value, usize)
    where
        F: Fn(String) -> A,
        A: Future<Output = Option<(u16, Value)>>,
    {
        let started = Instant::now();
        let mut failures = 0;
        loop {
            match submit(self.urls[*node].clone()).await {
                Some((200, outcome)) => return (outcome, *node),
                Some((status, error)) if status < 500 => panic!("{id}: {status} {error}"),
                Some((_, error)) if error["code"] == "outcome_unknown" => {
                    self.outcome_unknown.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            assert!(started.elapsed() < DEADLINE, "{id} was never acknowledged");
            *node = (*node + 1) % 3;
            failures += 1;
            if failures % 3 == 0 {
                // Every node refused (an election is under way): pace the retries.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Takes audits through every node in turn, one per `every`, until told to stop: `audit`
    /// checks one through a node's URL (asserting what must hold) and says whether the node
    /// answered. How many audits were checked.
    pub async fn audit_rounds<F, A>(self: Arc<Self>, every: Duration, audit: F) -> usize
    where
        F: Fn(reqwest::Client, String) -> A,
        A: Future<Output = bool>,
    {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap();
        let mut ticks = tokio::time::interval(every);
        let mut checked = 0;
        for round in 0.. {
            ticks.tick().await;
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            let url = self.urls[round % self.urls.len()].clone();
            if audit(http.clone(), url).await {
                checked += 1;
            }
        }
        checked
    }

    /// Tells the clients to stop and collects what each returns (their acknowledgements).
    pub async fn stop_clients<T>(&self, clients: Vec<tokio::task::JoinHandle<Vec<T>>>) -> Vec<T> {
        self.stop.store(true, Ordering::Release);
        let mut acked = Vec::new();
        for client in clients {
            acked.extend(client.await.expect("a client ran to the end"));
        }
        acked
    }

    /// Counts an acknowledgement of a request first sent at `sent_at`.
    pub fn note_ack(&self, sent_at: Instant, answered_by: usize, outcome: &Value) {
        self.acks.fetch_add(1, Ordering::AcqRel);
        let killed = *self.killed.lock();
        if let Some((killed_at, victim)) = killed
            && sent_at > killed_at
        {
            self.acks_after_kill.fetch_add(1, Ordering::AcqRel);
            if outcome["committed"] == true {
                let mut first = self.first_commit_after_kill.lock();
                first.get_or_insert_with(|| killed_at.elapsed());
            }
            if answered_by == victim && self.restarted.load(Ordering::Acquire) {
                self.acks_by_restarted.fetch_add(1, Ordering::AcqRel);
            }
        }
        self.progress.notify_waiters();
    }

    /// Waits until `count` reaches `at_least`, or the deadline passes: then how far it got.
    pub async fn reach(&self, count: &AtomicUsize, at_least: usize) -> Result<(), usize> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while count.load(Ordering::Acquire) < at_least {
            let progress = self.progress.notified();
            if count.load(Ordering::Acquire) >= at_least {
                break;
            }
            if tokio::time::timeout_at(deadline, progress).await.is_err() {
                return Err(count.load(Ordering::Acquire));
            }
        }
        Ok(())
    }
}

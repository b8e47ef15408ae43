//! `vmsdb node`: a cluster node for an application. It joins the seeds (cookie, application
//! check), prints every membership change and the resulting partition placement on stdout, and
//! leaves the cluster on SIGTERM or SIGINT. With `--store` and `--http` it also serves clients
//! (`cluster_node.rs`): sequencer through the store's lease, or forwarder to it
//! (`docs/cluster.md`).

use crate::apps::{AppChoice, AppOptions, LedgerServed, MarketServed, ServedApp, YcsbServed};
use crate::cluster_node::{Serving, ServingNode};
use crate::config::ConfigError;
use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{Signal, SignalKind, signal};
use txn::cluster::{Cluster, ClusterConfig, ClusterError, ClusterEvent};
use txn::fingerprint::Fingerprint;

/// Default address a node accepts peers on.
pub const NODE_LISTEN_DEFAULT: &str = "127.0.0.1:7070";

/// The options of `vmsdb node`; unset ones come from the TOML file (same names in snake_case,
/// durations as text like "200ms") or the defaults.
#[derive(Clone, Debug, Default, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeArgs {
    /// TOML file with any of the options below (keys in snake_case); flags and environment
    /// variables override it.
    #[arg(long, env = "VMSDB_NODE_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// The application this node is built for; peers running another are refused.
    #[arg(long, env = "VMSDB_APP", value_enum)]
    pub app: Option<AppChoice>,
    /// This node's name, unique in the cluster [default: the listen address].
    #[arg(long, env = "VMSDB_NODE_NAME")]
    pub name: Option<String>,
    /// Address and port to accept peers on [default: 127.0.0.1:7070].
    #[arg(long, env = "VMSDB_NODE_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// A node to join (repeat for several; comma-separated in the environment). None: this is
    /// the first node.
    #[arg(
        long = "seed",
        env = "VMSDB_SEEDS",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub seeds: Vec<SocketAddr>,
    /// The cluster's shared secret; a peer with another cookie is refused. Prefer the
    /// environment variable, which does not show in the process list.
    #[arg(long, env = "VMSDB_COOKIE", hide_env_values = true)]
    pub cookie: Option<String>,
    /// Partitions of each service [default: the application's own]; part of the application
    /// check, so every node must use the same.
    #[arg(long, env = "VMSDB_PARTITIONS")]
    pub partitions: Option<u32>,
    /// Time between heartbeats to each member [default: 200ms].
    #[arg(long, env = "VMSDB_HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration)]
    #[serde(deserialize_with = "crate::config::duration_text")]
    pub heartbeat_interval: Option<Duration>,
    /// A member silent this long is declared dead [default: 1.5s].
    #[arg(long, env = "VMSDB_FAILURE_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(deserialize_with = "crate::config::duration_text")]
    pub failure_timeout: Option<Duration>,
    /// How long to wait for a seed to admit this node [default: 10s].
    #[arg(long, env = "VMSDB_JOIN_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(deserialize_with = "crate::config::duration_text")]
    pub join_timeout: Option<Duration>,
    /// The shared PostgreSQL store (`postgres://...`): with `--http`, the node serves the
    /// application; the holder of the store's lease runs it, the others forward to it.
    #[arg(long, env = "VMSDB_STORE", value_name = "URL", hide_env_values = true)]
    pub store: Option<String>,
    /// Address and port of the node's HTTP API (the API of `vmsdb serve`); needs `--store`.
    #[arg(long, env = "VMSDB_HTTP", value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Length of the store's lease: a dead sequencer is replaced at most this long after it
    /// stopped renewing [default: the runtime's, 5s].
    #[arg(long, env = "VMSDB_LEASE_TTL", value_parser = humantime::parse_duration)]
    #[serde(deserialize_with = "crate::config::duration_text")]
    pub lease_ttl: Option<Duration>,
    /// Epoch length of the sequencer's runtime, and how long a forwarding node gathers
    /// submissions into one batch [default: the runtime's, 1ms].
    #[arg(long, env = "VMSDB_EPOCH_DURATION", value_parser = humantime::parse_duration)]
    #[serde(deserialize_with = "crate::config::duration_text")]
    pub epoch_duration: Option<Duration>,
    /// Epochs between two incremental checkpoints of the sequencer's runtime; 0 never
    /// checkpoints [default: the runtime's, 1000]. Fewer epochs: a shorter replay when a node
    /// takes over, more checkpoint writes.
    #[arg(long, env = "VMSDB_CHECKPOINT_EVERY", value_name = "EPOCHS")]
    pub checkpoint_every: Option<u64>,
    /// Spread the application's partitions over the live members (the sequencer drives the
    /// epochs, every node hosts its partitions; re-placed when members die or join). Snapshot
    /// queries then reach only the sequencer's own partitions (`docs/cluster.md`).
    #[arg(long, env = "VMSDB_SPREAD_PARTITIONS")]
    pub spread_partitions: bool,
}

/// Why `vmsdb node` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no cookie: give --cookie, VMSDB_COOKIE or cookie in the config file")]
    NoCookie,
    #[error("building the application: {0}")]
    App(#[from] txn::TxnError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("installing the signal handler: {0}")]
    Signal(std::io::Error),
    #[error("--http and --store go together: a node serves clients only from a shared store")]
    ServingNeedsBoth,
    #[error("--store {0:?} is not a PostgreSQL URL (postgres://...): nodes share one store")]
    NotPostgres(String),
    #[error(transparent)]
    Serve(#[from] crate::server::ServeError),
    #[error(
        "this node stopped being the sequencer: its runtime lost the store's lease ({0}); \
         restart it to rejoin as a standby"
    )]
    Deposed(String),
}

/// What `vmsdb node` runs with, resolved.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    pub app: AppChoice,
    pub partitions: Option<u32>,
    pub cluster: ClusterConfig,
    /// `Some`: the node serves clients.
    pub serving: Option<Serving>,
}

impl NodeArgs {
    /// Flags and environment variables (already in `self`) over the config file over defaults.
    pub fn resolve(self) -> Result<NodeSettings, NodeError> {
        let file = match &self.config {
            Some(path) => crate::config::read_toml(path)?,
            None => NodeArgs::default(),
        };
        let app = self.app.or(file.app).ok_or(ConfigError::NoApp)?;
        let listen = self.listen.or(file.listen).unwrap_or_else(|| {
            NODE_LISTEN_DEFAULT
                .parse()
                .expect("the default address parses")
        });
        let cookie = self.cookie.or(file.cookie).ok_or(NodeError::NoCookie)?;
        let name = self
            .name
            .or(file.name)
            .unwrap_or_else(|| listen.to_string());
        let mut cluster = ClusterConfig::new(name, listen, cookie, Vec::new());
        cluster.seeds = if self.seeds.is_empty() {
            file.seeds
        } else {
            self.seeds
        };
        let timings = [
            (
                self.heartbeat_interval.or(file.heartbeat_interval),
                &mut cluster.heartbeat_interval,
            ),
            (
                self.failure_timeout.or(file.failure_timeout),
                &mut cluster.failure_timeout,
            ),
            (
                self.join_timeout.or(file.join_timeout),
                &mut cluster.join_timeout,
            ),
        ];
        for (given, field) in timings {
            if let Some(value) = given {
                *field = value;
            }
        }
        cluster.validate()?;
        let serving = match (self.store.or(file.store), self.http.or(file.http)) {
            (None, None) => None,
            (Some(store_url), Some(http)) if crate::store::is_postgres(&store_url) => {
                Some(Serving {
                    store_url,
                    http,
                    lease_ttl: self.lease_ttl.or(file.lease_ttl),
                    epoch_duration: self.epoch_duration.or(file.epoch_duration),
                    checkpoint_every: self.checkpoint_every.or(file.checkpoint_every),
                    spread: self.spread_partitions || file.spread_partitions,
                })
            }
            (Some(store_url), Some(_)) => return Err(NodeError::NotPostgres(store_url)),
            _ => return Err(NodeError::ServingNeedsBoth),
        };
        Ok(NodeSettings {
            app,
            partitions: self.partitions.or(file.partitions),
            cluster,
            serving,
        })
    }
}

/// Runs the node until SIGTERM or SIGINT.
pub async fn run_node(settings: NodeSettings) -> Result<(), NodeError> {
    let options = AppOptions {
        partitions: settings.partitions,
        ycsb_keys: 0,
    };
    match settings.app {
        AppChoice::Ledger => run_app::<LedgerServed>(options, settings).await,
        AppChoice::Ycsb => run_app::<YcsbServed>(options, settings).await,
        AppChoice::Marketplace => run_app::<MarketServed>(options, settings).await,
    }
}

async fn run_app<S: ServedApp>(
    options: AppOptions,
    settings: NodeSettings,
) -> Result<(), NodeError> {
    let config = settings.cluster;
    let served = S::build(options)?;
    let app = served.app_def().clone();
    let n_partitions = Fingerprint::of(&app)
        .services
        .iter()
        .map(|s| s.n_partitions)
        .sum();
    let signals = (
        signal(SignalKind::terminate()).map_err(NodeError::Signal)?,
        signal(SignalKind::interrupt()).map_err(NodeError::Signal)?,
    );
    let listen = config.listen;
    let cluster = txn::cluster::join(&app, config).await?;
    println!(
        "node {} listening on {listen} for {}",
        cluster.node_name(),
        S::NAME
    );
    let events = cluster.subscribe();
    print_membership(&cluster, n_partitions);
    let cluster = Arc::new(cluster);
    crate::stats::report_link_of(&cluster);
    let serving = match settings.serving {
        Some(serving) => {
            let node =
                crate::cluster_node::start(served, options, cluster.clone(), serving, settings.app);
            Some(node.await?)
        }
        None => None,
    };
    let outcome =
        follow_membership(&cluster, serving.as_ref(), events, signals, n_partitions).await;
    let name = cluster.node_name().to_string();
    if let Some(node) = serving {
        node.shutdown().await;
    }
    // The link handler holds the cluster too; without it to itself the node just drops it.
    if let Ok(cluster) = Arc::try_unwrap(cluster) {
        cluster.shutdown().await;
    }
    println!("node {name} stopped");
    outcome
}

/// Prints every membership change (and passes it to the serving node) until SIGTERM, SIGINT,
/// or the serving node lost the sequencer's lease.
async fn follow_membership<S: ServedApp>(
    cluster: &Cluster,
    serving: Option<&ServingNode<S>>,
    mut events: tokio::sync::broadcast::Receiver<ClusterEvent>,
    (mut terminate, mut interrupt): (Signal, Signal),
    n_partitions: u32,
) -> Result<(), NodeError> {
    let deposed = async {
        match serving {
            Some(node) => node.deposed().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deposed);
    loop {
        tokio::select! {
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
            reason = &mut deposed => return Err(NodeError::Deposed(reason)),
            event = events.recv() => match event {
                Ok(event) => {
                    println!("{}", event_line(&event));
                    if let Some(node) = serving {
                        node.on_event(&event);
                    }
                    print_membership(cluster, n_partitions);
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    print_membership(cluster, n_partitions);
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            },
        }
    }
}

/// One line per event, for operators and for tests reading stdout.
fn event_line(event: &ClusterEvent) -> String {
    match event {
        ClusterEvent::NodeUp { member } => format!("up {} {}", member.name, member.listen),
        ClusterEvent::NodeDown { node, reason } => format!("down {node}: {reason}"),
        ClusterEvent::Refused { node, differences } => {
            format!("refused {node}: {}", differences.join("; "))
        }
        ClusterEvent::Unauthenticated { peer_addr, .. } => {
            format!("unauthenticated session with {peer_addr} (wrong cookie?)")
        }
    }
}

/// The live members and the owner of each of the application's partitions (global partitions,
/// services in declaration order).
fn print_membership(cluster: &Cluster, n_partitions: u32) {
    let members: Vec<String> = cluster.members().into_iter().map(|m| m.name).collect();
    println!("members {}", members.join(","));
    println!("placement {}", cluster.placement(n_partitions).join(","));
}

//! The command line (clap) and the server's settings: each one from a flag, an environment
//! variable, the TOML file or its default, in that order of precedence.

use crate::apps::AppChoice;
use crate::limits;
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PRECEDENCE_HELP: &str = "\
Every option of `serve` is read from its flag, else from its environment variable (shown with \
each flag), else from the TOML file given with --config (keys are the flag names in snake_case: \
data_dir = \"/var/lib/vmsdb\", listen = \"127.0.0.1:8080\", request_timeout = \"30s\"), else \
from its default. The bearer token is read from the environment variable VMSDB_TOKEN or from \
--token-file (never from a flag, so it does not show in the process list); with a token, every \
route but /health and /ready needs `Authorization: Bearer <token>`. Without one, the server \
refuses to listen on anything but a loopback address.";

/// vmsdb: serve a transactional application over HTTP/JSON.
#[derive(Debug, Parser)]
#[command(name = "vmsdb", version, propagate_version = true)]
#[command(
    about = "vmsdb: serve a transactional application over HTTP/JSON",
    long_about = "vmsdb runs an application of event-driven services with ACID transactions on \
                  its durable embedded store, and serves it over HTTP/JSON: submit events and \
                  get their durable outcomes, run named queries, read metrics and the OpenAPI \
                  document. See docs/server.md for every route."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What the binary does.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // Parsed once at start-up: its size costs nothing.
pub enum Command {
    /// Serve an application over HTTP/JSON until SIGTERM or SIGINT (then shut down gracefully:
    /// stop accepting, answer every accepted request, make everything durable, exit 0).
    #[command(after_long_help = PRECEDENCE_HELP)]
    Serve(ServeArgs),
    /// Run a cluster node: join the seeds (shared cookie, same application), print membership
    /// changes and partition placement, leave on SIGTERM or SIGINT. With --store and --http it
    /// serves the HTTP API: the holder of the store's lease runs the application, the other
    /// nodes forward to it (see docs/cluster.md).
    Node(crate::node::NodeArgs),
    /// Every committed change of a row and the transactions that read each version, replayed
    /// from a data directory whose history was retained.
    Why(crate::history_cmd::WhyArgs),
    /// What one transaction read, wrote and emitted, step by step, and how it ended.
    Replay(crate::history_cmd::ReplayArgs),
    /// Every read of one subject's personal data (handler, purposes, row, fields), replayed
    /// from a data directory whose history was retained.
    Audit(crate::governance_cmd::AuditArgs),
    /// Erase one subject's personal data from a data directory no server runs on: no file
    /// keeps the bytes; the log and history before the erasure are dropped. On a running
    /// server: `POST /v1/subjects/{subject}/forget`.
    Forget(crate::governance_cmd::ForgetArgs),
}

/// The options of `vmsdb serve`; unset ones come from the config file (the same options, by
/// their snake_case names; durations as text like "10s") or the defaults.
#[derive(Clone, Debug, Default, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML file with any of the options below (keys in snake_case); flags and environment
    /// variables override it.
    #[arg(long, env = "VMSDB_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// The application to serve.
    #[arg(long, env = "VMSDB_APP", value_enum)]
    pub app: Option<AppChoice>,
    /// Directory of the durable store (epoch log and checkpoints); created if missing. A restart
    /// on the same directory finds everything acknowledged before it.
    #[arg(long, env = "VMSDB_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address and port to listen on [default: 127.0.0.1:8080]. A non-loopback address needs a
    /// token.
    #[arg(long, env = "VMSDB_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// File holding the bearer token (surrounding whitespace ignored). Alternative: VMSDB_TOKEN.
    #[arg(long, env = "VMSDB_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Partitions of each service [default: the application's own: ledger 4, ycsb 8, marketplace 4]. Must stay
    /// the same for a data directory: the store refuses another layout.
    #[arg(long, env = "VMSDB_PARTITIONS")]
    pub partitions: Option<u32>,
    /// How long an epoch collects requests, e.g. `1ms` [default: the runtime's, 1ms].
    #[arg(long, env = "VMSDB_EPOCH_DURATION", value_parser = humantime::parse_duration)]
    #[serde(deserialize_with = "duration_text")]
    pub epoch_duration: Option<Duration>,
    /// Epochs between two incremental checkpoints; 0 never checkpoints (a restart then replays
    /// the whole log) [default: the runtime's, 1000]. Fewer epochs: a shorter replay after a
    /// crash or a take-over, more checkpoint writes.
    #[arg(long, env = "VMSDB_CHECKPOINT_EVERY", value_name = "EPOCHS")]
    pub checkpoint_every: Option<u64>,
    /// How many nice steps the checkpoint thread lowers its CPU priority by (Linux, on a store
    /// whose checkpoints have their own writer: embedded, PostgreSQL; up to 19): a checkpoint
    /// then uses the CPU the epoch workers leave instead of taking a core from them. 0 keeps the process's priority [default: the runtime's, 10].
    #[arg(long, env = "VMSDB_CHECKPOINT_NICE", value_name = "N",
          value_parser = clap::value_parser!(u8).range(0..=i64::from(txn::limits::CHECKPOINT_NICE_MAX)))]
    pub checkpoint_nice: Option<u8>,
    /// ycsb only: the keys the table should hold (`0..N`), for the `audit` query [default:
    /// 1000000].
    #[arg(long, env = "VMSDB_YCSB_KEYS")]
    pub ycsb_keys: Option<u64>,
    /// Largest request body in bytes; larger ones get 413 [default: 1048576].
    #[arg(long, env = "VMSDB_BODY_BYTES_MAX")]
    pub body_bytes_max: Option<usize>,
    /// Requests handled at once; more get 503 `overloaded` [default: 1024].
    #[arg(long, env = "VMSDB_CONCURRENT_REQUESTS_MAX")]
    pub concurrent_requests_max: Option<usize>,
    /// Open connections; further ones wait in the kernel's backlog [default: 4096].
    #[arg(long, env = "VMSDB_CONNECTIONS_MAX")]
    pub connections_max: Option<usize>,
    /// Time a client has to send a request's headers [default: 10s].
    #[arg(long, env = "VMSDB_HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(deserialize_with = "duration_text")]
    pub header_read_timeout: Option<Duration>,
    /// Time a client has to send a request's body [default: 10s].
    #[arg(long, env = "VMSDB_BODY_READ_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(deserialize_with = "duration_text")]
    pub body_read_timeout: Option<Duration>,
    /// Time one request may take, durable outcome included; then 503 `timeout` [default: 30s].
    #[arg(long, env = "VMSDB_REQUEST_TIMEOUT", value_parser = humantime::parse_duration)]
    #[serde(deserialize_with = "duration_text")]
    pub request_timeout: Option<Duration>,
    /// Fire-and-forget submissions (`?wait=false`) still pending; more get 503 [default: 10000].
    #[arg(long, env = "VMSDB_PENDING_SUBMISSIONS_MAX")]
    pub pending_submissions_max: Option<usize>,
    /// Settled fire-and-forget outcomes kept for `GET /v1/requests/..`; the oldest are
    /// forgotten first [default: 100000].
    #[arg(long, env = "VMSDB_STATUS_TABLE_SETTLED_MAX")]
    pub status_table_settled_max: Option<usize>,
    /// marketplace only: also listen on 127.0.0.1 at every port the Online Marketplace
    /// benchmark's driver addresses (8080-8087 and 8091), each serving every route, so the
    /// driver's unmodified configuration works [default: false].
    #[arg(long, env = "VMSDB_DRIVER_PORTS", num_args = 0..=1, default_missing_value = "true")]
    pub driver_ports: Option<bool>,
    /// How long a graceful shutdown waits for in-flight requests [default: 30s].
    #[arg(long, env = "VMSDB_SHUTDOWN_GRACE", value_parser = humantime::parse_duration)]
    #[serde(deserialize_with = "duration_text")]
    pub shutdown_grace: Option<Duration>,
    /// Keep the whole epoch log (checkpoints never truncate it), so `vmsdb why` and `vmsdb
    /// replay` can replay this directory's history [default: false].
    #[arg(long, env = "VMSDB_RETAIN_HISTORY", num_args = 0..=1, default_missing_value = "true")]
    pub retain_history: Option<bool>,
    /// A shared store instead of --data-dir: a PostgreSQL database, as a `postgres://` or
    /// `postgresql://` URL (a unix socket directory as a percent-encoded host, or `?host=/dir`).
    /// Every process serving it takes its lease first: one writes, the others wait or refuse.
    #[arg(long, env = "VMSDB_STORE", value_name = "URL")]
    pub store: Option<String>,
    /// Length of the store's lease: after this process dies, a standby takes over at most this
    /// long later [default: 5s; renewed every third of it].
    #[arg(long, env = "VMSDB_LEASE_TTL", value_parser = humantime::parse_duration)]
    #[serde(deserialize_with = "duration_text")]
    pub lease_ttl: Option<Duration>,
    /// Wait up to this long for another process's lease on the store to end, then take over (a
    /// standby) [default: do not wait: refuse to start while it runs].
    #[arg(long, env = "VMSDB_WAIT_FOR_LEASE", value_parser = humantime::parse_duration)]
    #[serde(deserialize_with = "duration_text")]
    pub wait_for_lease: Option<Duration>,
    /// The name this process holds the store's lease under [default: hostname:pid:random].
    #[arg(long, env = "VMSDB_LEASE_HOLDER", value_name = "NAME")]
    pub lease_holder: Option<String>,
}

/// Why the settings could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading the config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the config file {path} is not valid: {message}")]
    BadFile { path: PathBuf, message: String },
    #[error(
        "no application: give --app, VMSDB_APP or app in the config file (ledger, ycsb or marketplace)"
    )]
    NoApp,
    #[error("no data directory: give --data-dir, VMSDB_DATA_DIR or data_dir in the config file")]
    NoDataDir,
    #[error("both a data directory and --store are given: the store is one or the other")]
    TwoStores,
    #[error("--store {0:?} is not a store this build knows: give a postgres:// URL")]
    UnknownStore(String),
    #[error("reading the token file {path}: {source}")]
    ReadTokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token {from} is empty")]
    EmptyToken { from: String },
    #[error("both VMSDB_TOKEN and a token file are set: give the token one way")]
    TwoTokens,
    #[error("--driver-ports serves the marketplace benchmark's driver: it needs --app marketplace")]
    DriverPortsNeedMarketplace,
    #[error("{name} must be at least {min}, got {value}")]
    TooSmall {
        name: &'static str,
        min: u64,
        value: u64,
    },
}

/// The limits the HTTP layer enforces (see `limits.rs` for the defaults and why).
#[derive(Clone, Debug)]
pub struct ServerLimits {
    pub body_bytes_max: usize,
    pub concurrent_requests_max: usize,
    pub connections_max: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub request_timeout: Duration,
    pub pending_submissions_max: usize,
    pub status_table_settled_max: usize,
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        let ms = Duration::from_millis;
        ServerLimits {
            body_bytes_max: limits::BODY_BYTES_MAX_DEFAULT,
            concurrent_requests_max: limits::CONCURRENT_REQUESTS_MAX_DEFAULT,
            connections_max: limits::CONNECTIONS_MAX_DEFAULT,
            header_read_timeout: ms(limits::HEADER_READ_TIMEOUT_MS_DEFAULT),
            body_read_timeout: ms(limits::BODY_READ_TIMEOUT_MS_DEFAULT),
            request_timeout: ms(limits::REQUEST_TIMEOUT_MS_DEFAULT),
            pending_submissions_max: limits::PENDING_SUBMISSIONS_MAX_DEFAULT,
            status_table_settled_max: limits::STATUS_TABLE_SETTLED_MAX_DEFAULT,
            shutdown_grace: ms(limits::SHUTDOWN_GRACE_MS_DEFAULT),
        }
    }
}

/// Everything `vmsdb serve` runs with, resolved.
#[derive(Clone, Debug)]
pub struct Settings {
    pub app: AppChoice,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// The bearer token every route but `/health` and `/ready` needs; `None`: no auth, and
    /// only a loopback `listen` address is allowed.
    pub token: Option<String>,
    /// Partitions per service; `None`: the application's default.
    pub partitions: Option<u32>,
    /// `None`: the runtime's default.
    pub epoch_duration: Option<Duration>,
    /// Epochs between checkpoints; `None`: the runtime's default.
    pub checkpoint_every: Option<u64>,
    /// The checkpoint thread's nice steps (`RuntimeConfig::checkpoint_nice`); `None`: the
    /// runtime's default.
    pub checkpoint_nice: Option<u8>,
    pub ycsb_keys: u64,
    /// Also listen on 127.0.0.1 at each of `limits::DRIVER_PORTS` (marketplace only).
    pub driver_ports: bool,
    pub limits: ServerLimits,
    /// Keep the whole epoch log for `vmsdb why` / `vmsdb replay`.
    pub retain_history: bool,
    /// The PostgreSQL store's URL, used instead of `data_dir` (`None`: the embedded store).
    pub store_url: Option<String>,
    /// The store's lease: `None` fields keep the runtime's defaults.
    pub lease_ttl: Option<Duration>,
    pub wait_for_lease: Option<Duration>,
    pub lease_holder: Option<String>,
}

impl Settings {
    /// Settings with the defaults, for `app` on `data_dir` (what tests start from).
    pub fn new(app: AppChoice, data_dir: impl Into<PathBuf>) -> Self {
        Settings {
            app,
            data_dir: data_dir.into(),
            listen: limits::LISTEN_DEFAULT
                .parse()
                .expect("the default address parses"),
            token: None,
            partitions: None,
            epoch_duration: None,
            checkpoint_every: None,
            checkpoint_nice: None,
            ycsb_keys: 1_000_000,
            driver_ports: false,
            limits: ServerLimits::default(),
            retain_history: false,
            store_url: None,
            lease_ttl: None,
            wait_for_lease: None,
            lease_holder: None,
        }
    }

    /// Where the log and checkpoints go, for logs and `/v1/stats` (never a password).
    pub fn store_description(&self) -> String {
        match &self.store_url {
            None => format!("redb in {}", self.data_dir.display()),
            Some(url) => crate::store::describe_postgres(url),
        }
    }

    /// Resolves the settings: flags and environment variables (already in `args`, clap reads
    /// both) over the config file over the defaults. `token_env` is `VMSDB_TOKEN`'s value.
    pub fn resolve(args: ServeArgs, token_env: Option<String>) -> Result<Settings, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file_config(path)?,
            None => ServeArgs::default(),
        };
        let args = args.over(file);
        let app = args.app.ok_or(ConfigError::NoApp)?;
        let data_dir = match (args.data_dir, &args.store) {
            (Some(_), Some(_)) => return Err(ConfigError::TwoStores),
            (Some(dir), None) => dir,
            (None, Some(_)) => PathBuf::new(),
            (None, None) => return Err(ConfigError::NoDataDir),
        };
        if let Some(url) = &args.store
            && !crate::store::is_postgres(url)
        {
            return Err(ConfigError::UnknownStore(url.clone()));
        }
        let mut settings = Settings::new(app, data_dir);
        settings.store_url = args.store;
        settings.lease_ttl = args.lease_ttl;
        settings.wait_for_lease = args.wait_for_lease;
        settings.lease_holder = args.lease_holder;
        settings.listen = args.listen.unwrap_or(settings.listen);
        settings.token = resolve_token(token_env, args.token_file)?;
        settings.partitions = args.partitions;
        settings.epoch_duration = args.epoch_duration;
        settings.checkpoint_every = args.checkpoint_every;
        settings.checkpoint_nice = args.checkpoint_nice;
        settings.ycsb_keys = args.ycsb_keys.unwrap_or(settings.ycsb_keys);
        settings.driver_ports = args.driver_ports.unwrap_or(false);
        settings.retain_history = args.retain_history.unwrap_or(false);
        let l = &mut settings.limits;
        l.body_bytes_max = args.body_bytes_max.unwrap_or(l.body_bytes_max);
        l.concurrent_requests_max = args
            .concurrent_requests_max
            .unwrap_or(l.concurrent_requests_max);
        l.connections_max = args.connections_max.unwrap_or(l.connections_max);
        l.pending_submissions_max = args
            .pending_submissions_max
            .unwrap_or(l.pending_submissions_max);
        l.status_table_settled_max = args
            .status_table_settled_max
            .unwrap_or(l.status_table_settled_max);
        l.header_read_timeout = args.header_read_timeout.unwrap_or(l.header_read_timeout);
        l.body_read_timeout = args.body_read_timeout.unwrap_or(l.body_read_timeout);
        l.request_timeout = args.request_timeout.unwrap_or(l.request_timeout);
        l.shutdown_grace = args.shutdown_grace.unwrap_or(l.shutdown_grace);
        settings.check()?;
        Ok(settings)
    }

    /// Refuses limits the server cannot work with.
    pub fn check(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let at_least = |name: &'static str, value: usize, min: usize| {
            if value < min {
                return Err(ConfigError::TooSmall {
                    name,
                    min: min as u64,
                    value: value as u64,
                });
            }
            Ok(())
        };
        at_least("body_bytes_max", l.body_bytes_max, limits::BODY_BYTES_MIN)?;
        at_least("concurrent_requests_max", l.concurrent_requests_max, 1)?;
        at_least("connections_max", l.connections_max, 1)?;
        at_least("pending_submissions_max", l.pending_submissions_max, 1)?;
        at_least("status_table_settled_max", l.status_table_settled_max, 1)?;
        if self.driver_ports && self.app != AppChoice::Marketplace {
            return Err(ConfigError::DriverPortsNeedMarketplace);
        }
        at_least("partitions", self.partitions.unwrap_or(1) as usize, 1)
    }

    /// Every address to listen on: `listen`, and with `driver_ports` the driver's ports on
    /// 127.0.0.1 (`listen` first, each address once).
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        let mut addrs = vec![self.listen];
        if self.driver_ports {
            let loopback = std::net::Ipv4Addr::LOCALHOST.into();
            let driver = limits::DRIVER_PORTS.map(|port| SocketAddr::new(loopback, port));
            addrs.extend(driver.into_iter().filter(|a| *a != self.listen));
        }
        addrs
    }
}

fn read_file_config(path: &Path) -> Result<ServeArgs, ConfigError> {
    read_toml(path)
}

/// Reads a subcommand's options from the TOML file at `path`.
pub(crate) fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::BadFile {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// A duration in the config file, as text like "10s" or "1ms".
pub(crate) fn duration_text<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map(Some).map_err(|e| {
        serde::de::Error::custom(format!("{text:?} is not a duration like \"10s\": {e}"))
    })
}

impl ServeArgs {
    /// These options (flags and environment variables), with `file`'s filling the unset ones.
    fn over(self, file: ServeArgs) -> ServeArgs {
        ServeArgs {
            config: self.config,
            app: self.app.or(file.app),
            data_dir: self.data_dir.or(file.data_dir),
            listen: self.listen.or(file.listen),
            token_file: self.token_file.or(file.token_file),
            partitions: self.partitions.or(file.partitions),
            epoch_duration: self.epoch_duration.or(file.epoch_duration),
            checkpoint_every: self.checkpoint_every.or(file.checkpoint_every),
            checkpoint_nice: self.checkpoint_nice.or(file.checkpoint_nice),
            ycsb_keys: self.ycsb_keys.or(file.ycsb_keys),
            body_bytes_max: self.body_bytes_max.or(file.body_bytes_max),
            concurrent_requests_max: self
                .concurrent_requests_max
                .or(file.concurrent_requests_max),
            connections_max: self.connections_max.or(file.connections_max),
            header_read_timeout: self.header_read_timeout.or(file.header_read_timeout),
            body_read_timeout: self.body_read_timeout.or(file.body_read_timeout),
            request_timeout: self.request_timeout.or(file.request_timeout),
            pending_submissions_max: self
                .pending_submissions_max
                .or(file.pending_submissions_max),
            status_table_settled_max: self
                .status_table_settled_max
                .or(file.status_table_settled_max),
            shutdown_grace: self.shutdown_grace.or(file.shutdown_grace),
            driver_ports: self.driver_ports.or(file.driver_ports),
            retain_history: self.retain_history.or(file.retain_history),
            store: self.store.or(file.store),
            lease_ttl: self.lease_ttl.or(file.lease_ttl),
            wait_for_lease: self.wait_for_lease.or(file.wait_for_lease),
            lease_holder: self.lease_holder.or(file.lease_holder),
        }
    }
}

fn resolve_token(
    token_env: Option<String>,
    token_file: Option<PathBuf>,
) -> Result<Option<String>, ConfigError> {
    let token = match (token_env, token_file) {
        (Some(_), Some(_)) => return Err(ConfigError::TwoTokens),
        (Some(token), None) => (token, "in VMSDB_TOKEN".to_string()),
        (None, Some(path)) => {
            let text =
                std::fs::read_to_string(&path).map_err(|source| ConfigError::ReadTokenFile {
                    path: path.clone(),
                    source,
                })?;
            (text, format!("file {}", path.display()))
        }
        (None, None) => return Ok(None),
    };
    let (text, from) = token;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ConfigError::EmptyToken { from });
    }
    Ok(Some(trimmed.to_string()))
}

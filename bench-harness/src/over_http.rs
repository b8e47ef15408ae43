//! `--over-http`: the workload driven through `vmsdb serve`'s HTTP API instead of the
//! in-process `Client`, reported as its own system, `vmsdb-http`.
//!
//! The harness starts the server in-process (`vmsdb::Server`, the code `vmsdb serve` runs) on
//! a free loopback port with a temporary data directory, and [`HttpTarget`] implements
//! [`AsyncTarget`] over it with reqwest. Each request is encoded once, as the generic API's
//! batch item (`{"service", "kind", "partition", "event"}`: the event's JSON is the envelope's
//! JSON with the two enum tags cut off, no re-parse), queued, and sent by one of a few sender
//! tasks that drain the queue into one `POST /v1/batch` each: one round trip carries every
//! request that arrived meanwhile, as an epoch does. Queries go to `POST /v1/queries/{name}`
//! when the workload names one (`Workload::http_query`). The run is audited through the
//! server's own runtime (`Server::client`) before the server stops, with the same checks as
//! the in-process run.

use crate::cli::CommonArgs;
use crate::driver::{AsyncTarget, drive_runtime, fmt_count};
use crate::progress::Ui;
use crate::report::{LoadSummary, SystemRun};
use crate::workload::{RequestOf, Workload};
use crate::{HarnessError, drive_config, effects_of, runtime_stats_summary, warn_late};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, mpsc, oneshot};
use txn::{AbortReason, App, AppDef, TxnError};
use vmsdb::{AppChoice, Server, Settings};

/// Most requests one `POST /v1/batch` carries (the server's own limit is higher).
pub const HTTP_BATCH_MAX: usize = 1024;

/// Sender tasks, each with one batch in flight.
pub const HTTP_SENDERS: usize = 4;

/// What the client gets back for one request.
pub(crate) type Reply = Result<Result<(), AbortReason>, TxnError>;

/// One queued request: its encoded batch item and where its answer goes.
struct Queued {
    item: Vec<u8>,
    reply: oneshot::Sender<Reply>,
}

/// A workload's target over HTTP: cheap to clone (one per driver task).
pub struct HttpTarget<W: Workload> {
    inner: Arc<Inner<W>>,
}

impl<W: Workload> Clone for HttpTarget<W> {
    fn clone(&self) -> Self {
        HttpTarget {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<W: Workload> {
    http: reqwest::Client,
    url: String,
    app: Arc<AppDef<W::App>>,
    queue: mpsc::UnboundedSender<Queued>,
}

/// One answer of `POST /v1/batch`: an outcome or an error.
#[derive(Deserialize)]
struct BatchAnswer {
    committed: Option<bool>,
    abort: Option<AbortAnswer>,
    status: Option<u16>,
    error: Option<ErrorAnswer>,
}

#[derive(Deserialize)]
struct AbortAnswer {
    service: String,
    kind: String,
    message: String,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    code: String,
    message: String,
}

/// A failure of the HTTP leg itself (connection, status, unreadable answer).
fn http_error(what: impl std::fmt::Display) -> TxnError {
    TxnError::Actor(format!("{HTTP_ERROR_PREFIX}{what}"))
}

impl<W: Workload> HttpTarget<W> {
    /// A target for the server at `url` (e.g. `http://127.0.0.1:41234`), with its sender tasks
    /// spawned on the current tokio runtime.
    pub fn new(url: String, app: Arc<AppDef<W::App>>) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let http = reqwest::Client::new();
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..HTTP_SENDERS {
            tokio::spawn(send_batches(http.clone(), url.clone(), receiver.clone()));
        }
        HttpTarget {
            inner: Arc::new(Inner {
                http,
                url,
                app,
                queue,
            }),
        }
    }

    /// The request as a batch item.
    fn encode(&self, request: &RequestOf<W>) -> Result<Vec<u8>, TxnError> {
        self.encode_with_key(request, None)
    }

    /// The request as a batch item under `idempotency_key` (`<client>/<seq>`) when given, so
    /// that it can be resubmitted on any node with the same id.
    pub(crate) fn encode_with_key(
        &self,
        request: &RequestOf<W>,
        idempotency_key: Option<&str>,
    ) -> Result<Vec<u8>, TxnError> {
        let event = request.event();
        let kind = W::App::event_kind(event);
        let envelope = serde_json::to_vec(event).map_err(http_error)?;
        let payload = strip_tags(&envelope, kind).ok_or_else(|| {
            http_error(format!(
                "event {kind} does not encode as {{service: {{kind: ..}}}}"
            ))
        })?;
        let service = self.inner.app.service_name(request.service());
        let mut item = Vec::with_capacity(payload.len() + service.len() + kind.len() + 64);
        item.extend_from_slice(b"{\"service\":");
        serde_json::to_writer(&mut item, service).map_err(http_error)?;
        item.extend_from_slice(b",\"kind\":");
        serde_json::to_writer(&mut item, kind).map_err(http_error)?;
        item.extend_from_slice(
            format!(",\"partition\":{},\"event\":", request.partition()).as_bytes(),
        );
        item.extend_from_slice(payload);
        if let Some(key) = idempotency_key {
            item.extend_from_slice(b",\"idempotency_key\":");
            serde_json::to_writer(&mut item, key).map_err(http_error)?;
        }
        item.push(b'}');
        Ok(item)
    }

    /// Queues an encoded batch item and waits for its answer.
    pub(crate) async fn submit_item(&self, item: Vec<u8>) -> Reply {
        let (reply, answer) = oneshot::channel();
        self.inner
            .queue
            .send(Queued { item, reply })
            .map_err(|_| http_error("the sender tasks stopped"))?;
        answer
            .await
            .map_err(|_| http_error("the sender task dropped the request"))?
    }
}

/// What a client may do after an error answer of [`HttpTarget`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// A refusal of the request itself (4xx) or a harness failure: resubmitting cannot help.
    No,
    /// The request may or may not have committed (503 `outcome_unknown`): resubmit it with the
    /// same id, which gets its original outcome.
    OutcomeUnknown,
    /// The node could not take it (no sequencer, overloaded, unreachable, stopped): resubmit,
    /// on another node.
    Yes,
}

/// How to go on after `error` (see `reply_of` and `send_batches` for the texts).
pub(crate) fn retry_of(error: &TxnError) -> Retry {
    let TxnError::Actor(text) = error else {
        return Retry::No;
    };
    let Some(answer) = text.strip_prefix(HTTP_ERROR_PREFIX) else {
        return Retry::No;
    };
    if answer.starts_with("503 outcome_unknown") {
        Retry::OutcomeUnknown
    } else if answer.starts_with('4') || answer.starts_with(NO_HTTP_FORM) {
        Retry::No
    } else {
        Retry::Yes
    }
}

/// How every error of the HTTP leg starts.
const HTTP_ERROR_PREFIX: &str = "over HTTP: ";

/// How the error of a query without an HTTP form starts (after the prefix).
const NO_HTTP_FORM: &str = "workload ";

/// The event's own JSON inside the envelope's `{"<Service>":{"<kind>":<event>}}`, checking that
/// the inner tag is `kind`.
fn strip_tags<'a>(envelope: &'a [u8], kind: &str) -> Option<&'a [u8]> {
    let inner_start = envelope.windows(3).position(|w| w == b"\":{")? + 2;
    let inner = &envelope[inner_start..envelope.len().checked_sub(1)?];
    let tag = format!("{{\"{kind}\":");
    let payload = inner.strip_prefix(tag.as_bytes())?;
    payload.strip_suffix(b"}")
}

/// Sends batches until every target is dropped: waits for one request, takes every request
/// queued behind it (up to `HTTP_BATCH_MAX`), posts them, answers each.
async fn send_batches(
    http: reqwest::Client,
    url: String,
    receiver: Arc<Mutex<mpsc::UnboundedReceiver<Queued>>>,
) {
    let endpoint = format!("{url}/v1/batch");
    let mut batch = Vec::with_capacity(HTTP_BATCH_MAX);
    loop {
        {
            let mut receiver = receiver.lock().await;
            match receiver.recv().await {
                Some(first) => batch.push(first),
                None => return,
            }
            while batch.len() < HTTP_BATCH_MAX {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        }
        let mut body =
            Vec::with_capacity(batch.iter().map(|q| q.item.len() + 1).sum::<usize>() + 2);
        body.push(b'[');
        for (i, queued) in batch.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&queued.item);
        }
        body.push(b']');
        let answers = post_batch(&http, &endpoint, body, batch.len()).await;
        match answers {
            Ok(answers) => {
                for (queued, answer) in batch.drain(..).zip(answers) {
                    let _ = queued.reply.send(reply_of(answer));
                }
            }
            Err(e) => {
                for queued in batch.drain(..) {
                    let _ = queued.reply.send(Err(http_error(&e)));
                }
            }
        }
    }
}

async fn post_batch(
    http: &reqwest::Client,
    endpoint: &str,
    body: Vec<u8>,
    n: usize,
) -> Result<Vec<BatchAnswer>, String> {
    let response = http
        .post(endpoint)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
    }
    let answers: Vec<BatchAnswer> = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if answers.len() != n {
        return Err(format!("{} answers to a batch of {n}", answers.len()));
    }
    Ok(answers)
}

fn reply_of(answer: BatchAnswer) -> Reply {
    match (answer.committed, answer.abort, answer.error) {
        (Some(true), _, _) => Ok(Ok(())),
        (Some(false), Some(abort), _) => Ok(Err(AbortReason::User {
            service: abort.service,
            kind: abort.kind,
            message: abort.message,
        })),
        (_, _, Some(error)) => Err(http_error(format!(
            "{} {}: {}",
            answer.status.unwrap_or(0),
            error.code,
            error.message
        ))),
        _ => Err(http_error(
            "an answer that is neither an outcome nor an error",
        )),
    }
}

impl<W: Workload> AsyncTarget<W> for HttpTarget<W> {
    async fn submit(&self, request: RequestOf<W>) -> Reply {
        let item = self.encode(&request)?;
        self.submit_item(item).await
    }

    async fn query(&self, w: &W, query: W::Query) -> Result<(), TxnError> {
        let Some((name, body)) = w.http_query(&query) else {
            return Err(http_error(format!(
                "workload {} has no HTTP form of its queries",
                w.name()
            )));
        };
        let response = self
            .inner
            .http
            .post(format!("{}/v1/queries/{name}", self.inner.url))
            .json(&body)
            .send()
            .await
            .map_err(http_error)?;
        let status = response.status();
        let _ = response.bytes().await.map_err(http_error)?;
        if !status.is_success() {
            return Err(http_error(format!("query {name}: {status}")));
        }
        Ok(())
    }
}

/// The name of the system in reports.
pub const SYSTEM_NAME: &str = "vmsdb-http";

/// The served application that runs workload `name`.
fn app_choice(name: &str) -> Result<AppChoice, HarnessError> {
    match name {
        "transfer" => Ok(AppChoice::Ledger),
        "ycsb" => Ok(AppChoice::Ycsb),
        "marketplace" => Ok(AppChoice::Marketplace),
        other => Err(HarnessError::InvalidArgs(format!(
            "--over-http: vmsdb serve has no application for workload {other}"
        ))),
    }
}

/// Starts the server (in-process, loopback, free port) in its own data directory: a temporary
/// one, inside `--data-dir` when given.
async fn start_server(
    app: AppChoice,
    common: &CommonArgs,
) -> Result<(Server, tempfile::TempDir), HarnessError> {
    let dir = match &common.data_dir {
        Some(d) => tempfile::Builder::new()
            .prefix("vmsdb-http-")
            .tempdir_in(d)?,
        None => tempfile::Builder::new()
            .prefix("vmsdb-bench-http-")
            .tempdir()?,
    };
    let mut settings = Settings::new(app, dir.path());
    settings.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.partitions = Some(common.partitions);
    settings.epoch_duration = Some(Duration::from_micros(common.epoch_us));
    let server_failed = |e: vmsdb::ServeError| HarnessError::Storage(format!("vmsdb serve: {e}"));
    let mut server = Server::start(settings).await.map_err(server_failed)?;
    server.wait_started().await.map_err(server_failed)?;
    Ok((server, dir))
}

/// Submits the workload's load requests through `target`, `--load-clients` at a time.
pub(crate) async fn load_through<W: Workload, T: AsyncTarget<W>>(
    w: &W,
    target: &T,
    common: &CommonArgs,
    ui: Ui,
) -> Result<LoadSummary, HarnessError> {
    let n_load = w.n_load();
    ui.status(format!("{SYSTEM_NAME}: loading {}", w.load_description()));
    let start = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut next = 0usize;
    let submit = |i: usize| {
        let request = w.load_request(i);
        async move { (i, target.submit(request).await) }
    };
    while next < n_load.min(common.load_clients as usize) {
        in_flight.push(submit(next));
        next += 1;
    }
    while let Some((i, result)) = in_flight.next().await {
        if let Err(reason) = result? {
            let message = format!("{SYSTEM_NAME} load request {i} aborted: {reason}");
            return Err(HarnessError::Load(message));
        }
        if next < n_load {
            in_flight.push(submit(next));
            next += 1;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(LoadSummary::new(
        w.load_description(),
        n_load as u64,
        seconds,
    ))
}

/// Runs the workload on `vmsdb serve` over HTTP: load, drive, audit through the server's own
/// runtime, stop the server.
pub async fn run<W: Workload>(
    w: Arc<W>,
    common: &CommonArgs,
    ui: Ui,
) -> Result<SystemRun, HarnessError> {
    let (server, _dir) = start_server(app_choice(w.name())?, common).await?;
    let url = format!("http://{}", server.local_addr());
    let target = HttpTarget::<W>::new(url, w.app().clone());
    let load = load_through(&*w, &target, common, ui).await?;
    ui.status(format!(
        "{SYSTEM_NAME}: loaded in {:.2} s ({} req/s)",
        load.seconds,
        fmt_count(load.requests_per_s as u64)
    ));
    let before = server.stats().unwrap_or_default();
    let progress = ui.run_bar(SYSTEM_NAME, common.duration);
    // The server runs in this process, so the usage covers it and the HTTP client together.
    let sample = crate::usage::Sample::now();
    let driven = drive_runtime(w.clone(), target.clone(), drive_config(common), &progress).await;
    let usage = sample.usage_since(driven.recorder.committed());
    warn_late(ui, SYSTEM_NAME, &driven);
    let runtime_stats =
        runtime_stats_summary(server.stats().unwrap_or_default().since(&before), None);
    ui.status(format!(
        "{SYSTEM_NAME}: checking consistency (through the server's runtime)"
    ));
    let client = server.client::<W::App>().ok_or_else(|| {
        HarnessError::InvalidArgs("the server runs another application type".into())
    })?;
    let violations = w.audit(&client, &effects_of(&driven.recorder)).await?;
    drop((client, target));
    server
        .shutdown()
        .await
        .map_err(|e| HarnessError::Storage(format!("vmsdb serve: {e}")))?;
    Ok(SystemRun {
        name: SYSTEM_NAME,
        recorder: driven.recorder,
        elapsed: driven.elapsed,
        violations,
        load,
        runtime_stats: Some(runtime_stats),
        usage: Some(usage),
        storage: "embedded (vmsdb serve over HTTP/JSON, batched: POST /v1/batch)".to_string(),
        anomalies_expected: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stripped_only_around_the_named_kind() {
        // Goal: the event's own JSON is cut out of the envelope; another kind is refused.
        let envelope = br#"{"Cart":{"CheckoutCart":{"customer":{"a":1},"x":"}}"}}}"#;
        assert_eq!(
            strip_tags(envelope, "CheckoutCart"),
            Some(&br#"{"customer":{"a":1},"x":"}}"}"#[..])
        );
        assert_eq!(strip_tags(envelope, "AddCartItem"), None);
        assert_eq!(strip_tags(b"{}", "A"), None);
    }

    #[test]
    fn only_answers_a_node_could_not_settle_are_retried() {
        // Goal: a refusal is final, an unknown outcome and an unavailable node are retried.
        let error = |text: &str| http_error(text);
        let unknown = error("503 outcome_unknown: the sequencer n1 failed");
        assert_eq!(retry_of(&unknown), Retry::OutcomeUnknown);
        assert_eq!(retry_of(&error("503 no_sequencer: none")), Retry::Yes);
        assert_eq!(retry_of(&error("error sending request")), Retry::Yes);
        assert_eq!(retry_of(&error("409 request_id_reused: x")), Retry::No);
        assert_eq!(retry_of(&error("workload x has no HTTP form")), Retry::No);
        assert_eq!(retry_of(&TxnError::Stopped), Retry::No);
    }
}

//! The routes the Online Marketplace benchmark's own driver sends, served beside the generic
//! API for `--app marketplace` (see docs/server.md, "Marketplace driver routes"): row-by-row
//! ingestion, cart adds, checkouts, price and product updates, dashboards, seals and resets.
//!
//! Each payload type names its fields in the casing the driver writes them (snake_case rows,
//! PascalCase cart items and checkouts, camelCase price updates), case-sensitively; a field
//! in another casing is missing, and the request is refused with 400 before anything runs.
//! Prices come as floats in currency units and become the model's cents
//! ([`cents_of`]); versions come as strings and become the model's `Version`
//! ([`version_of_text`]).
//!
//! Writes answer 200 with an empty body. Ingestion, cart adds and seals answer once their
//! outcome is durable (an abort is 409 `aborted`). Checkouts, price updates and product updates
//! are the driver's tracked transactions: they answer once accepted, with the acknowledgement
//! held by the commit tracker's batch rule (`commit_tracker.rs`), and their outcome is reported
//! through `GET /status/committed`.
//!
//! On a cluster node that is not the sequencer (`vmsdb node --http`) the same routes work: each
//! event goes, as JSON under a request id of the node, into the node's forwarding batches
//! (`forward.rs`), a dashboard is the `dashboard` query forwarded to the sequencer. There a
//! tracked transaction is acknowledged only once its outcome is durable (batches of one node
//! may reach the sequencer out of order, so an earlier acknowledgement could not promise the
//! driver's order), and an error without an outcome (503 `outcome_unknown`, `no_sequencer`) is
//! answered as such. A reset needs the snapshot of the rows to delete and runs only on the
//! sequencer; a forwarding node answers 503 `not_sequencer` naming it.

use super::MarketServed;
use super::marketplace::DashboardAnswer;
use crate::api::{AbortBody, ApiError, OutcomeBody};
use crate::cluster_node::NodeEngine;
use crate::commit_tracker::{self, CommitTracker};
use crate::engine::{Engine, EventRef, Served};
use crate::routes::{body_error, require_token};
use crate::state::ServerState;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use futures::future::BoxFuture;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use services::marketplace::{
    AddCartItem, CartItem, CheckoutCart, CustomerId, IngestProduct, IngestStock, MarketApp,
    MarketOutput, Marketplace, Money, Product, ProductId, ProductStatus, ReplaceProduct,
    ResetError, SealCart, SellerId, SetPrice, StockItem, cents_of, version_of_text,
};
use std::sync::Arc;
use std::task::Poll;
use txn::{Client, EventOf, KeyOf, Request, RequestId, Service, Svc, TxnError};

type Shared = State<Arc<ServerState>>;

/// `POST /product` and `PUT /product`: a product row as the driver writes it.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
struct ProductRow {
    seller_id: SellerId,
    product_id: ProductId,
    name: String,
    sku: String,
    category: String,
    description: String,
    price: f64,
    freight_value: f64,
    status: String,
    version: String,
}

/// `POST /stock`: a stock row as the driver writes it.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
struct StockRow {
    seller_id: SellerId,
    product_id: ProductId,
    qty_available: i64,
    qty_reserved: i64,
    order_count: u64,
    ytd: i64,
    #[allow(dead_code)]
    data: IgnoredAny,
    version: String,
}

/// `PATCH /cart/{customerId}/add`: one item, priced by the driver.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DriverCartItem {
    seller_id: SellerId,
    product_id: ProductId,
    #[allow(dead_code)]
    product_name: IgnoredAny,
    unit_price: f64,
    freight_value: f64,
    quantity: u32,
    voucher: f64,
    version: String,
}

/// `POST /cart`: a checkout; the payment details are the driver's, the simulated provider of
/// the model decides the payment.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(dead_code)]
struct CustomerCheckout {
    customer_id: CustomerId,
    first_name: IgnoredAny,
    last_name: IgnoredAny,
    street: IgnoredAny,
    complement: IgnoredAny,
    city: IgnoredAny,
    state: IgnoredAny,
    zip_code: IgnoredAny,
    payment_type: IgnoredAny,
    card_number: IgnoredAny,
    card_holder_name: IgnoredAny,
    card_expiration: IgnoredAny,
    card_security_number: IgnoredAny,
    card_brand: IgnoredAny,
    installments: IgnoredAny,
    #[serde(rename = "instanceId")]
    instance_id: IgnoredAny,
}

/// `PATCH /product`: an absolute new price for the product at `version`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PriceUpdate {
    seller_id: SellerId,
    product_id: ProductId,
    price: f64,
    version: String,
    #[allow(dead_code)]
    instance_id: IgnoredAny,
}

/// The services `PATCH /{service}/reset` wipes.
const RESETTABLE_SERVICES: [&str; 8] = [
    "cart", "product", "stock", "order", "payment", "shipment", "seller", "customer",
];

/// The driver's routes, behind the same token check as the generic API.
pub fn driver_routes(state: Arc<ServerState>) -> Router {
    let mut router = Router::new()
        .route(
            "/product",
            post(ingest_product)
                .patch(update_price)
                .put(replace_product),
        )
        .route("/stock", post(ingest_stock))
        .route("/cart", post(checkout))
        .route("/cart/{customer_id}/add", patch(cart_add))
        .route("/cart/{customer_id}/seal", patch(seal_cart))
        .route("/seller/dashboard/{seller_id}", get(dashboard));
    for service in RESETTABLE_SERVICES {
        let reset = move |State(state): Shared| reset_service(state, service);
        router = router.route(&format!("/{service}/reset"), patch(reset));
    }
    router
        .with_state(state.clone())
        .merge(commit_tracker::status_routes(state.clone()))
        .layer(middleware::from_fn_with_state(state, require_token))
}

/// Where the driver's requests go: the typed marketplace in this process (`vmsdb serve`, or the
/// cluster node that is the sequencer), or the sequencer, through this cluster node's
/// forwarding batches.
enum Target<'a> {
    Local(&'a Marketplace, &'a Client<MarketApp>),
    Forwarding(&'a Arc<dyn Engine>),
}

/// The marketplace behind the server, or 503 while it recovers.
fn target(state: &ServerState) -> Result<Target<'_>, ApiError> {
    let engine = state.engine()?;
    if let Some(served) = engine.as_any().downcast_ref::<Served<MarketServed>>() {
        return Ok(Target::Local(&served.app().0, served.client()));
    }
    if engine.as_any().is::<NodeEngine<MarketServed>>() {
        return Ok(Target::Forwarding(engine));
    }
    let message = "the marketplace driver routes need --app marketplace";
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_route",
        message,
    ))
}

/// What a submitted driver event got: the typed runtime's answer in this process, or the
/// sequencer's, forwarded.
enum Settled {
    Local(Result<txn::Outcome<MarketOutput>, TxnError>),
    Forwarded(Result<OutcomeBody, ApiError>),
}

/// A driver event submitted (lazily in this process: it is queued when first polled).
struct Sent {
    id: RequestId,
    forwarded: bool,
    settled: BoxFuture<'static, Settled>,
}

/// Submits `request` to the runtime in this process (when first polled), under a new id.
fn send_local(client: &Client<MarketApp>, request: Request<MarketApp>) -> Sent {
    let id = client.new_request_id();
    let client = client.clone();
    let settled = async move { Settled::Local(client.submit_request_with_id(id, request).await) };
    Sent {
        id,
        forwarded: false,
        settled: Box::pin(settled),
    }
}

/// Submits `event` to the service `svc` picks (named `service`): as a typed request in this
/// process, or as its JSON into this node's forwarding batches (queued at once).
fn send<S, E>(
    target: &Target<'_>,
    service: &'static str,
    svc: fn(&Marketplace) -> Svc<S>,
    event: E,
) -> Result<Sent, ApiError>
where
    S: Service<App = MarketApp>,
    E: EventOf<S> + KeyOf<S::Key> + Serialize,
{
    match target {
        Target::Local(market, client) => Ok(send_local(client, svc(market).request(event))),
        Target::Forwarding(engine) => {
            let id = engine.new_request_id();
            let payload = serde_json::to_vec(&event).map_err(|e| {
                let message = format!("the {} event does not encode as JSON: {e}", E::KIND);
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            })?;
            let event = EventRef {
                service,
                kind: E::KIND,
                payload: &payload,
                partition: None,
            };
            let outcome = engine.submit(event, id)?;
            Ok(Sent {
                id,
                forwarded: true,
                settled: Box::pin(async move { Settled::Forwarded(outcome.await) }),
            })
        }
    }
}

/// Decodes a driver payload; a missing, miscased or mistyped field is 400 `bad_payload`.
fn decode<T: DeserializeOwned>(
    what: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(body_error)?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_payload(format!("the body is not a {what}: {e}")))
}

/// Cents of a driver amount, or 400 naming the field.
fn cents(field: &str, amount: f64) -> Result<Money, ApiError> {
    cents_of(amount)
        .ok_or_else(|| ApiError::bad_payload(format!("{field} {amount} is not an amount of money")))
}

fn decode_path<T>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(value)| value)
        .map_err(|e| ApiError::bad_payload(e.body_text()))
}

impl ProductRow {
    /// The model's product (a new row, never updated yet).
    fn into_product(self) -> Result<(SellerId, ProductId, Product), ApiError> {
        if self.status != "approved" {
            let message = format!("status {:?}: only \"approved\" products", self.status);
            return Err(ApiError::bad_payload(message));
        }
        let product = Product {
            price: cents("price", self.price)?,
            freight_value: cents("freight_value", self.freight_value)?,
            name: self.name,
            sku: self.sku,
            category: self.category,
            description: self.description,
            status: ProductStatus::Approved,
            version: version_of_text(&self.version),
            update_seq: 0,
        };
        Ok((self.seller_id, self.product_id, product))
    }
}

async fn ingest_product(
    State(state): Shared,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (seller_id, product_id, product) =
        decode::<ProductRow>("product row", body)?.into_product()?;
    let event = IngestProduct {
        seller_id,
        product_id,
        product,
    };
    let sent = send(&target(&state)?, "product", |m| m.services.product, event)?;
    submit_and_wait(&state, sent).await
}

async fn ingest_stock(
    State(state): Shared,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let row: StockRow = decode("stock row", body)?;
    let event = IngestStock {
        seller_id: row.seller_id,
        product_id: row.product_id,
        item: StockItem {
            qty_available: row.qty_available,
            qty_reserved: row.qty_reserved,
            order_count: row.order_count,
            ytd: row.ytd,
            version: version_of_text(&row.version),
        },
    };
    let sent = send(&target(&state)?, "stock", |m| m.services.stock, event)?;
    submit_and_wait(&state, sent).await
}

async fn cart_add(
    State(state): Shared,
    path: Result<Path<CustomerId>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let customer_id = decode_path(path)?;
    let item: DriverCartItem = decode("cart item", body)?;
    let item = CartItem {
        seller_id: item.seller_id,
        product_id: item.product_id,
        unit_price: cents("UnitPrice", item.unit_price)?,
        freight_value: cents("FreightValue", item.freight_value)?,
        quantity: item.quantity,
        voucher: cents("Voucher", item.voucher)?,
        version: version_of_text(&item.version),
    };
    let event = AddCartItem { customer_id, item };
    let sent = send(&target(&state)?, "cart", |m| m.services.cart, event)?;
    submit_and_wait(&state, sent).await
}

async fn seal_cart(
    State(state): Shared,
    path: Result<Path<CustomerId>, PathRejection>,
) -> Result<Response, ApiError> {
    let customer_id = decode_path(path)?;
    let event = SealCart { customer_id };
    let sent = send(&target(&state)?, "cart", |m| m.services.cart, event)?;
    submit_and_wait(&state, sent).await
}

async fn checkout(
    State(state): Shared,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let checkout: CustomerCheckout = decode("customer checkout", body)?;
    let event = CheckoutCart {
        customer_id: checkout.customer_id,
    };
    let target = target(&state)?;
    submit_tracked(&state, || send(&target, "cart", |m| m.services.cart, event)).await
}

async fn update_price(
    State(state): Shared,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let update: PriceUpdate = decode("price update", body)?;
    let event = SetPrice {
        seller_id: update.seller_id,
        product_id: update.product_id,
        price: cents("price", update.price)?,
        version: version_of_text(&update.version),
    };
    let target = target(&state)?;
    submit_tracked(&state, || {
        send(&target, "product", |m| m.services.product, event)
    })
    .await
}

async fn replace_product(
    State(state): Shared,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (seller_id, product_id, product) = decode::<ProductRow>("product", body)?.into_product()?;
    let event = ReplaceProduct {
        seller_id,
        product_id,
        product,
    };
    let target = target(&state)?;
    submit_tracked(&state, || {
        send(&target, "product", |m| m.services.product, event)
    })
    .await
}

async fn dashboard(
    State(state): Shared,
    path: Result<Path<SellerId>, PathRejection>,
) -> Result<Response, ApiError> {
    let seller_id = decode_path(path)?;
    let (market, client) = match target(&state)? {
        Target::Local(market, client) => (market, client),
        Target::Forwarding(engine) => {
            // The served `dashboard` query, run on the sequencer: the same answer.
            let body = serde_json::json!({ "seller_id": seller_id }).to_string();
            let answer = engine.query("dashboard", body.as_bytes())?.await?;
            return Ok(axum::Json(answer).into_response());
        }
    };
    let dashboard = market.dashboard(client, seller_id).await;
    let dashboard = dashboard
        .map_err(ApiError::from)
        .inspect_err(|e| state.note_error(e))?;
    Ok(axum::Json(DashboardAnswer::new(dashboard)).into_response())
}

async fn reset_service(
    state: Arc<ServerState>,
    service: &'static str,
) -> Result<Response, ApiError> {
    let (market, client) = match target(&state)? {
        Target::Local(market, client) => (market, client.clone()),
        Target::Forwarding(engine) => return Err(reset_elsewhere(engine.as_ref())),
    };
    let requests = market
        .reset_requests(&client, service)
        .await
        .map_err(|e| match e {
            ResetError::Txn(e) => ApiError::from(e),
            unknown @ ResetError::UnknownService(_) => ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_service",
                unknown.to_string(),
            ),
        })?;
    for request in requests {
        submit_and_wait(&state, send_local(&client, request)).await?;
    }
    Ok(StatusCode::OK.into_response())
}

/// 503 `not_sequencer`: a reset reads the rows to delete at one snapshot, which only the
/// sequencer can; names it.
fn reset_elsewhere(engine: &dyn Engine) -> ApiError {
    let sequencer = engine
        .as_any()
        .downcast_ref::<NodeEngine<MarketServed>>()
        .and_then(NodeEngine::sequencer)
        .map_or_else(|| "none is known right now".to_string(), |s| s.name);
    let message = format!(
        "a reset runs only on the sequencer (now: {sequencer}): send it there; nothing was \
         reset"
    );
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_sequencer", message)
}

/// Waits for a submitted event and answers 200 with an empty body once its outcome is durable
/// and committed; an abort is 409 `aborted` naming its kind.
async fn submit_and_wait(state: &ServerState, sent: Sent) -> Result<Response, ApiError> {
    match note_settled(state, sent.id, sent.settled.await)? {
        None => Ok(StatusCode::OK.into_response()),
        Some(abort) => {
            let message = format!(
                "aborted ({}, {}): {}",
                abort.service, abort.kind, abort.message
            );
            Err(ApiError::new(StatusCode::CONFLICT, "aborted", message))
        }
    }
}

/// Submits a tracked transaction (`send` submits it) and answers 200 with an empty body once it
/// is queued in the runtime and the commit tracker releases its acknowledgement; its outcome is
/// counted in `GET /status/committed` when durable. Forwarded to the sequencer, it is
/// acknowledged once its outcome is durable (see the module's documentation).
async fn submit_tracked(
    state: &Arc<ServerState>,
    send: impl FnOnce() -> Result<Sent, ApiError>,
) -> Result<Response, ApiError> {
    let (ticket, hold) = CommitTracker::accept(state);
    let Sent {
        id,
        forwarded,
        mut settled,
    } = match send() {
        Ok(sent) => sent,
        Err(refused) => {
            // Refused before it was queued: an error the driver counts as an abort.
            ticket.settle();
            state.note_outcome(&Err(refused.clone()));
            return Err(refused);
        }
    };
    if forwarded {
        let result = settled.await;
        ticket.settle();
        note_settled(state, id, result)?;
        hold.released().await;
        return Ok(StatusCode::OK.into_response());
    }
    // The first poll puts the request in the runtime's queue, which is first come, first
    // served: a request the client sends after this answer is sequenced after this one, so
    // the driver's updates of one product apply in the order they were acknowledged.
    let first = futures::poll!(&mut settled);
    if let Poll::Ready(result) = first {
        ticket.settle();
        // Refused before it was queued: an error the driver counts as an abort.
        note_settled(state, id, result)?;
    } else {
        let task_state = state.clone();
        tokio::spawn(async move {
            let _ = note_settled(&task_state, id, settled.await);
            ticket.settle();
        });
    }
    hold.released().await;
    Ok(StatusCode::OK.into_response())
}

/// Counts an outcome in the metrics: `None` if it committed, why it aborted, or the error if it
/// got no outcome.
fn note_settled(
    state: &ServerState,
    id: RequestId,
    settled: Settled,
) -> Result<Option<AbortBody>, ApiError> {
    let body = match settled {
        // Committed: nothing to count, nothing to encode.
        Settled::Local(Ok(outcome)) if outcome.result.is_ok() => return Ok(None),
        Settled::Forwarded(Ok(body)) if body.committed => return Ok(None),
        Settled::Local(result) => result
            .map_err(ApiError::from)
            .and_then(|o| OutcomeBody::new(id, &o)),
        Settled::Forwarded(result) => result,
    };
    state.note_outcome(&body);
    Ok(body?.abort)
}

//! The Online Marketplace workload: checkouts, seller dashboards, price updates, product updates
//! and update deliveries over `services::marketplace`, measured per transaction type, with the
//! seven consistency criteria checked at the end.
//!
//! Every client draws from the mix with its own generator (customers uniform, products and
//! sellers uniform or Zipfian with `--zipf`). A checkout carries the items the customer puts in
//! the cart: the cart fill is the first step of the checkout transaction, so cart adds are not
//! measured as operations of their own. The dashboard is a snapshot query; each one is checked
//! for agreement between its entry list and its aggregates as it is read, and disagreements are
//! added to criterion 5 at the end.

use crate::HarnessError;
use crate::cli::CommonArgs;
use crate::workload::{Effects, LocalReader, Op, RequestOf, System, Workload};
use clap::{Args, ValueEnum};
use services::Violations;
use services::marketplace::data::MarketOp;
use services::marketplace::{
    self as market, Dashboard, MarketApp, MarketConfig, MarketSnapshot, Marketplace, Mix, OpGen,
    Scale, SellerId,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use txn::{AppDef, Client, TxnError};

const CHECKOUT: usize = 0;
const DASHBOARD: usize = 1;
const PRICE_UPDATE: usize = 2;
const UPDATE_PRODUCT: usize = 3;
const UPDATE_DELIVERY: usize = 4;

/// Options of the marketplace workload (flatten into the subcommand next to `CommonArgs`).
#[derive(Args, Debug, Clone)]
pub struct MarketplaceArgs {
    /// Data size: `small` is 1,000 customers, 1,000 products and 100 sellers; `default` is the
    /// benchmark's 100,000 customers, 100,000 products and 10,000 sellers. Every product starts
    /// with 10,000 units of stock.
    #[arg(long, value_enum, default_value_t = ScaleArg::Small)]
    pub scale: ScaleArg,

    /// Transaction mix. `default`: checkout 30 %, dashboard 5 %, price update 3 %, update
    /// product 2 %, update delivery 60 %. `checkout-heavy`: checkout 70 %, dashboard 10 %,
    /// price update 10 %, update product 10 %. Or your own percentages, adding up to 100, e.g.
    /// `checkout=50,delivery=50` (names: checkout, dashboard, price, product, delivery; the
    /// ones left out are 0).
    #[arg(long, default_value = "default", value_parser = parse_mix)]
    pub mix: MixArg,

    /// Percentage of payments the simulated provider declines (a declined payment is a
    /// committed order with status PaymentFailed and its stock released).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub payment_failure_pct: u8,

    /// Whether the run-time purpose checks of personal-data reads run (`true`, as in every
    /// application) or not (`false`: only to measure what they cost).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub purpose_checks: bool,
}

/// `services::marketplace::Scale`, as a flag.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleArg {
    Small,
    Default,
}

/// The transaction mix, as a flag: one of the benchmark's two, or custom percentages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MixArg {
    Default,
    CheckoutHeavy,
    Custom(Mix),
}

impl MixArg {
    pub fn mix(self) -> Mix {
        match self {
            MixArg::Default => Mix::DEFAULT,
            MixArg::CheckoutHeavy => Mix::CHECKOUT_HEAVY,
            MixArg::Custom(m) => m,
        }
    }
}

/// Parses `default`, `checkout-heavy` or `name=pct,...` (see `--mix`).
pub fn parse_mix(s: &str) -> Result<MixArg, String> {
    match s.trim() {
        "default" => return Ok(MixArg::Default),
        "checkout-heavy" => return Ok(MixArg::CheckoutHeavy),
        _ => {}
    }
    let mut mix = Mix {
        checkout: 0,
        dashboard: 0,
        price_update: 0,
        update_product: 0,
        update_delivery: 0,
    };
    for part in s.split(',') {
        let (name, pct) = part.split_once('=').ok_or_else(|| {
            format!(
                "{part:?} is not name=percent; use `default`, `checkout-heavy` or e.g. \
                 checkout=50,delivery=50"
            )
        })?;
        let pct: u8 = pct
            .trim()
            .parse()
            .ok()
            .filter(|p| *p <= 100)
            .ok_or_else(|| format!("{pct:?} in {part:?} is not a percentage 0..=100"))?;
        let slot = match name.trim() {
            "checkout" => &mut mix.checkout,
            "dashboard" => &mut mix.dashboard,
            "price" | "price_update" => &mut mix.price_update,
            "product" | "update_product" => &mut mix.update_product,
            "delivery" | "update_delivery" => &mut mix.update_delivery,
            other => {
                return Err(format!(
                    "unknown transaction {other:?} in --mix; use checkout, dashboard, price, \
                     product, delivery"
                ));
            }
        };
        *slot = pct;
    }
    mix.validate()?;
    Ok(MixArg::Custom(mix))
}

/// The marketplace workload.
pub struct MarketplaceWorkload {
    market: Marketplace,
    args: MarketplaceArgs,
    mix: Mix,
    zipf: f64,
    seed: u64,
    /// Built once: one request per seller plus the customer batches.
    load: Vec<RequestOf<Self>>,
    /// Dashboards read during the run whose entries and aggregates disagreed, per system
    /// (indexed by `System`; the same workload object drives vmsdb and then the baselines).
    torn_dashboards: [AtomicU64; System::COUNT],
}

impl MarketplaceWorkload {
    pub fn new(common: &CommonArgs, args: &MarketplaceArgs) -> Result<Self, HarnessError> {
        let scale = match args.scale {
            ScaleArg::Small => Scale::Small,
            ScaleArg::Default => Scale::Default,
        };
        let at_scale = MarketConfig::at_scale(scale, common.partitions);
        let config = MarketConfig {
            payment_failure_pct: args.payment_failure_pct,
            seed: common.seed,
            initial_stock: stock_for_run(common.duration, at_scale.initial_stock),
            ..at_scale
        };
        let market = Marketplace::with_purpose_checks(config, args.purpose_checks)?;
        // Fail on a bad θ now rather than in every client.
        market
            .op_gen(0, args.mix.mix(), common.zipf)
            .map_err(|e| HarnessError::InvalidArgs(e.to_string()))?;
        let load = market.load_requests();
        Ok(MarketplaceWorkload {
            market,
            args: args.clone(),
            mix: args.mix.mix(),
            zipf: common.zipf,
            seed: common.seed,
            load,
            torn_dashboards: Default::default(),
        })
    }

    /// The services-level handle (for tests and tools).
    pub fn marketplace(&self) -> &Marketplace {
        &self.market
    }

    /// Dashboards read on `system` whose entries and aggregates disagreed (a baseline that
    /// runs its own dashboard queries counts them here, so `expected` reports them).
    pub(crate) fn torn_dashboards(&self, system: System) -> &AtomicU64 {
        &self.torn_dashboards[system as usize]
    }

    /// What the checks expect after a run through the HTTP API with these effects (its
    /// dashboards are answered by the server, which the harness does not check for tears).
    pub(crate) fn expected_over_http(&self, effects: &Effects) -> market::Expected {
        let checkouts = effects.committed.get(CHECKOUT).copied().unwrap_or(0);
        self.market.expected(Some(checkouts), 0)
    }

    /// What the checks expect after a run on `system` with these effects.
    pub(crate) fn expected(&self, effects: &Effects, system: System) -> market::Expected {
        let checkouts = effects.committed.get(CHECKOUT).copied().unwrap_or(0);
        let torn = self.torn_dashboards[system as usize].load(Ordering::Relaxed);
        self.market.expected(Some(checkouts), torn)
    }
}

/// Units of stock every product starts with for a run of `duration`: at least the benchmark's
/// `at_scale`, and enough that no product runs out within the run even if every checkout at the
/// highest rate any system reaches took the most units of it. With the benchmark's 10,000
/// units, a fast system exhausts the stock of a small-scale run within seconds, and from then
/// on its checkouts abort almost for free: the systems of a `--compare` run would no longer do
/// the same work. Every system of a run gets the same stock.
pub fn stock_for_run(duration: std::time::Duration, at_scale: i64) -> i64 {
    use crate::limits::{MARKET_CHECKOUTS_PER_S_MAX, MARKET_UNITS_PER_CHECKOUT_MAX};
    let seconds = duration.as_secs() + 1;
    let units = MARKET_CHECKOUTS_PER_S_MAX
        .saturating_mul(MARKET_UNITS_PER_CHECKOUT_MAX)
        .saturating_mul(seconds);
    at_scale.max(i64::try_from(units).unwrap_or(i64::MAX))
}

/// A client's generator.
pub struct MarketGen {
    ops: OpGen,
}

impl Workload for MarketplaceWorkload {
    type App = MarketApp;
    type Query = SellerId;
    type Gen = MarketGen;

    fn name(&self) -> &'static str {
        "marketplace"
    }

    fn op_types(&self) -> &'static [&'static str] {
        &[
            "checkout",
            "dashboard",
            "price_update",
            "update_product",
            "update_delivery",
        ]
    }

    fn parameters(&self) -> serde_json::Value {
        let c = &self.market.config;
        serde_json::json!({
            "scale": format!("{:?}", self.args.scale).to_lowercase(),
            "customers": c.n_customers,
            "sellers": c.n_sellers,
            "products": c.n_products(),
            "initial_stock": c.initial_stock,
            "mix_pct": {
                "checkout": self.mix.checkout,
                "dashboard": self.mix.dashboard,
                "price_update": self.mix.price_update,
                "update_product": self.mix.update_product,
                "update_delivery": self.mix.update_delivery,
            },
            "payment_failure_pct": c.payment_failure_pct,
            "purpose_checks": self.args.purpose_checks,
            "zipf_theta": self.zipf,
            "partitions_per_service": c.n_partitions,
            "services": ["product", "stock", "cart", "order", "payment", "shipment", "seller", "customer"],
        })
    }

    fn app(&self) -> &Arc<AppDef<MarketApp>> {
        self.market.app()
    }

    fn load_description(&self) -> String {
        let c = &self.market.config;
        format!(
            "{} customers, {} sellers with {} products ({} units of stock each)",
            c.n_customers,
            c.n_sellers,
            c.n_products(),
            c.initial_stock
        )
    }

    fn n_load(&self) -> usize {
        self.load.len()
    }

    fn load_request(&self, i: usize) -> RequestOf<Self> {
        self.load[i].clone()
    }

    fn generator(&self, client: u64) -> MarketGen {
        MarketGen {
            ops: self
                .market
                .op_gen(super::client_seed(self.seed, client), self.mix, self.zipf)
                .expect("θ was validated in new"),
        }
    }

    fn next_op(&self, g: &mut MarketGen) -> Op<Self> {
        let op = g.ops.next_op();
        let ty = match &op {
            MarketOp::Checkout { .. } => CHECKOUT,
            MarketOp::Dashboard { seller_id } => {
                return Op::Query {
                    ty: DASHBOARD,
                    query: *seller_id,
                };
            }
            MarketOp::PriceUpdate { .. } => PRICE_UPDATE,
            MarketOp::UpdateProduct { .. } => UPDATE_PRODUCT,
            MarketOp::UpdateDelivery { .. } => UPDATE_DELIVERY,
        };
        Op::Txn {
            ty,
            request: self
                .market
                .request(op)
                .expect("only the dashboard is a query"),
            effect: 0,
        }
    }

    async fn run_query(
        &self,
        client: &Client<MarketApp>,
        seller_id: SellerId,
    ) -> Result<(), TxnError> {
        // Every partition is in this process: the dashboard is read by a closure at one
        // snapshot, as the baselines read it, without encoding each partition's part for
        // another node as the named query does (that cost vmsdb alone about 40 allocations
        // per dashboard; `vmsdb serve` and `--nodes` still answer it by name).
        let sellers = [*self.market.services.seller];
        let parts = client
            .query(&sellers, self.market.dashboard_fn(seller_id))
            .await?;
        let d = Dashboard::from_parts(seller_id, parts);
        if !d.agrees() {
            self.torn_dashboards[System::Vmsdb as usize].fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn http_query(&self, seller_id: &SellerId) -> Option<(&'static str, serde_json::Value)> {
        Some(("dashboard", serde_json::json!({ "seller_id": seller_id })))
    }

    fn run_query_local<L: LocalReader<MarketApp>>(
        &self,
        reader: &L,
        seller_id: SellerId,
    ) -> impl Future<Output = ()> + Send {
        let parts = reader.query(
            &[*self.market.services.seller],
            self.market.dashboard_fn(seller_id),
        );
        async move {
            if !Dashboard::from_parts(seller_id, parts.await).agrees() {
                self.torn_dashboards[L::SYSTEM as usize].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn audit(
        &self,
        client: &Client<MarketApp>,
        effects: &Effects,
    ) -> Result<Violations, TxnError> {
        let snapshot = self.market.snapshot(client).await?;
        Ok(market::check(
            &snapshot,
            &self.expected(effects, System::Vmsdb),
        ))
    }

    fn audit_local<L: LocalReader<MarketApp>>(
        &self,
        reader: &L,
        effects: &Effects,
    ) -> impl Future<Output = Violations> + Send {
        let parts = reader.query(&self.market.services.all(), self.market.snapshot_fn());
        let expected = self.expected(effects, L::SYSTEM);
        async move {
            let snapshot = parts
                .await
                .into_iter()
                .fold(MarketSnapshot::default(), MarketSnapshot::merge);
            market::check(&snapshot, &expected)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        marketplace: MarketplaceArgs,
    }

    fn args(extra: &[&str]) -> Args {
        let base = [
            "marketplace",
            "--quiet",
            "--storage",
            "memory",
            "--seed",
            "3",
        ];
        Args::try_parse_from(base.iter().chain(extra)).unwrap()
    }

    #[test]
    fn every_operation_type_is_generated_and_routed() {
        // Goal: the default mix yields all five operation types, each transaction addressed to
        // a partition of the service its first step belongs to.
        let a = args(&[]);
        let w = MarketplaceWorkload::new(&a.common, &a.marketplace).unwrap();
        let mut g = w.generator(0);
        let mut seen = [0u32; 5];
        for _ in 0..2_000 {
            match w.next_op(&mut g) {
                Op::Txn { ty, request, .. } => {
                    seen[ty] += 1;
                    assert!(request.partition() < request.service().n_partitions());
                    let s = w.marketplace().services;
                    let want = match ty {
                        CHECKOUT => s.cart.raw(),
                        PRICE_UPDATE | UPDATE_PRODUCT => s.product.raw(),
                        UPDATE_DELIVERY => s.shipment.raw(),
                        _ => panic!("type {ty} is not a transaction"),
                    };
                    assert_eq!(request.service(), want);
                }
                Op::Query { ty, query } => {
                    seen[ty] += 1;
                    assert_eq!(ty, DASHBOARD);
                    assert!(query < w.marketplace().config.n_sellers);
                }
            }
        }
        assert!(seen.iter().all(|n| *n > 0), "{seen:?}");
        assert_eq!(w.op_types().len(), 5);
    }

    #[test]
    fn the_initial_stock_outlasts_the_run_at_the_highest_checkout_rate() {
        // Goal: no product can run out within the run, whatever the system's speed: the stock
        // every product starts with covers every checkout of the run at the rate bound taking
        // the most units of it, and every system of the run loads the same stock.
        use crate::limits::{MARKET_CHECKOUTS_PER_S_MAX, MARKET_UNITS_PER_CHECKOUT_MAX};
        for seconds in [1u64, 30, 60] {
            let a = args(&["--duration", &format!("{seconds}s")]);
            let w = MarketplaceWorkload::new(&a.common, &a.marketplace).unwrap();
            let stock = w.marketplace().config.initial_stock;
            let needed = MARKET_CHECKOUTS_PER_S_MAX * MARKET_UNITS_PER_CHECKOUT_MAX * seconds;
            assert!(stock >= needed as i64, "{seconds} s: {stock} < {needed}");
            assert!(w.load_description().contains(&format!("{stock} units")));
        }
    }

    #[test]
    fn a_short_run_on_vmsdb_and_serial_passes_every_check() {
        // Goal: the harness drives the workload end to end on vmsdb and the serial baseline,
        // and both pass every consistency criterion.
        let out = tempfile::tempdir().unwrap();
        let out_dir = out.path().to_str().unwrap();
        let a = args(&[
            "--duration",
            "300ms",
            "--clients",
            "32",
            "--compare",
            "serial,eventual",
            "--mix",
            "checkout-heavy",
            "--out",
            out_dir,
        ]);
        let w = MarketplaceWorkload::new(&a.common, &a.marketplace).unwrap();
        let summary = crate::run_workload(w, &a.common).unwrap();
        // The eventual baseline runs too; its anomalies are reported but do not fail the run.
        assert!(summary.passed);
        assert!(summary.systems["eventual"].anomalies_expected);
        assert!(summary.systems["eventual"].committed > 0);
        let json = std::fs::read_to_string(out.path().join("summary.json")).unwrap();
        assert!(json.contains(market::check::criteria::CHECKOUT_ATOMIC));
    }

    #[test]
    fn bad_arguments_are_refused() {
        // Goal: an out-of-range failure percentage is refused by the parser.
        let base = ["marketplace", "--payment-failure-pct", "101"];
        assert!(Args::try_parse_from(base).is_err());
        assert_eq!(
            args(&["--mix", "checkout-heavy"]).marketplace.mix,
            MixArg::CheckoutHeavy
        );
    }

    #[test]
    fn custom_mixes_parse_and_bad_ones_are_refused() {
        // Goal: custom percentages become that mix; sums other than 100, unknown names and
        // malformed parts are refused with a message naming the problem.
        let m = args(&["--mix", "checkout=50,delivery=40,dashboard=10"])
            .marketplace
            .mix
            .mix();
        assert_eq!(
            (m.checkout, m.update_delivery, m.dashboard, m.price_update),
            (50, 40, 10, 0)
        );
        for (bad, says) in [
            ("checkout=50,delivery=40", "90"),
            ("checkout=50,refund=50", "refund"),
            ("checkout", "name=percent"),
            ("checkout=150", "percentage"),
        ] {
            let err = parse_mix(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}

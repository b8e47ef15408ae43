//! The YCSB-T workload: k-key read-modify-write transactions over `services::ycsb`.

use crate::HarnessError;
use crate::cli::{CommonArgs, YcsbArgs};
use crate::workload::{Effects, LocalReader, Op, RequestOf, Workload};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use services::Violations;
use services::ycsb::{self, Ycsb, YcsbApp, YcsbAudit, YcsbConfig};
use services::zipf::KeyDist;
use std::sync::Arc;
use txn::{AppDef, Client, TxnError};

const RMW: usize = 0;

/// The YCSB-T workload.
pub struct YcsbWorkload {
    ycsb: Ycsb,
    args: YcsbArgs,
    dist: KeyDist,
    seed: u64,
    /// Built once: the load is a few thousand batch requests.
    load: Vec<RequestOf<Self>>,
}

impl YcsbWorkload {
    pub fn new(common: &CommonArgs, args: &YcsbArgs) -> Result<Self, HarnessError> {
        if u64::from(args.keys_per_txn) > args.keys {
            return Err(HarnessError::InvalidArgs(format!(
                "--keys-per-txn {} exceeds --keys {}: a transaction's keys are distinct",
                args.keys_per_txn, args.keys
            )));
        }
        let ycsb = Ycsb::new(YcsbConfig {
            n_keys: args.keys,
            n_partitions: common.partitions,
        })?;
        let dist = KeyDist::zipf(args.keys, common.zipf)
            .map_err(|e| HarnessError::InvalidArgs(e.to_string()))?;
        let load = ycsb.load_requests(args.load_batch as usize);
        Ok(YcsbWorkload {
            ycsb,
            args: args.clone(),
            dist,
            seed: common.seed,
            load,
        })
    }
}

impl YcsbWorkload {
    /// The services-level handle (for baselines that run the same transactions elsewhere).
    pub fn ycsb(&self) -> &Ycsb {
        &self.ycsb
    }

    /// The workload's options.
    pub fn args(&self) -> &YcsbArgs {
        &self.args
    }
}

/// A client's generator.
pub struct YcsbGen {
    rng: SmallRng,
    keys: Vec<u64>,
}

impl Workload for YcsbWorkload {
    type App = YcsbApp;
    type Query = ();
    type Gen = YcsbGen;

    fn name(&self) -> &'static str {
        "ycsb"
    }

    fn op_types(&self) -> &'static [&'static str] {
        &["rmw"]
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": self.args.keys,
            "keys_per_txn": self.args.keys_per_txn,
            "zipf_theta": self.dist.theta(),
            "partitions": self.ycsb.config.n_partitions,
        })
    }

    fn app(&self) -> &Arc<AppDef<YcsbApp>> {
        self.ycsb.app()
    }

    fn load_description(&self) -> String {
        format!(
            "{} keys in {} insert requests",
            self.args.keys,
            self.load.len()
        )
    }

    fn n_load(&self) -> usize {
        self.load.len()
    }

    fn load_request(&self, i: usize) -> RequestOf<Self> {
        self.load[i].clone()
    }

    fn generator(&self, client: u64) -> YcsbGen {
        YcsbGen {
            rng: SmallRng::seed_from_u64(super::client_seed(self.seed, client)),
            keys: vec![0; self.args.keys_per_txn as usize],
        }
    }

    fn next_op(&self, g: &mut YcsbGen) -> Op<Self> {
        self.dist.sample_distinct(&mut g.rng, &mut g.keys);
        Op::Txn {
            ty: RMW,
            request: self.ycsb.rmw(&g.keys),
            effect: i64::from(self.args.keys_per_txn),
        }
    }

    async fn run_query(&self, _client: &Client<YcsbApp>, _query: ()) -> Result<(), TxnError> {
        Ok(())
    }

    fn run_query_local<L: LocalReader<YcsbApp>>(
        &self,
        _reader: &L,
        _query: (),
    ) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }

    async fn audit(
        &self,
        client: &Client<YcsbApp>,
        effects: &Effects,
    ) -> Result<Violations, TxnError> {
        let audit = self.ycsb.audit(client).await?;
        Ok(ycsb::check(&audit, self.args.keys, increments(effects)))
    }

    fn audit_local<L: LocalReader<YcsbApp>>(
        &self,
        reader: &L,
        effects: &Effects,
    ) -> impl Future<Output = Violations> + Send {
        let parts = reader.query(&[*self.ycsb.service], self.ycsb.audit_fn());
        let (n_keys, increments) = (self.args.keys, increments(effects));
        async move {
            let audit = parts
                .await
                .into_iter()
                .fold(YcsbAudit::default(), YcsbAudit::merge);
            ycsb::check(&audit, n_keys, increments)
        }
    }
}

/// Key increments made by the committed transactions of a run (k × committed).
pub(crate) fn increments(effects: &Effects) -> u64 {
    effects
        .effect
        .get(RMW)
        .copied()
        .unwrap_or(0)
        .try_into()
        .unwrap_or(u64::MAX)
}

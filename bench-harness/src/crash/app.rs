//! The crash workload: every transaction inserts one key into three services in a chain, and
//! some abort at the last step, so a half-applied transaction would be visible.
//!
//! Request `(client, seq)` inserts key `k = client << 32 | seq` with value `v = value_of(seed,
//! k)` (1..=1000):
//!
//! ```text
//!  submit ──▶ A: rows[k] = (v, padding) ──emit──▶ B: rows[k] = v ──emit──▶ C: v % 7 == 0 ? abort
//!                                                                           : rows[k] = v,
//!                                                                             totals[bucket(k)] += v
//! ```
//!
//! The committed output is `(k, v, the bucket's total after the insert)`: a second execution of
//! the same request would report (and store) a different total, so exactly-once is observable.
//! Invariants: a key is in all three services with the same value or in none; no key with
//! `v % 7 == 0` is anywhere; each bucket total is the sum of the values of C's keys in it.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use txn::{App, AppBuilder, AppDef, Client, ServiceRef, Table, TxnError};

/// Values divisible by this abort at the last step (in service C).
pub const ABORT_DIVISOR: i64 = 7;

/// Largest value; values are uniform in `1..=VALUE_MAX`.
pub const VALUE_MAX: u64 = 1_000;

/// Total rows per partition of C: more than one spreads the contention on the totals.
pub const BUCKETS_PER_PARTITION: usize = 8;

/// The types of the crash application.
pub struct CrashApp;

impl App for CrashApp {
    type Event = CrashEvent;
    type Output = CrashOutput;
}

/// The one event: each service handles the step of the chain it owns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CrashEvent {
    Insert { k: u64, v: i64 },
}

/// What a committed insert returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashOutput {
    pub k: u64,
    pub v: i64,
    /// The bucket's total right after this insert.
    pub bucket_total: i64,
}

/// A row of service A: the value and deterministic padding (so checkpoints have bulk).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ARow {
    pub v: i64,
    pub pad: Vec<u8>,
}

/// The built crash application and its handles.
pub struct CrashWorkload {
    pub app: Arc<AppDef<CrashApp>>,
    pub a: ServiceRef,
    pub b: ServiceRef,
    pub c: ServiceRef,
    pub a_rows: Table<u64, ARow>,
    pub b_rows: Table<u64, i64>,
    pub c_rows: Table<u64, i64>,
    pub c_totals: Table<u32, i64>,
    /// For each partition of C, the keys of its total rows (keys that C routes to it).
    pub bucket_keys: Arc<Vec<Vec<u32>>>,
    pub pad_bytes: usize,
}

/// The SplitMix64 finalizer: a cheap, well-mixed hash of a u64.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The key request `(client, seq)` inserts.
pub fn key_of(client: u64, seq: u64) -> u64 {
    debug_assert!(client < (1 << 32) && seq < (1 << 32));
    (client << 32) | seq
}

/// The request id that inserts `k`.
pub fn id_of(k: u64) -> txn::RequestId {
    txn::RequestId {
        client: k >> 32,
        seq: k & 0xffff_ffff,
    }
}

/// The value inserted under `k` in a run with `seed`.
pub fn value_of(seed: u64, k: u64) -> i64 {
    (1 + mix(seed ^ k.rotate_left(17)) % VALUE_MAX) as i64
}

/// Whether an insert of `v` aborts deliberately.
pub fn aborts(v: i64) -> bool {
    v % ABORT_DIVISOR == 0
}

/// The padding stored with `k` in A.
pub fn pad_of(k: u64, pad_bytes: usize) -> Vec<u8> {
    (0..pad_bytes)
        .map(|i| (k as u8).wrapping_add(i as u8))
        .collect()
}

impl CrashWorkload {
    /// Builds the application with `partitions` partitions per service.
    pub fn new(partitions: u32, pad_bytes: usize) -> Result<Self, TxnError> {
        let mut builder = AppBuilder::<CrashApp>::new();
        let a = builder.service("a", partitions);
        let b = builder.service("b", partitions);
        let c = builder.service("c", partitions);
        let a_rows = builder.table::<u64, ARow>(a, "rows");
        let b_rows = builder.table::<u64, i64>(b, "rows");
        let c_rows = builder.table::<u64, i64>(c, "rows");
        let c_totals = builder.table::<u32, i64>(c, "totals");

        let mut bucket_keys = vec![Vec::with_capacity(BUCKETS_PER_PARTITION); partitions as usize];
        let mut t = 0u32;
        while bucket_keys
            .iter()
            .any(|keys| keys.len() < BUCKETS_PER_PARTITION)
        {
            let keys = &mut bucket_keys[c.partition_of(&t) as usize];
            if keys.len() < BUCKETS_PER_PARTITION {
                keys.push(t);
            }
            t += 1;
        }
        let bucket_keys = Arc::new(bucket_keys);

        builder.handler(a, move |ctx, event| {
            let CrashEvent::Insert { k, v } = event;
            ctx.put(
                a_rows,
                *k,
                ARow {
                    v: *v,
                    pad: pad_of(*k, pad_bytes),
                },
            )?;
            ctx.emit_raw(b, k, event.clone());
            Ok(())
        });
        builder.handler(b, move |ctx, event| {
            let CrashEvent::Insert { k, v } = event;
            ctx.put(b_rows, *k, *v)?;
            ctx.emit_raw(c, k, event.clone());
            Ok(())
        });
        let keys = bucket_keys.clone();
        builder.handler(c, move |ctx, event| {
            let CrashEvent::Insert { k, v } = event;
            if aborts(*v) {
                return Err(ctx.abort(format!("value {v} of key {k} is divisible by 7")));
            }
            ctx.put(c_rows, *k, *v)?;
            let bucket = bucket_key(&keys, ctx.partition(), *k);
            let total = ctx.get(c_totals, &bucket)?.unwrap_or(0) + v;
            ctx.put(c_totals, bucket, total)?;
            ctx.set_output(CrashOutput {
                k: *k,
                v: *v,
                bucket_total: total,
            });
            Ok(())
        });
        Ok(CrashWorkload {
            app: builder.build()?,
            a,
            b,
            c,
            a_rows,
            b_rows,
            c_rows,
            c_totals,
            bucket_keys,
            pad_bytes,
        })
    }

    /// The total row `k` counts in, within C's partition `partition`.
    pub fn bucket_of(&self, partition: u32, k: u64) -> u32 {
        bucket_key(&self.bucket_keys, partition, k)
    }

    /// The request that inserts `k` with value `v`: submitted to A's partition owning `k`.
    pub async fn insert(
        &self,
        client: &Client<CrashApp>,
        k: u64,
        v: i64,
    ) -> Result<txn::Outcome<CrashOutput>, TxnError> {
        client
            .submit_with_id_raw(id_of(k), self.a, &k, CrashEvent::Insert { k, v })
            .await
    }

    /// Every row of every service at one consistent snapshot.
    pub async fn snapshot(&self, client: &Client<CrashApp>) -> Result<Snapshot, TxnError> {
        let (a, b, c) = (self.a, self.b, self.c);
        let (a_rows, b_rows, c_rows, c_totals) =
            (self.a_rows, self.b_rows, self.c_rows, self.c_totals);
        let pad_bytes = self.pad_bytes;
        let parts = client
            .query(&[a, b, c], move |view| {
                if view.is(a) {
                    let mut bad_pads = 0;
                    let rows = view
                        .iter(a_rows)
                        .map(|(k, row)| {
                            if row.pad != pad_of(*k, pad_bytes) {
                                bad_pads += 1;
                            }
                            (*k, row.v)
                        })
                        .collect();
                    Part::A { rows, bad_pads }
                } else if view.is(b) {
                    Part::B(view.iter(b_rows).map(|(k, v)| (*k, *v)).collect())
                } else {
                    Part::C {
                        partition: view.partition(),
                        rows: view.iter(c_rows).map(|(k, v)| (*k, *v)).collect(),
                        totals: view.iter(c_totals).map(|(t, v)| (*t, *v)).collect(),
                    }
                }
            })
            .await?;
        let mut snap = Snapshot::default();
        for part in parts {
            match part {
                Part::A { rows, bad_pads } => {
                    snap.a.extend(rows);
                    snap.bad_pads += bad_pads;
                }
                Part::B(rows) => snap.b.extend(rows),
                Part::C {
                    partition,
                    rows,
                    totals,
                } => {
                    for (k, v) in rows {
                        snap.c.insert(k, v);
                        *snap
                            .bucket_sums
                            .entry((partition, self.bucket_of(partition, k)))
                            .or_default() += v;
                    }
                    for (t, total) in totals {
                        snap.totals.insert((partition, t), total);
                    }
                }
            }
        }
        Ok(snap)
    }
}

fn bucket_key(keys: &[Vec<u32>], partition: u32, k: u64) -> u32 {
    let in_partition = &keys[partition as usize];
    in_partition[(mix(k) % in_partition.len() as u64) as usize]
}

/// One partition's part of a [`Snapshot`].
enum Part {
    A {
        rows: Vec<(u64, i64)>,
        bad_pads: usize,
    },
    B(Vec<(u64, i64)>),
    C {
        partition: u32,
        rows: Vec<(u64, i64)>,
        totals: Vec<(u32, i64)>,
    },
}

/// The whole state at one snapshot.
#[derive(Default, Debug)]
pub struct Snapshot {
    pub a: HashMap<u64, i64>,
    pub b: HashMap<u64, i64>,
    pub c: HashMap<u64, i64>,
    /// A rows whose padding is not what the insert wrote.
    pub bad_pads: usize,
    /// Stored totals by (C partition, total key).
    pub totals: HashMap<(u32, u32), i64>,
    /// Sums of C's values by (C partition, total key), recomputed from the rows.
    pub bucket_sums: HashMap<(u32, u32), i64>,
}

//! Measures the durability costs of the embedded default (redb): fsync per epoch, log bytes per
//! transaction, checkpoint time for N rows, and recovery time.
//!
//! `cargo run --release -p txn --example durability_numbers -- [n_accounts] [data_dir]`
//! (default 1,000,000 accounts in a fresh temporary directory).

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use txn::storage::EmbeddedStorage;
use txn::{App, AppBuilder, AppDef, Runtime, RuntimeConfig, RuntimeStats, ServiceRef};

struct Bank;

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Ev {
    /// Inserts accounts (all owned by the partition this is sent to).
    Load {
        keys: Vec<u64>,
        balance: i64,
    },
    Withdraw {
        from: u64,
        to: u64,
        amount: i64,
    },
    Deposit {
        to: u64,
        amount: i64,
    },
}

impl App for Bank {
    type Event = Ev;
    type Output = ();
}

const N_PARTITIONS: u32 = 4;

fn app() -> (Arc<AppDef<Bank>>, ServiceRef) {
    let mut b = AppBuilder::<Bank>::new();
    let bank = b.service("bank", N_PARTITIONS);
    let accounts = b.table::<u64, i64>(bank, "accounts");
    b.handler(bank, move |ctx, ev| {
        match ev {
            Ev::Load { keys, balance } => {
                for k in keys {
                    ctx.put(accounts, *k, *balance)?;
                }
            }
            Ev::Withdraw { from, to, amount } => {
                let balance = ctx.get(accounts, from)?.unwrap_or(0);
                if balance < *amount {
                    return Err(ctx.abort("insufficient balance"));
                }
                ctx.put(accounts, *from, balance - amount)?;
                ctx.emit_raw(
                    bank,
                    to,
                    Ev::Deposit {
                        to: *to,
                        amount: *amount,
                    },
                );
            }
            Ev::Deposit { to, amount } => {
                let balance = ctx.get(accounts, to)?.unwrap_or(0);
                ctx.put(accounts, *to, balance + amount)?;
            }
        }
        Ok(())
    });
    (b.build().expect("valid app"), bank)
}

fn config(dir: &std::path::Path, checkpoint_every: u64) -> RuntimeConfig {
    RuntimeConfig {
        storage: Arc::new(EmbeddedStorage::open(dir).expect("open the embedded store")),
        checkpoint_every_epochs: checkpoint_every,
        ..RuntimeConfig::in_memory()
    }
}

fn log_totals(s: &RuntimeStats) -> (u64, u64, u64, u64) {
    (
        s.log_appends.load(Ordering::Relaxed),
        s.log_bytes.load(Ordering::Relaxed),
        s.log_append_nanos.load(Ordering::Relaxed),
        s.log_epochs.load(Ordering::Relaxed),
    )
}

async fn wait_for_checkpoints(s: &RuntimeStats, n: u64) {
    while s.checkpoints_completed.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n_accounts: u64 = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("n_accounts is a number"));
    let temp = tempfile::tempdir().expect("temporary directory");
    let dir = args
        .next()
        .map_or_else(|| temp.path().to_path_buf(), Into::into);
    let (app, bank) = app();

    // 1. Load: one Load transaction per 1,000 keys of a partition.
    let rt = Runtime::start(app.clone(), config(&dir, 50))
        .await
        .expect("start");
    let client = rt.client();
    let started = Instant::now();
    let mut per_partition: Vec<Vec<u64>> = vec![Vec::new(); N_PARTITIONS as usize];
    for k in 0..n_accounts {
        per_partition[bank.partition_of(&k) as usize].push(k);
    }
    let mut loads = Vec::new();
    for (p, keys) in per_partition.into_iter().enumerate() {
        for chunk in keys.chunks(1_000) {
            let c = client.clone();
            let ev = Ev::Load {
                keys: chunk.to_vec(),
                balance: 1_000,
            };
            loads.push(tokio::spawn(async move {
                c.submit_to_raw(bank, p as u32, ev).await
            }));
        }
    }
    for l in loads {
        assert!(l.await.unwrap().unwrap().committed());
    }
    println!(
        "load            {n_accounts} rows in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    // 2. The first checkpoint after the load holds every row.
    let started = Instant::now();
    let next = rt.stats().checkpoints_completed.load(Ordering::Relaxed) + 1;
    // Checkpoints fall due every 50 epochs; keep epochs coming with small transfers.
    while rt.stats().checkpoints_completed.load(Ordering::Relaxed) < next {
        let _ = client
            .submit_raw(
                bank,
                &1u64,
                Ev::Withdraw {
                    from: 1,
                    to: 2,
                    amount: 1,
                },
            )
            .await;
    }
    wait_for_checkpoints(rt.stats(), next).await;
    let rows = rt.stats().last_checkpoint_rows.load(Ordering::Relaxed);
    let micros = rt.stats().last_checkpoint_micros.load(Ordering::Relaxed);
    println!(
        "full checkpoint {rows} rows written in {:.2} s (waited {:.2} s)",
        micros as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    // 3. Transfers: fsync per epoch and log bytes per transaction.
    let before = log_totals(rt.stats());
    let n_clients = 512;
    let run_for = Duration::from_secs(3);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..n_clients {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ c;
            let mut n = 0u64;
            while started.elapsed() < run_for {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let (from, to) = (x % n_accounts, (x >> 32) % n_accounts);
                let ev = Ev::Withdraw {
                    from,
                    to,
                    amount: 1,
                };
                if client
                    .submit_raw(bank, &from, ev)
                    .await
                    .unwrap()
                    .committed()
                {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut committed = 0;
    for t in tasks {
        committed += t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = log_totals(rt.stats());
    let (appends, bytes, nanos, epochs) = (
        after.0 - before.0,
        after.1 - before.1,
        after.2 - before.2,
        after.3 - before.3,
    );
    println!(
        "transfers       {committed} committed in {elapsed:.1} s ({:.0} txn/s, {n_clients} clients)",
        committed as f64 / elapsed
    );
    println!(
        "log             {epochs} epochs in {appends} durable writes ({:.2} epochs/write), {:.3} ms per write incl. fsync, {:.1} bytes per transaction, {:.0} transactions per epoch",
        epochs as f64 / appends.max(1) as f64,
        nanos as f64 / appends.max(1) as f64 / 1e6,
        bytes as f64 / committed.max(1) as f64,
        committed as f64 / epochs.max(1) as f64
    );
    let n_ckpt = rt.stats().checkpoints_completed.load(Ordering::Relaxed);
    println!(
        "incremental     last checkpoint: {} rows in {:.3} s ({n_ckpt} checkpoints so far)",
        rt.stats().last_checkpoint_rows.load(Ordering::Relaxed),
        rt.stats().last_checkpoint_micros.load(Ordering::Relaxed) as f64 / 1e6
    );
    let hash = client.state_hash().await.unwrap();
    rt.shutdown().await;

    // 4. Recovery: latest checkpoint + replay of the log after it.
    let started = Instant::now();
    let rt = Runtime::start(app, config(&dir, 50))
        .await
        .expect("restart");
    let r = rt.recovery_report().clone();
    assert_eq!(
        rt.client().state_hash().await.unwrap(),
        hash,
        "recovered state differs"
    );
    println!(
        "recovery        checkpoint epoch {:?}, {} rows loaded, {} epochs replayed, {:.2} s (start-up {:.2} s); state hash identical",
        r.checkpoint_epoch,
        r.rows_loaded,
        r.epochs_replayed,
        r.duration.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    rt.shutdown().await;
}

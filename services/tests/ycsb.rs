//! YCSB-T on a real runtime: a contended Zipfian run keeps sum = k × committed, and the final
//! state equals a serial replay of the committed order.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use services::load::submit_all;
use services::ycsb::{self, Ycsb, YcsbConfig};
use services::zipf::KeyDist;
use txn::{Runtime, RuntimeConfig, SerialExecutor};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zipfian_rmw_keeps_the_sum_invariant_and_is_serializable() {
    // Goal: under heavy skew (θ = 0.99 over 200 keys) every committed transaction adds exactly
    // k, and the final state equals a serial replay of the reported serial order.
    let seed: u64 = std::env::var("SERVICES_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed} (replay with SERVICES_TEST_SEED={seed})");
    let config = YcsbConfig {
        n_keys: 200,
        n_partitions: 4,
    };
    let y = Ycsb::new(config).unwrap();
    let rt = Runtime::start(y.app().clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let client = rt.client();
    let load = y.load_requests(16);
    let n_load = load.len();
    let load_for_replay = load.clone();
    let report = submit_all(&client, n_load, 8, move |i| load[i].clone())
        .await
        .unwrap();
    assert_eq!(report.n_committed as usize, n_load);
    assert_eq!(y.read(&client, 7).await.unwrap(), Some(0));

    let dist = KeyDist::zipf(config.n_keys, 0.99).unwrap();
    let k = 4;
    let mut tasks = Vec::new();
    for c in 0..16u64 {
        let (client, y) = (client.clone(), y.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ c);
            let mut history = Vec::new();
            for _ in 0..40 {
                let mut keys = vec![0; k];
                dist.sample_distinct(&mut rng, &mut keys);
                let r = y.rmw(&keys);
                let outcome = client.submit_request(r.clone()).await.unwrap();
                assert!(outcome.result.is_ok(), "seed {seed}: {:?}", outcome.result);
                history.push((outcome.serial_pos.unwrap(), r));
            }
            history
        }));
    }
    let mut history = Vec::new();
    for t in tasks {
        history.extend(t.await.unwrap());
    }
    let audit = y.audit(&client).await.unwrap();
    let hash = client.state_hash().await.unwrap();
    let conflicts = rt
        .stats()
        .conflicts
        .load(std::sync::atomic::Ordering::Relaxed);
    rt.shutdown().await;
    eprintln!(
        "{} transactions, {conflicts} conflict losers",
        history.len()
    );

    let v = ycsb::check(&audit, config.n_keys, (history.len() * k) as u64);
    assert!(v.values().all(|n| *n == 0), "seed {seed}: {v:?}");

    history.sort_by_key(|(pos, _)| *pos);
    let mut serial = SerialExecutor::new(y.app().clone());
    for r in load_for_replay {
        serial.run_request(r, 0).unwrap();
    }
    for (_, r) in history {
        serial.run_request(r, 0).unwrap();
    }
    assert_eq!(
        serial.state_hash(),
        hash,
        "seed {seed}: final state differs from the serial replay"
    );
    assert_eq!(y.audit_serial(&serial), audit);
}

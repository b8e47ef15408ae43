use std::panic::{AssertUnwindSafe, catch_unwind};
use txn_storage::{RedbStorage, Storage, conformance};
fn snapshot(
    s: &RedbStorage,
) -> Result<(Vec<(u64, Vec<u8>)>, Option<u64>, Vec<(Vec<u8>, Vec<u8>)>), String> {
    let mut epochs = Vec::new();
    s.read_epochs(0, &mut |e, b| {
        epochs.push((e, b.to_vec()));
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    let c = s
        .read_latest_checkpoint(&mut |k, v| {
            rows.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    Ok((epochs, c, rows))
}
fn main() {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("panic: {}", info.to_string().lines().next().unwrap_or(""));
    }));
    let n_trials: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    {
        let s = RedbStorage::open(dir.path()).unwrap();
        for e in 1..=50u64 {
            s.append_epoch(e, &conformance::batch_for(e, 2000)).unwrap();
        }
        let rows: Vec<_> = (0..1000u32)
            .map(|i| {
                (
                    format!("key{i:05}").into_bytes(),
                    Some(conformance::batch_for(i as u64, 40)),
                )
            })
            .collect();
        s.write_checkpoint_rows(40, &rows).unwrap();
        s.complete_checkpoint(40).unwrap();
    }
    let file = dir.path().join("vmsdb.redb");
    let original = std::fs::read(&file).unwrap();
    let good = snapshot(&RedbStorage::open(dir.path()).unwrap()).unwrap();
    println!("file {} bytes", original.len());
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    let mut seed = 12345u64;
    for _ in 0..n_trials {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let pos = (seed >> 20) as usize % original.len();
        let mut bytes = original.clone();
        bytes[pos] ^= 1 << ((seed >> 8) % 8);
        std::fs::write(&file, &bytes).unwrap();
        let _ = std::fs::remove_file(dir.path().join("vmsdb.redb.integrity-failed"));
        let outcome = catch_unwind(AssertUnwindSafe(|| match RedbStorage::open(dir.path()) {
            Err(e) => format!("open error: {}", e.to_string().split(".redb").nth(1).unwrap_or("").chars().take(200).collect::<String>()),
            Ok(s) => match snapshot(&s) {
                Err(e) => format!("read error: {}", e.split(':').next().unwrap_or("")),
                Ok(snap) if snap == good => "identical".to_string(),
                Ok(snap) => {
                    let (e, c, r) = &snap;
                    format!("WRONG DATA at {pos}: epochs {} vs {}, first {:?}, ckpt {:?}/{:?} rows {} vs {}", e.len(), good.0.len(), e.first().map(|x| x.0), c, good.1, r.len(), good.2.len())
                }
            },
        })).unwrap_or_else(|_| "PANIC".to_string());
        let key = if outcome.starts_with("WRONG") || outcome.starts_with("open") {
            outcome.clone()
        } else {
            outcome
        };
        *counts.entry(key).or_default() += 1;
    }
    for (k, v) in counts {
        println!("{v:6} {k}");
    }
}

use std::time::Instant;
use txn_storage::{RedbStorage, Storage};
fn main() {
    let n: u64 = std::env::args().nth(1).unwrap().parse().unwrap();
    let size: usize = std::env::args().nth(2).unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = RedbStorage::open(dir.path()).unwrap();
    let mut times = Vec::new();
    for e in 1..=n { let b = vec![(e % 251) as u8; size]; let t = Instant::now(); s.append_epoch(e, &b).unwrap(); times.push(t.elapsed()); }
    times.sort();
    eprintln!("median {:?} p90 {:?}", times[times.len()/2], times[times.len()*9/10]);
}

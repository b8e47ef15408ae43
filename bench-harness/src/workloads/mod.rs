//! The workloads the harness drives, each an adapter from a `services` app to [`crate::Workload`].

pub mod marketplace;
pub mod transfer;
pub mod ycsb;

/// Independent RNG seeds for client `client` of a run seeded with `seed` (SplitMix64 step, so
/// neighbouring clients do not get correlated streams).
pub(crate) fn client_seed(seed: u64, client: u64) -> u64 {
    let mut z = seed.wrapping_add(client.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

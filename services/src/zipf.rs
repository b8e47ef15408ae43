//! Key choice for the workloads: uniform, or Zipfian with a configurable skew θ in [0, 1).
//!
//! The Zipfian generator is exact: rejection-inversion sampling (Hörmann and Derflinger,
//! "Rejection-inversion to generate variates from monotone discrete distributions", 1996; the
//! method of Apache Commons RNG and `rand_distr`). Each draw inverts the integral of the
//! continuous hat function x^−θ and accepts the rounded value with a cheap test; acceptance is
//! well above 90 %, so a draw costs a few `exp`/`ln` and O(1) memory for any number of keys.
//!
//! We first used Gray et al.'s approximation (SIGMOD 1994, the generator of YCSB), but it is only
//! exact for ranks 0 and 1: at θ = 0.99 it over-draws rank 2 by 17 % (see the test below), which
//! skews exactly the hot keys that drive contention.
//!
//! Rank 0 is the hottest key. Ranks are not scrambled: the transaction layer hashes keys to
//! partitions, so the hot keys already spread over the partitions.

use rand::Rng;

/// Draws keys in `0..n` with probability ∝ 1 / (rank + 1)^θ (θ = 0 is uniform).
#[derive(Clone, Copy, Debug)]
pub struct KeyDist {
    n: u64,
    theta: f64,
    /// ζ(n, θ) = Σ_{i=1..n} 1 / i^θ, only for [`KeyDist::probability`].
    zeta_n: f64,
    /// H(1.5) − 1, where H is the integral of the hat function h(x) = x^−θ.
    h_integral_x1: f64,
    /// H(n + 0.5).
    h_integral_n: f64,
    /// The squeeze: a rounded value this close to its real preimage is accepted at once.
    s: f64,
}

/// Why a distribution cannot be built.
#[derive(Clone, Debug, PartialEq)]
pub enum KeyDistError {
    /// There must be at least one key.
    NoKeys,
    /// θ must lie in [0, 1).
    ThetaOutOfRange(f64),
}

impl std::fmt::Display for KeyDistError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyDistError::NoKeys => write!(f, "a key distribution needs at least one key"),
            KeyDistError::ThetaOutOfRange(t) => {
                write!(f, "Zipf θ must be in [0, 1), got {t}")
            }
        }
    }
}

impl std::error::Error for KeyDistError {}

impl KeyDist {
    /// Uniform over `0..n`.
    pub fn uniform(n: u64) -> Result<Self, KeyDistError> {
        Self::zipf(n, 0.0)
    }

    /// Zipfian over `0..n` with skew `theta` in [0, 1); `theta == 0` is uniform.
    pub fn zipf(n: u64, theta: f64) -> Result<Self, KeyDistError> {
        if n == 0 {
            return Err(KeyDistError::NoKeys);
        }
        // `contains` also rejects NaN.
        if !(0.0..1.0).contains(&theta) {
            return Err(KeyDistError::ThetaOutOfRange(theta));
        }
        let zeta_n = if theta == 0.0 {
            n as f64
        } else {
            zeta(n, theta)
        };
        let mut d = KeyDist {
            n,
            theta,
            zeta_n,
            h_integral_x1: 0.0,
            h_integral_n: 0.0,
            s: 0.0,
        };
        d.h_integral_x1 = d.h_integral(1.5) - 1.0;
        d.h_integral_n = d.h_integral(n as f64 + 0.5);
        d.s = 2.0 - d.h_integral_inverse(d.h_integral(2.5) - d.h(2.0));
        Ok(d)
    }

    /// Number of keys.
    pub fn n(&self) -> u64 {
        self.n
    }

    /// The skew θ (0 for uniform).
    pub fn theta(&self) -> f64 {
        self.theta
    }

    /// The exact probability of `rank`.
    pub fn probability(&self, rank: u64) -> f64 {
        1.0 / ((rank + 1) as f64).powf(self.theta) / self.zeta_n
    }

    /// Draws one key.
    #[inline]
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        if self.theta == 0.0 {
            // The uniform fast path: an unbiased integer draw, no floating point.
            return rng.random_range(0..self.n);
        }
        // Ranks are 1-based inside the method.
        loop {
            let u: f64 = rng.random();
            let u = self.h_integral_n + u * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inverse(u);
            let k = (x + 0.5).clamp(1.0, self.n as f64).floor();
            if k - x <= self.s || u >= self.h_integral(k + 0.5) - self.h(k) {
                return k as u64 - 1;
            }
        }
    }

    /// Fills `out` with distinct keys (as many as `out` holds, which must be ≤ n), redrawing
    /// duplicates. Under heavy skew the hottest keys repeat often, so this may draw a few more
    /// times than `out.len()`, but the expected number of redraws stays small for θ < 1.
    pub fn sample_distinct<R: Rng + ?Sized>(&self, rng: &mut R, out: &mut [u64]) {
        assert!(
            out.len() as u64 <= self.n,
            "cannot draw {} distinct keys out of {}",
            out.len(),
            self.n
        );
        for i in 0..out.len() {
            loop {
                let k = self.sample(rng);
                if !out[..i].contains(&k) {
                    out[i] = k;
                    break;
                }
            }
        }
    }

    /// The hat function h(x) = x^−θ.
    fn h(&self, x: f64) -> f64 {
        (-self.theta * x.ln()).exp()
    }

    /// H(x) = ∫ h = (x^(1−θ) − 1) / (1 − θ), written to stay accurate as 1 − θ → 0.
    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        expm1_over_x((1.0 - self.theta) * log_x) * log_x
    }

    /// The inverse of H.
    fn h_integral_inverse(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.theta)).max(-1.0);
        (ln1p_over_x(t) * x).exp()
    }
}

/// (e^x − 1) / x, accurate near 0.
fn expm1_over_x(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
    }
}

/// ln(1 + x) / x, accurate near 0.
fn ln1p_over_x(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// ζ(n, θ) = Σ_{i=1..n} 1 / i^θ, summed from the smallest terms up to keep rounding error low.
fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).rev().map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

/// Gray et al.'s approximate generator, kept only to document (in a test) why it is not used:
/// returns a sampler over `0..n` (n > 2).
#[cfg(test)]
fn gray_sampler<R: Rng + ?Sized>(n: u64, theta: f64) -> impl Fn(&mut R) -> u64 {
    let zeta_n = zeta(n, theta);
    let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta(2, theta) / zeta_n);
    move |rng: &mut R| {
        let u: f64 = rng.random();
        let uz = u * zeta_n;
        if uz < 1.0 {
            0
        } else if uz < 1.0 + 0.5f64.powf(theta) {
            1
        } else {
            ((n as f64 * (eta * u - eta + 1.0).powf(1.0 / (1.0 - theta))) as u64).min(n - 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn histogram(dist: &KeyDist, n_draws: usize, seed: u64) -> Vec<u64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut counts = vec![0u64; dist.n() as usize];
        for _ in 0..n_draws {
            counts[dist.sample(&mut rng) as usize] += 1;
        }
        counts
    }

    /// Chi-square statistic of `counts` against `dist` over the first 100 ranks, one bucket
    /// each, plus one bucket for all other ranks (100 degrees of freedom).
    fn chi_square(dist: &KeyDist, counts: &[u64], n_draws: usize) -> f64 {
        let mut chi2 = 0.0;
        let mut tail_expected = 1.0;
        for (rank, count) in counts.iter().enumerate().take(100) {
            let p = dist.probability(rank as u64);
            tail_expected -= p;
            let e = p * n_draws as f64;
            chi2 += (*count as f64 - e).powi(2) / e;
        }
        let tail: u64 = counts[100..].iter().sum();
        let e = tail_expected * n_draws as f64;
        chi2 + (tail as f64 - e).powi(2) / e
    }

    /// Critical value of chi-square with 100 degrees of freedom at p = 0.001.
    const CHI2_100_P001: f64 = 149.4;

    #[test]
    fn zipf_follows_the_zipf_law_exactly() {
        // Goal: for several θ the draws fit p(rank) ∝ 1/(rank+1)^θ (chi-square, 99.9 % level),
        // and the hottest ranks are within 2 % of their exact frequency.
        let n_draws = 1_000_000;
        for theta in [0.5, 0.9, 0.99] {
            let dist = KeyDist::zipf(1000, theta).unwrap();
            let counts = histogram(&dist, n_draws, 7);
            let chi2 = chi_square(&dist, &counts, n_draws);
            assert!(
                chi2 < CHI2_100_P001,
                "θ {theta}: chi-square {chi2:.1} rejects the Zipf law"
            );
            for rank in 0..5 {
                let expected = dist.probability(rank) * n_draws as f64;
                let rel = (counts[rank as usize] as f64 - expected).abs() / expected;
                assert!(
                    rel < 0.02,
                    "θ {theta} rank {rank}: off by {:.1} %",
                    rel * 100.0
                );
            }
        }
        // At θ = 0.99 with a million keys the hottest key takes ≈ 7 % of all draws.
        let dist = KeyDist::zipf(1_000_000, 0.99).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let hits = (0..200_000).filter(|_| dist.sample(&mut rng) == 0).count();
        let share = hits as f64 / 200_000.0;
        assert!(
            (share - dist.probability(0)).abs() < 0.005,
            "rank 0 share {share:.4}"
        );
    }

    #[test]
    fn gray_approximation_is_measurably_off_which_is_why_it_is_not_used() {
        // Goal: document the bias that made us replace Gray et al.'s method (this test fails
        // if the claim in the module doc stops being true).
        let dist = KeyDist::zipf(1000, 0.99).unwrap();
        let n_draws = 1_000_000;
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let gray = gray_sampler(1000, 0.99);
        let mut counts = vec![0u64; 1000];
        for _ in 0..n_draws {
            counts[gray(&mut rng) as usize] += 1;
        }
        assert!(chi_square(&dist, &counts, n_draws) > 10.0 * CHI2_100_P001);
        let rank2 = counts[2] as f64 / (dist.probability(2) * n_draws as f64);
        assert!(
            rank2 > 1.1,
            "Gray's rank 2 is off by {:.1} %",
            (rank2 - 1.0) * 100.0
        );
    }

    #[test]
    fn theta_zero_is_uniform() {
        // Goal: θ = 0 gives every key the same frequency (chi-square test, 99.9 % level).
        let dist = KeyDist::zipf(100, 0.0).unwrap();
        let n_draws = 200_000;
        let counts = histogram(&dist, n_draws, 11);
        let expected = n_draws as f64 / 100.0;
        let chi2: f64 = counts
            .iter()
            .map(|c| (*c as f64 - expected).powi(2) / expected)
            .sum();
        // Critical value of chi-square with 99 degrees of freedom at p = 0.001 is ≈ 148.
        assert!(chi2 < 148.0, "chi-square {chi2:.1} rejects uniformity");
    }

    #[test]
    fn draws_stay_in_range_and_distinct_draws_are_distinct() {
        // Goal: no key outside 0..n for any θ or tiny n, and sample_distinct never repeats a key.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for n in [1u64, 2, 3, 10, 1_000_000] {
            for theta in [0.0, 0.5, 0.9, 0.99] {
                let dist = KeyDist::zipf(n, theta).unwrap();
                for _ in 0..10_000 {
                    assert!(dist.sample(&mut rng) < n, "n {n} θ {theta}");
                }
            }
        }
        let dist = KeyDist::zipf(10, 0.99).unwrap();
        let mut keys = [0u64; 4];
        for _ in 0..10_000 {
            dist.sample_distinct(&mut rng, &mut keys);
            let mut sorted = keys;
            sorted.sort_unstable();
            assert!(sorted.windows(2).all(|w| w[0] != w[1]), "{keys:?}");
        }
    }

    #[test]
    fn bad_parameters_are_rejected() {
        // Goal: θ outside [0, 1) (including NaN) and an empty key space give errors, not panics.
        assert_eq!(KeyDist::zipf(0, 0.5).unwrap_err(), KeyDistError::NoKeys);
        for theta in [1.0, 1.5, -0.1, f64::NAN] {
            assert!(KeyDist::zipf(10, theta).is_err(), "θ {theta} accepted");
        }
    }
}

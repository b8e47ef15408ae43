//! What the live console (`GET /`) and `GET /v1/stats` show beyond the runtime's counters: the
//! submit → outcome latency of recent submissions (an HDR histogram over a sliding window), the
//! submissions in flight, and the throughput of each of the last seconds (sampled by a
//! once-a-second task from the runtime's counters).

use crate::limits::{
    LATENCY_WINDOW_MS, STATS_HISTORY_SECONDS_MAX, THROUGHPUT_SAMPLE_INTERVAL_MS,
    TRACKED_LATENCY_MAX_US,
};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use txn::runtime::StatsSnapshot;
use utoipa::ToSchema;

/// Latency percentiles of the recent window, in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, ToSchema)]
pub struct LatencyBody {
    /// Outcomes in the window (between one and two `LATENCY_WINDOW_MS` long).
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// One second of throughput, from the runtime's counters.
#[derive(Clone, Copy, Debug, Default, Serialize, ToSchema)]
pub struct RateSample {
    /// Seconds since the server started, at the end of the sample.
    pub at_s: f64,
    pub committed_per_s: f64,
    pub aborted_per_s: f64,
    pub conflicts_per_s: f64,
    pub epochs_per_s: f64,
}

/// Two HDR histograms: the one being filled and the one before it. Rotating drops the older,
/// so percentiles cover the last one to two windows and a burst ages out.
struct LatencyWindow {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    rotated_at: Instant,
}

/// The server's live numbers.
pub struct LiveStats {
    started: Instant,
    latency: Mutex<LatencyWindow>,
    in_flight: AtomicI64,
    history: Mutex<RateHistory>,
}

/// The last samples of the runtime's counters and the rates between them.
struct RateHistory {
    last: Option<(Instant, StatsSnapshot)>,
    rates: VecDeque<RateSample>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, TRACKED_LATENCY_MAX_US, 2).expect("the bounds are valid")
}

impl Default for LiveStats {
    fn default() -> Self {
        let now = Instant::now();
        LiveStats {
            started: now,
            latency: Mutex::new(LatencyWindow {
                current: histogram(),
                previous: histogram(),
                rotated_at: now,
            }),
            in_flight: AtomicI64::new(0),
            history: Mutex::new(RateHistory {
                last: None,
                rates: VecDeque::with_capacity(STATS_HISTORY_SECONDS_MAX),
            }),
        }
    }
}

impl LiveStats {
    /// Seconds since the server started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// A submission was handed to the runtime; pair with [`LiveStats::settled`].
    pub fn submitted(&self) -> Instant {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Instant::now()
    }

    /// The submission started at `submitted` got its outcome (or an error): one short lock
    /// and one histogram increment, no allocation.
    pub fn settled(&self, submitted: Instant) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let now = Instant::now();
        let micros = u64::try_from((now - submitted).as_micros()).unwrap_or(u64::MAX);
        let mut window = self.latency.lock();
        window.rotate_if_due(now);
        window.current.saturating_record(micros.max(1));
    }

    /// Submissions handed to the runtime and not yet settled.
    pub fn in_flight(&self) -> u64 {
        u64::try_from(self.in_flight.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Percentiles of the recent window.
    pub fn latency(&self) -> LatencyBody {
        let mut window = self.latency.lock();
        window.rotate_if_due(Instant::now());
        let mut both = window.previous.clone();
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = both.add(&window.current);
        drop(window);
        let at = |q: f64| both.value_at_quantile(q);
        LatencyBody {
            count: both.len(),
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: both.max(),
        }
    }

    /// Records the runtime's counters now and the rates since the previous sample.
    pub fn sample(&self, stats: StatsSnapshot) {
        let now = Instant::now();
        let mut history = self.history.lock();
        if let Some((then, before)) = history.last {
            let seconds = (now - then).as_secs_f64().max(1e-6);
            // A cluster node's sequencer replaces its runtime when the placement changes, and
            // the new one counts from zero: a counter that went back adds nothing.
            let grew = |now: u64, before: u64| now.saturating_sub(before);
            let per_s = |n: u64| n as f64 / seconds;
            if history.rates.len() == STATS_HISTORY_SECONDS_MAX {
                history.rates.pop_front();
            }
            history.rates.push_back(RateSample {
                at_s: (now - self.started).as_secs_f64(),
                committed_per_s: per_s(grew(stats.committed, before.committed)),
                aborted_per_s: per_s(grew(stats.user_aborted, before.user_aborted)),
                conflicts_per_s: per_s(grew(stats.conflicts, before.conflicts)),
                epochs_per_s: per_s(grew(stats.epochs, before.epochs)),
            });
        }
        history.last = Some((now, stats));
    }

    /// The rates of the last samples, oldest first.
    pub fn rates(&self) -> Vec<RateSample> {
        self.history.lock().rates.iter().copied().collect()
    }
}

impl LatencyWindow {
    fn rotate_if_due(&mut self, now: Instant) {
        let window = Duration::from_millis(LATENCY_WINDOW_MS);
        if now.duration_since(self.rotated_at) < window {
            return;
        }
        std::mem::swap(&mut self.previous, &mut self.current);
        self.current.reset();
        // After a quiet spell longer than two windows, the older one is stale too.
        if now.duration_since(self.rotated_at) >= 2 * window {
            self.previous.reset();
        }
        self.rotated_at = now;
    }
}

/// How often the sampler reads the runtime's counters.
pub fn sample_interval() -> Duration {
    Duration::from_millis(THROUGHPUT_SAMPLE_INTERVAL_MS)
}

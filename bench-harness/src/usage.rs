//! What the harness process itself used while a system was driven: CPU time, peak resident
//! memory and (with the `count-allocs` feature) heap allocations, so every run reports its cost
//! beside its throughput.
//!
//! The figures are the whole process's: the driver's clients run in it too, so they are an
//! upper bound on the system's own cost. Run one system alone (no `--compare`) when the peak
//! resident memory of that system is what is wanted, since the peak only grows.

use serde::Serialize;
use std::sync::mpsc;
use std::time::Duration;

/// The process's counters at one moment, and from then on a thread sampling the CPU time and
/// resident memory once a second, so a run whose cost per transaction changes shows when.
#[derive(Debug)]
pub struct Sample {
    cpu: Duration,
    allocations: Option<u64>,
    per_second: std::sync::Mutex<Option<PerSecondSampler>>,
}

/// The thread behind `Sample`'s per-second series: it stops when `stop` is dropped.
#[derive(Debug)]
struct PerSecondSampler {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<PerSecond>,
}

/// What the process used in each second since a `Sample` was taken.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PerSecond {
    /// CPU time (user plus system, every thread) used in second `i`, milliseconds.
    pub cpu_ms: Vec<f64>,
    /// Resident memory (`VmRSS`) at the end of second `i`, MiB.
    pub rss_mib: Vec<f64>,
}

impl PerSecondSampler {
    fn start() -> Option<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("harness-usage".into())
            .spawn(move || {
                let mut series = PerSecond::default();
                let mut last = cpu_time();
                // A timeout is a second gone by; anything else (the sender dropped) ends it.
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(Duration::from_secs(1))
                {
                    let now = cpu_time();
                    series
                        .cpu_ms
                        .push(now.saturating_sub(last).as_secs_f64() * 1e3);
                    series.rss_mib.push(rss_bytes() as f64 / (1024.0 * 1024.0));
                    last = now;
                }
                series
            })
            .ok()?;
        Some(PerSecondSampler { stop, thread })
    }

    fn finish(self) -> PerSecond {
        drop(self.stop);
        self.thread.join().unwrap_or_default()
    }
}

impl Sample {
    /// The counters now; starts the per-second series.
    pub fn now() -> Self {
        Sample {
            cpu: cpu_time(),
            allocations: counting::allocations(),
            per_second: std::sync::Mutex::new(PerSecondSampler::start()),
        }
    }

    /// What was used since this sample, for `committed` transactions (this ends the
    /// per-second series).
    pub fn usage_since(&self, committed: u64) -> DriveUsage {
        let per_second = self
            .per_second
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .map(PerSecondSampler::finish)
            .unwrap_or_default();
        let now = Sample {
            cpu: cpu_time(),
            allocations: counting::allocations(),
            per_second: std::sync::Mutex::new(None),
        };
        let per_txn = |total: f64| total / committed.max(1) as f64;
        let cpu_s = now.cpu.saturating_sub(self.cpu).as_secs_f64();
        DriveUsage {
            cpu_s,
            cpu_us_per_txn: per_txn(cpu_s * 1e6),
            allocations_per_txn: now
                .allocations
                .zip(self.allocations)
                .map(|(now, then)| per_txn(now.saturating_sub(then) as f64)),
            peak_rss_bytes: peak_rss_bytes(),
            per_second,
        }
    }
}

/// The cost of one system's measured drive (its load excluded).
#[derive(Clone, Debug, Default, Serialize)]
pub struct DriveUsage {
    /// CPU time (user plus system, every thread) the process used during the drive, seconds.
    pub cpu_s: f64,
    /// `cpu_s` per committed transaction, microseconds.
    pub cpu_us_per_txn: f64,
    /// Heap allocations (including reallocations) during the drive per committed transaction;
    /// only measured when the harness is built with `--features count-allocs`.
    pub allocations_per_txn: Option<f64>,
    /// The process's peak resident memory (`VmHWM`) when the drive ended, bytes. It never
    /// shrinks, so a later system's figure includes every earlier one's peak.
    pub peak_rss_bytes: u64,
    /// CPU time and resident memory in each second of the drive.
    pub per_second: PerSecond,
}

/// User plus system CPU time of the whole process so far (`getrusage(RUSAGE_SELF)`).
pub fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `getrusage` only writes the struct it is given, which is large enough.
    #[allow(unsafe_code)]
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return Duration::ZERO;
        }
        usage.assume_init()
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// The process's peak resident memory so far (`VmHWM` of `/proc/self/status`), bytes; 0 where
/// the file does not exist (not Linux).
pub fn peak_rss_bytes() -> u64 {
    status_kib("VmHWM:")
}

/// The process's resident memory now (`VmRSS`), bytes; 0 where unknown.
pub fn rss_bytes() -> u64 {
    status_kib("VmRSS:")
}

/// A `kB` field of `/proc/self/status`, in bytes; 0 where the file does not exist (not Linux).
fn status_kib(field: &str) -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// The process's resource use at exit, for the summary.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ProcessUsage {
    /// Peak resident memory of the whole invocation (every system, load included), bytes.
    pub peak_rss_bytes: u64,
    /// CPU time of the whole invocation (user plus system), seconds.
    pub cpu_s: f64,
}

impl ProcessUsage {
    /// The figures now.
    pub fn now() -> Self {
        ProcessUsage {
            peak_rss_bytes: peak_rss_bytes(),
            cpu_s: cpu_time().as_secs_f64(),
        }
    }
}

/// The counting global allocator of the `count-allocs` feature: the binaries' allocator
/// (`vmsdb::alloc::Allocator`) plus one relaxed atomic increment per allocation, so allocation
/// counts cost little enough to leave throughput figures meaningful (they are still not the
/// figures of a default build).
#[cfg(feature = "count-allocs")]
mod counting {
    use std::alloc::{GlobalAlloc, Layout};
    use std::sync::atomic::{AtomicU64, Ordering};
    use vmsdb::alloc::Allocator;

    static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

    struct Counting;

    // SAFETY: every call is passed unchanged to the binaries' allocator; only a counter is added.
    #[allow(unsafe_code)]
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            unsafe { Allocator.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            unsafe { Allocator.alloc_zeroed(layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            unsafe { Allocator.realloc(ptr, layout, new_size) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { Allocator.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    /// Allocations since the process started.
    pub fn allocations() -> Option<u64> {
        Some(ALLOCATIONS.load(Ordering::Relaxed))
    }
}

/// Without the `count-allocs` feature nothing is counted.
#[cfg(not(feature = "count-allocs"))]
mod counting {
    pub fn allocations() -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_reports_its_peak_memory_and_cpu_time() {
        // Goal: the figures are read at all (a parse failure would report 0 forever).
        let burn: u64 = (0..2_000_000u64).fold(0, |a, i| a.wrapping_add(i * i));
        std::hint::black_box(burn);
        let usage = ProcessUsage::now();
        assert!(usage.peak_rss_bytes > 1024 * 1024, "{usage:?}");
        assert!(usage.cpu_s > 0.0, "{usage:?}");
    }
}

//! What grows over a marketplace run: the default mix at the small scale on the serial executor
//! (the bench harness's `serial` system: one generator, each request run to completion), with
//! the cost of each kind of transaction reported per window of requests.
//!
//! ```sh
//! cargo run --release -p services --example market_growth -- [requests] [window] [requests_per_ms]
//! ```
//!
//! Each window prints, per kind, the thread's CPU µs per request (`CLOCK_THREAD_CPUTIME_ID`,
//! read around every request: about a microsecond of it is the clock itself) and the rows the
//! marketplace holds. Each kind runs in a function of its own (`run_checkout`, ...,
//! `run_dashboard`) and every window starts with a call to `window_mark`, so under callgrind
//! (`valgrind --tool=callgrind --dump-before='*window_mark*'`) each dump holds one window and a
//! kind's instructions are its function's inclusive cost in it.

use services::marketplace::data::MarketOp;
use services::marketplace::{MarketApp, MarketConfig, Marketplace, Mix, Scale, SellerId};
use std::hint::black_box;
use txn::{Request, SerialExecutor};

const KINDS: [&str; 5] = [
    "checkout",
    "dashboard",
    "price_update",
    "update_product",
    "update_delivery",
];

/// Defines `$name`, which runs one transaction of kind `$kind` (an index into `KINDS`). Each
/// marks its kind, so the compiler cannot fold the four into one function (it merges
/// identical bodies) and each kind's instructions stay its own function's inclusive cost.
macro_rules! kind_runner {
    ($name:ident, $kind:expr) => {
        #[inline(never)]
        fn $name(exec: &mut SerialExecutor<MarketApp>, r: Request<MarketApp>, ts: u64) -> bool {
            black_box($kind);
            exec.run_request(r, ts).is_ok()
        }
    };
}

kind_runner!(run_checkout, 0);
kind_runner!(run_price_update, 2);
kind_runner!(run_update_product, 3);
kind_runner!(run_update_delivery, 4);

#[inline(never)]
fn run_dashboard(m: &Marketplace, exec: &SerialExecutor<MarketApp>, seller_id: SellerId) -> usize {
    let d = m.dashboard_serial(exec, seller_id);
    assert!(d.agrees(), "a torn dashboard on the serial executor");
    d.entries.len()
}

/// Called at the start of every window (a callgrind dump point).
#[inline(never)]
fn window_mark(i: u64) {
    black_box(i);
}

/// This thread's CPU time in nanoseconds (not wall-clock: time the thread waited for a core on
/// a loaded machine is not counted).
fn thread_cpu_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .map_or(default, |a| a.parse().expect("a number"))
}

fn main() {
    let total = arg(1, 2_000_000);
    let window = arg(2, 100_000);
    let per_ms = arg(3, 40).max(1);
    let config = MarketConfig {
        initial_stock: 1_000_000_000,
        ..MarketConfig::at_scale(Scale::Small, 4)
    };
    let m = Marketplace::new(config).expect("a valid marketplace");
    let start_ms = 1_000_000u64;
    let mut exec = m.loaded_serial(start_ms);
    let mut gen_ = m.op_gen(7, Mix::DEFAULT, 0.0).expect("uniform keys");
    let t = m.tables;
    println!(
        "{:>9} | {:>9} {:>9} {:>9} {:>9} {:>9} (CPU µs/request) | dash entries | orders | entries | open deliveries",
        "requests", KINDS[0], KINDS[1], KINDS[2], KINDS[3], KINDS[4]
    );
    let mut done = 0u64;
    let mut ts = start_ms;
    while done < total {
        window_mark(done);
        let (mut ns, mut n) = ([0u128; 5], [0u64; 5]);
        let mut entries = 0usize;
        for i in 0..window {
            // Like the harness's serial driver: the clock moves every 4,096 requests.
            if (done + i).is_multiple_of(4096) {
                ts = start_ms + (done + i) / per_ms;
            }
            let op = gen_.next_op();
            let began = thread_cpu_ns();
            let kind = match op {
                MarketOp::Dashboard { seller_id } => {
                    entries += run_dashboard(&m, &exec, seller_id);
                    1
                }
                op => {
                    let kind = match &op {
                        MarketOp::Checkout { .. } => 0,
                        MarketOp::PriceUpdate { .. } => 2,
                        MarketOp::UpdateProduct { .. } => 3,
                        _ => 4,
                    };
                    let r = m.request(op).expect("a transaction");
                    black_box(match kind {
                        0 => run_checkout(&mut exec, r, ts),
                        2 => run_price_update(&mut exec, r, ts),
                        3 => run_update_product(&mut exec, r, ts),
                        _ => run_update_delivery(&mut exec, r, ts),
                    });
                    kind
                }
            };
            ns[kind] += thread_cpu_ns() - began;
            n[kind] += 1;
        }
        done += window;
        let rows = |f: &dyn Fn(&txn::ReadView<'_>) -> usize| -> usize {
            exec.query(&m.services.all(), f).into_iter().sum()
        };
        let orders = rows(&|v| v.len(t.orders));
        let order_entries = rows(&|v| v.len(t.order_entries) + v.len(t.delivered_entries));
        let open = rows(&|v| v.len(t.open_deliveries));
        let us: Vec<String> = (0..5)
            .map(|k| format!("{:>9.2}", ns[k] as f64 / 1_000.0 / n[k].max(1) as f64))
            .collect();
        println!(
            "{done:>9} | {} | {:>12.1} | {orders:>6} | {order_entries:>7} | {open:>6}",
            us.join(" "),
            entries as f64 / n[1].max(1) as f64,
        );
    }
}

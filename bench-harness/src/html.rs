//! The HTML report (`<out>/report.html`): one self-contained file, viewable offline — inline
//! CSS and inline SVG only, no scripts, no external resources.
//!
//! The numbers are the [`Summary`]'s (the ones in `summary.json` and the terminal table); what
//! the summary does not keep — the latency histograms for the CDFs — comes from the
//! [`SystemRun`]s. The page is written with `maud`, which escapes every string that comes from
//! data; only the CSS and the SVG charts (drawn by `svg.rs`, which escapes its own text) are
//! spliced in as they are.

use crate::driver::fmt_count;
use crate::report::{Summary, SystemRun, SystemSummary, TypeSummary};
use crate::svg::{
    Axis, Chart, Scale, Series, log_ticks, nice_axis_from_zero, nice_step, nice_ticks, palette,
    system_colors, ticks_with_step,
};
use hdrhistogram::Histogram;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

const CSS: &str = "\
body{font-family:Helvetica,Arial,sans-serif;color:#222;max-width:1200px;margin:24px auto;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #d8d8d8;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f3f4f6;font-weight:600;white-space:nowrap}
td.sys,th.sys{white-space:nowrap}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ok{color:#1e7e34;font-weight:bold}
.bad{color:#c0392b;font-weight:bold}
.warn{color:#b9770e;font-weight:bold}
.muted{color:#999}
.sw{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:6px;vertical-align:-1px}
.banner{padding:8px 12px;border-radius:4px;margin:14px 0;font-weight:bold}
.banner.ok{background:#e6f4ea}
.banner.bad{background:#fdecea}
.params{display:flex;gap:40px;flex-wrap:wrap}
.meta{color:#555;font-size:13px}
.caption{font-size:12px;color:#555;max-width:880px;margin:2px 0 16px}
.err{background:#fdecea;padding:6px 10px;font-family:monospace;font-size:12px;white-space:pre-wrap}
svg{max-width:100%;height:auto;display:block}
";

/// Each system's name, summary and colour, in the summary's order.
type Systems<'a> = [(&'a str, &'a SystemSummary, &'a str)];

/// The report for `summary`, generated now.
pub fn render(summary: &Summary, runs: &[SystemRun]) -> String {
    render_at(summary, runs, SystemTime::now())
}

/// The multi-node run's figures (`--nodes`).
fn cluster_table(c: &crate::report::ClusterSummary) -> Markup {
    let seconds = |s: Option<f64>| s.map_or("never".to_string(), |s| format!("{s:.2} s"));
    html! {
        table {
            tr { th { "system" } td { (c.system) } }
            tr { th { "node processes" } td { (c.nodes) " (one PostgreSQL store, lease "
                (format!("{:.1}", c.lease_ttl_s)) " s)" } }
            tr { th { "placement" } td { (c.placement)
                (crate::report::placement_counts(&c.partitions_per_node)) } }
            tr { th { "network bytes per transaction" } td { (format!("{:.0}", c.network_bytes_per_txn))
                " (" (fmt_count(c.link_bytes)) " link bytes in " (fmt_count(c.link_messages))
                " messages)" } }
            tr { th { "audit" } td { (c.audit) } }
            @if let Some(k) = &c.kill {
                tr { th { "killed" } td { (k.node) @if k.was_sequencer { " (the sequencer)" }
                    " at " (format!("{:.1}", k.at_s)) " s" } }
                tr { th { "failover (kill → first commit sent after it)" } td { (seconds(k.failover_s)) } }
                tr { th { "outcome_unknown / resubmissions by id" } td {
                    (fmt_count(k.outcome_unknown)) " / " (fmt_count(k.resubmitted)) } }
                tr { th { "killed node ready again after" } td { (seconds(k.rejoined_s)) } }
            }
        }
    }
}

/// The report for `summary`, stamped with `at`.
pub fn render_at(summary: &Summary, runs: &[SystemRun], at: SystemTime) -> String {
    let colors = system_colors(&summary.order);
    let systems: Vec<(&str, &SystemSummary, &str)> = summary
        .order
        .iter()
        .zip(&colors)
        .map(|(n, c)| (n.as_str(), &summary.systems[n], c.as_str()))
        .collect();
    let workload = &summary.workload;
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "vmsdb bench: " (workload) }
                style { (PreEscaped(CSS)) }
            }
            body {
                h1 { "vmsdb bench report: " (workload) }
                div.meta {
                    "generated " (utc_datetime(at)) " · systems: "
                    @for (i, (name, _, color)) in systems.iter().enumerate() {
                        @if i > 0 { ", " }
                        (swatch(color)) (name)
                    }
                }
                (banner(summary))
                div.params {
                    div { h3 { "Workload parameters" } (json_table(&summary.parameters)) }
                    div { h3 { "Run parameters" } (json_table(&summary.run)) }
                }
                h2 { "Summary" }
                (summary_table(summary, &systems))
                (consistency_table(&systems))
                h2 { "Throughput over time" }
                (PreEscaped(throughput_chart(&systems).render()))
                p.caption {
                    "Committed transactions completed in each second of the measured run, \
                     plotted at the middle of the second. The last second is partial."
                }
                h2 { "Latency distribution" }
                (latency_charts(summary, runs, &systems))
                h2 { "Per transaction type" }
                @for (name, s, color) in &systems {
                    h3 { (swatch(color)) (name) }
                    (type_table(s, &summary.op_types))
                }
                h2 { "Runtime and load" }
                (runtime_and_load(&systems))
                @if let Some(cluster) = &summary.cluster {
                    h2 { "Across nodes" }
                    (cluster_table(cluster))
                }
                p.caption {
                    "Generated by vmsdb's bench-harness; the numbers are those of summary.json \
                     in the same directory."
                }
            }
        }
    };
    page.into_string()
}

/// The latency CDF of every system, then the first system's CDF per transaction type when it
/// ran several types.
fn latency_charts(summary: &Summary, runs: &[SystemRun], systems: &Systems<'_>) -> Markup {
    let hists: Vec<(String, String, Histogram<u64>)> = systems
        .iter()
        .filter_map(|(n, _, c)| {
            let run = runs.iter().find(|r| r.name == *n)?;
            Some((n.to_string(), c.to_string(), run.recorder.all_latency()))
        })
        .collect();
    let per_type: Vec<(String, String, Histogram<u64>)> = runs
        .first()
        .map(|first| {
            first
                .recorder
                .types
                .iter()
                .enumerate()
                .filter(|(_, t)| t.committed > 0)
                .map(|(i, t)| {
                    let name = summary
                        .op_types
                        .get(i)
                        .cloned()
                        .unwrap_or_else(|| format!("type {i}"));
                    (name, palette(i).to_string(), t.latency_ns.clone())
                })
                .collect()
        })
        .unwrap_or_default();
    html! {
        (PreEscaped(cdf_chart("Latency CDF of committed transactions", &hists, false).render()))
        p.caption {
            "Fraction of committed transactions completed within a given latency (log scale, \
             from the lowest to the highest latency recorded)."
        }
        @if let (Some(first), true) = (runs.first(), per_type.len() > 1) {
            (PreEscaped(
                cdf_chart(
                    &format!("{} latency CDF per transaction type", first.name),
                    &per_type,
                    true,
                )
                .render()
            ))
        }
    }
}

/// vmsdb's transaction-layer counters per system that has them, the initial load and storage
/// table, and each system's errors.
fn runtime_and_load(systems: &Systems<'_>) -> Markup {
    html! {
        @for (name, s, color) in systems {
            @if let Some(rs) = &s.runtime_stats {
                h3 { (swatch(color)) (name) " transaction layer (measured run)" }
                table {
                    @for (k, v) in [
                        ("epochs", fmt_count(rs.epochs)),
                        ("transactions per epoch", format!("{:.1}", rs.txns_per_epoch)),
                        ("committed", fmt_count(rs.committed)),
                        ("aborted by the application", fmt_count(rs.user_aborted)),
                        ("conflict losers", fmt_count(rs.conflict_losers)),
                        ("conflict rate", format!("{:.2} %", rs.conflict_rate * 100.0)),
                        ("serial-pass runs, % of sequenced", format!("{:.2} %", rs.serial_pass_pct)),
                        (
                            "sent straight to the serial pass (serial hints)",
                            fmt_count(rs.serial_hinted),
                        ),
                        ("serial-pass runs (losers + hinted)", fmt_count(rs.fallback_runs)),
                    ] {
                        tr { th { (k) } td.n { (v) } }
                    }
                }
                @if !rs.conflicts_by_table.is_empty() {
                    h3 { (swatch(color)) (name) " conflict losses by table" }
                    table {
                        (header_row(&["table", "losers", "hottest keys (losers caused)"]))
                        @for (table, t) in &rs.conflicts_by_table {
                            tr {
                                td { (table) }
                                td.n { (fmt_count(t.losers)) }
                                td {
                                    @for h in &t.hot_keys {
                                        code { (h.key) } " × " (fmt_count(h.losers)) " "
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h3 { "Initial load and storage" }
        table {
            (header_row(&["system", "data", "requests", "seconds", "requests/s", "storage"]))
            @for (name, s, color) in systems {
                tr {
                    td { (swatch(color)) (name) }
                    td { (s.load.description) }
                    td.n { (fmt_count(s.load.requests)) }
                    td.n { (format!("{:.2}", s.load.seconds)) }
                    td.n { (fmt_count(s.load.requests_per_s as u64)) }
                    td { (s.storage) }
                }
            }
        }
        (resources(systems))
        @for (name, s, _) in systems {
            @if s.errors > 0 {
                h3.bad { (name) ": " (fmt_count(s.errors)) " errors" }
                div.err { "first: " (s.first_error.as_deref().unwrap_or("?")) }
            }
        }
    }
}

/// What the harness process used during each system's drive (`usage.rs`).
fn resources(systems: &Systems<'_>) -> Markup {
    let mib = |bytes: u64| format!("{:.1}", bytes as f64 / (1024.0 * 1024.0));
    html! {
        h3 { "Resources of the harness process during each drive" }
        table {
            (header_row(&["system", "cpu s", "cpu µs/txn", "allocations/txn", "peak RSS so far, MiB"]))
            @for (name, s, color) in systems {
                @if let Some(u) = &s.usage {
                    tr {
                        td { (swatch(color)) (name) }
                        td.n { (format!("{:.2}", u.cpu_s)) }
                        td.n { (format!("{:.1}", u.cpu_us_per_txn)) }
                        td.n { (u.allocations_per_txn.map_or("not counted".into(), |a| format!("{a:.1}"))) }
                        td.n { (mib(u.peak_rss_bytes)) }
                    }
                }
            }
        }
    }
}

fn swatch(color: &str) -> Markup {
    html! { span.sw style={ "background:" (color) } {} }
}

/// A table row of header cells.
fn header_row(headers: &[&str]) -> Markup {
    html! { tr { @for h in headers { th { (h) } } } }
}

fn banner(summary: &Summary) -> Markup {
    let (class, text) = if summary.passed {
        if summary.systems.values().any(|s| s.anomalies_expected) {
            (
                "ok",
                "All consistency checks passed (the baseline anomalies below are expected).",
            )
        } else {
            ("ok", "All consistency checks passed.")
        }
    } else {
        ("bad", "CONSISTENCY VIOLATIONS OR ERRORS FOUND")
    };
    html! { div.banner.(class) { (text) } }
}

/// A JSON object as a two-column table (other values as one cell).
fn json_table(v: &serde_json::Value) -> Markup {
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => html! { (s) },
        serde_json::Value::Null => html! { span.muted { "none" } },
        other => html! { (other.to_string()) },
    };
    html! {
        table {
            @if let serde_json::Value::Object(m) = v {
                @for (k, v) in m {
                    tr { th { (k) } td { (cell(v)) } }
                }
            } @else {
                tr { td { (cell(v)) } }
            }
        }
    }
}

/// Milliseconds with three significant digits below 1 ms (sub-microsecond latencies stay
/// visible), fewer decimals above.
fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else if v > 0.0 {
        let decimals = (2.0 - v.log10().floor()).clamp(3.0, 9.0) as usize;
        format!("{v:.decimals$}")
    } else {
        "0".to_string()
    }
}

/// One row per system: status, counts, throughput, latencies, violations and the throughput
/// ratio to each baseline.
fn summary_table(summary: &Summary, systems: &Systems<'_>) -> Markup {
    let baselines: Vec<&String> = summary.order.iter().skip(1).collect();
    html! {
        table {
            tr {
                @for h in [
                    "system", "status", "committed", "aborted", "errors", "txn/s", "p50 ms",
                    "p90 ms", "p99 ms", "max ms", "violations",
                ] {
                    th { (h) }
                }
                @for b in &baselines { th { "vs " (b) } }
            }
            @for (name, s, color) in systems {
                tr {
                    td.sys { (swatch(color)) b { (name) } }
                    td.sys { (status(s)) }
                    td.n { (fmt_count(s.committed)) }
                    td.n { (fmt_count(s.aborted)) }
                    td.n { (fmt_count(s.errors)) }
                    td.n { b { (fmt_count(s.throughput_tps as u64)) } }
                    @for ms in [s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms] {
                        td.n { (fmt_ms(ms)) }
                    }
                    td.n { (fmt_count(s.n_violations())) }
                    @for b in &baselines {
                        td.n { (ratio(s.ratio_to.get(*b), b.as_str() == *name)) }
                    }
                }
            }
        }
        @if !baselines.is_empty() {
            p.caption {
                "vs " i { "b" } ": the system's throughput divided by baseline " i { "b" } "'s."
            }
        }
    }
}

/// A system's overall status: errors, then violations (or expected anomalies).
fn status(s: &SystemSummary) -> Markup {
    let n_violations = s.n_violations();
    let (class, text) = if s.errors > 0 {
        ("bad", "ERRORS")
    } else if n_violations == 0 {
        ("ok", "OK")
    } else if s.anomalies_expected {
        ("warn", "anomalies (expected)")
    } else {
        ("bad", "VIOLATED")
    };
    html! { span.(class) { (text) } }
}

/// A throughput ratio (greyed out for the baseline itself).
fn ratio(r: Option<&f64>, own: bool) -> Markup {
    match r {
        Some(r) if r.is_finite() && own => html! { span.muted { (format!("{r:.2}×")) } },
        Some(r) if r.is_finite() => html! { (format!("{r:.2}×")) },
        _ => html! { span.muted { "n/a" } },
    }
}

/// Consistency: one row per criterion, one column per system (criteria names are long).
fn consistency_table(systems: &Systems<'_>) -> Markup {
    let criteria: BTreeSet<&String> = systems
        .iter()
        .flat_map(|(_, s, _)| s.violations.keys())
        .collect();
    html! {
        h3 { "Consistency checks (violations per criterion)" }
        table {
            tr {
                th { "criterion" }
                @for (name, _, color) in systems { th.sys { (swatch(color)) (name) } }
            }
            @for c in &criteria {
                tr {
                    td { (c) }
                    @for (_, s, _) in systems {
                        td { (violations(s.violations.get(*c), s.anomalies_expected)) }
                    }
                }
            }
        }
    }
}

/// A criterion's violation count: not checked, OK, expected anomalies or violated.
fn violations(count: Option<&u64>, anomalies_expected: bool) -> Markup {
    match count {
        None => html! { span.muted { "not checked" } },
        Some(0) => html! { "0 " span.ok { "OK" } },
        Some(n) if anomalies_expected => {
            html! { (fmt_count(*n)) " " span.warn { "anomalies (expected)" } }
        }
        Some(n) => html! { (fmt_count(*n)) " " span.bad { "VIOLATED" } },
    }
}

/// The per-type table, types in the workload's order.
fn type_table(s: &SystemSummary, op_types: &[String]) -> Markup {
    if s.per_type.is_empty() {
        return html! { p.muted { "no operation completed" } };
    }
    let in_order = op_types
        .iter()
        .filter(|t| s.per_type.contains_key(*t))
        .chain(s.per_type.keys().filter(|t| !op_types.contains(t)));
    html! {
        table {
            (header_row(&[
                "type", "committed", "committed/s", "aborted", "aborted/s",
                "aborted by reason (per s)", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms",
            ]))
            @for ty in in_order {
                (type_row(ty, &s.per_type[ty], s.elapsed_s))
            }
        }
    }
}

/// One transaction type's row of the per-type table.
fn type_row(ty: &str, t: &TypeSummary, elapsed_s: f64) -> Markup {
    html! {
        tr {
            td { (ty) }
            td.n { (fmt_count(t.committed)) }
            td.n { (fmt_count(t.throughput_tps as u64)) }
            td.n { (fmt_count(t.aborted)) }
            td.n { (fmt_count(t.aborted_per_s as u64)) }
            td {
                @if t.aborts_by_reason.is_empty() {
                    span.muted { "none" }
                }
                @for (i, a) in t.aborts_by_reason.iter().enumerate() {
                    @if i > 0 { br; }
                    (a.category) ": " (fmt_count(a.count))
                    " (" (format!("{:.0}", a.count as f64 / elapsed_s)) "/s)"
                }
            }
            td.n { (fmt_count(t.errors)) }
            @for ms in [t.p50_ms, t.p90_ms, t.p99_ms, t.max_ms] {
                td.n { (fmt_ms(ms)) }
            }
        }
    }
}

/// Committed transactions per second, one line per system.
fn throughput_chart(systems: &[(&str, &SystemSummary, &str)]) -> Chart {
    // Second i holds the commits completed in [i, i + 1) — the last one only up to the end of
    // the run, so each point sits at the middle of the time its second actually covered.
    let lines: Vec<Vec<(f64, f64)>> = systems
        .iter()
        .map(|(_, s, _)| {
            s.committed_per_second
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let (from, to) = (i as f64, (i + 1) as f64);
                    let to = if s.elapsed_s > from {
                        to.min(s.elapsed_s)
                    } else {
                        to
                    };
                    ((from + to) / 2.0, *n as f64)
                })
                .collect()
        })
        .collect();
    let seconds = systems
        .iter()
        .map(|(_, s, _)| s.elapsed_s)
        .chain(lines.iter().flatten().map(|p| p.0))
        .fold(0.0, f64::max);
    let seconds = if seconds > 0.0 { seconds } else { 1.0 };
    let top = lines.iter().flatten().map(|p| p.1).fold(0.0, f64::max);
    let (y_hi, y_ticks) = nice_axis_from_zero(top, 6);
    let mut x_step = nice_step(seconds, 10);
    if seconds >= 2.0 {
        x_step = x_step.max(1.0);
    }
    let mut chart = Chart::new(
        "Committed transactions per second",
        Axis::new(
            Scale::Linear {
                lo: 0.0,
                hi: seconds,
            },
            ticks_with_step(0.0, seconds, x_step),
            "time since the start of the measured run (s)",
        ),
        Axis::new(
            Scale::Linear { lo: 0.0, hi: y_hi },
            y_ticks,
            "committed txn/s",
        ),
    );
    for ((name, _, color), points) in systems.iter().zip(lines) {
        chart.series.push(Series {
            name: name.to_string(),
            color: color.to_string(),
            markers: points.len() <= 60,
            dash: None,
            points,
        });
    }
    chart
}

/// Latency CDFs (x: ms, log scale over the recorded range; y: fraction), one line per
/// histogram. Empty histograms get a legend entry and no line. `dashed`: each line gets its
/// own dash pattern, for lines that may coincide (per-type CDFs often do).
fn cdf_chart(title: &str, hists: &[(String, String, Histogram<u64>)], dashed: bool) -> Chart {
    let recorded = || hists.iter().filter(|(_, _, h)| !h.is_empty());
    let mut lo = recorded()
        .map(|(_, _, h)| h.min_nz() as f64 / 1e6)
        .fold(f64::INFINITY, f64::min);
    let mut hi = recorded()
        .map(|(_, _, h)| h.max() as f64 / 1e6)
        .fold(0.0, f64::max);
    if !lo.is_finite() || lo <= 0.0 {
        (lo, hi) = (0.1, 1.0);
    }
    if hi <= lo {
        (lo, hi) = (lo / 1.5, hi * 1.5);
    }
    let mut y = Axis::new(
        Scale::Linear { lo: 0.0, hi: 1.0 },
        nice_ticks(0.0, 1.0, 10),
        "committed transactions at or below (%)",
    );
    y.labels = y
        .ticks
        .iter()
        .map(|t| format!("{:.0}%", t * 100.0))
        .collect();
    let mut chart = Chart::new(
        title,
        Axis::new(
            Scale::Log { lo, hi },
            log_ticks(lo, hi),
            "latency (ms, log scale)",
        ),
        y,
    );
    for (i, (name, color, h)) in hists.iter().enumerate() {
        let points = if h.is_empty() {
            Vec::new()
        } else {
            thin_to_pixels(&chart, cdf_points(h))
        };
        chart.series.push(Series {
            name: name.clone(),
            color: color.clone(),
            points,
            markers: false,
            dash: if dashed {
                [None, Some("8 4"), Some("2 3"), Some("10 3 2 3")][i % 4]
            } else {
                None
            },
        });
    }
    chart
}

/// The CDF of `h` in (ms, fraction) points: from (lowest recorded, 0) to (highest, 1), one
/// point per recorded bucket.
fn cdf_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut points = vec![(h.min_nz() as f64 / 1e6, 0.0)];
    points.extend(
        h.iter_recorded()
            .map(|v| (v.value_iterated_to() as f64 / 1e6, v.quantile())),
    );
    points
}

/// Keeps, of a monotone line, only the last point of each half-pixel column (and the first
/// point): the line looks the same with far fewer points.
fn thin_to_pixels(chart: &Chart, points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    let mut out: Vec<((f64, f64), i64)> = Vec::with_capacity(points.len().min(2048));
    for p in points {
        let col = (chart.to_px(p.0, p.1).0 * 2.0).round() as i64;
        let n = out.len();
        match out.last_mut() {
            Some(last) if n > 1 && last.1 == col => last.0 = p,
            _ => out.push((p, col)),
        }
    }
    out.into_iter().map(|(p, _)| p).collect()
}

/// `t` as `YYYY-MM-DD HH:MM:SS UTC` (days-to-civil conversion, proleptic Gregorian).
fn utc_datetime(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Completion, Recorder};
    use crate::report::LoadSummary;
    use crate::svg::escape;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;
    use txn::AbortReason;

    /// A run of `name` with `per_second[i]` commits of type `i % n_types` in second `i`, with
    /// latencies spread over 0.1–20 ms, and one abort.
    fn synthetic_run(
        name: &'static str,
        n_types: usize,
        per_second: &[u64],
        violations: &[(&'static str, u64)],
        anomalies_expected: bool,
    ) -> SystemRun {
        let mut rec = Recorder::new(n_types, Arc::new(AtomicU64::new(0)));
        let mut k = 0u64;
        for (s, n) in per_second.iter().enumerate() {
            for j in 0..*n {
                k += 1;
                let latency = Duration::from_micros(100 + (k * 7919) % 20_000);
                let at = Duration::from_millis(s as u64 * 1000 + j % 1000);
                rec.record(k as usize % n_types, latency, at, 1, Completion::Committed);
            }
        }
        let reason = AbortReason::User {
            service: "acc<ounts>".into(),
            kind: "too \"poor\" & sad".into(),
            message: "too \"poor\" & sad: account 7".into(),
        };
        rec.record(
            0,
            Duration::from_millis(1),
            Duration::from_millis(10),
            0,
            Completion::Aborted(&reason),
        );
        SystemRun {
            name,
            recorder: rec,
            elapsed: Duration::from_secs_f64(per_second.len() as f64 - 0.5),
            violations: violations.iter().copied().collect(),
            load: LoadSummary {
                description: "10 <accounts>".into(),
                requests: 10,
                seconds: 0.5,
                requests_per_s: 20.0,
            },
            runtime_stats: (name == "vmsdb").then(|| crate::report::RuntimeStatsSummary {
                epochs: 12,
                committed: 100,
                txns_per_epoch: 8.5,
                ..Default::default()
            }),
            storage: "memory".into(),
            anomalies_expected,
            usage: None,
        }
    }

    fn synthetic(n_types: usize) -> (Summary, Vec<SystemRun>) {
        let runs = vec![
            synthetic_run(
                "vmsdb",
                n_types,
                &[300, 420, 410, 50],
                &[("sum<&>", 0)],
                false,
            ),
            synthetic_run("eventual", n_types, &[500, 520, 40], &[("sum<&>", 3)], true),
            synthetic_run(
                "odd\"<sys>&",
                n_types,
                &[80, 90, 85, 88, 10],
                &[("sum<&>", 0)],
                false,
            ),
        ];
        let types = ["tr<ansfer>", "dep&osit"];
        let summary = Summary::new(
            "x<y & \"z\"",
            serde_json::json!({ "note": "<b>bold</b> & \"q\"", "accounts": 10 }),
            serde_json::json!({ "duration_s": 3.0, "fallback": "Serial" }),
            &types[..n_types],
            &runs,
        );
        (summary, runs)
    }

    fn svgs(html: &str) -> Vec<&str> {
        html.match_indices("<svg")
            .map(|(i, _)| {
                let end = html[i..].find("</svg>").expect("closed svg") + i;
                &html[i..end]
            })
            .collect()
    }

    /// (data-series name, points) of each polyline in `svg`.
    fn polylines(svg: &str) -> Vec<(String, Vec<(f64, f64)>)> {
        svg.match_indices("<polyline")
            .map(|(i, _)| {
                let el = &svg[i..i + svg[i..].find("/>").unwrap()];
                let attr = |a: &str| {
                    let start = el.find(&format!("{a}=\"")).unwrap() + a.len() + 2;
                    el[start..start + el[start..].find('"').unwrap()].to_string()
                };
                let points = attr("points")
                    .split(' ')
                    .map(|p| {
                        let (x, y) = p.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect();
                (attr("data-series"), points)
            })
            .collect()
    }

    #[test]
    fn report_has_a_throughput_and_a_cdf_plot_with_one_line_per_system() {
        // Goal: two plots; the throughput plot has one polyline per system with one point per
        // second of its series, inside the plot area.
        let (summary, runs) = synthetic(1);
        let html = render(&summary, &runs);
        let svgs = svgs(&html);
        assert_eq!(svgs.len(), 2, "one type: throughput and CDF only");
        let lines = polylines(svgs[0]);
        assert_eq!(lines.len(), summary.order.len());
        for name in &summary.order {
            let (_, points) = lines
                .iter()
                .find(|(n, _)| *n == escape(name))
                .unwrap_or_else(|| panic!("no line for {name}"));
            assert_eq!(
                points.len(),
                summary.systems[name].committed_per_second.len(),
                "{name}"
            );
        }
        let chart = throughput_chart(
            &summary
                .order
                .iter()
                .map(|n| (n.as_str(), &summary.systems[n], "#000"))
                .collect::<Vec<_>>(),
        );
        let (l, t, r, b) = chart.plot_area();
        for (name, points) in &lines {
            for (x, y) in points {
                assert!(
                    *x >= l && *x <= r && *y >= t && *y <= b,
                    "{name}: ({x}, {y}) outside"
                );
            }
        }
        // The highest point (vmsdb's 420 or eventual's 520) is the tallest one drawn.
        let top_y = lines
            .iter()
            .flat_map(|(_, p)| p.iter().map(|p| p.1))
            .fold(f64::INFINITY, f64::min);
        assert!((top_y - chart.to_px(0.0, 520.0).1).abs() < 0.06, "{top_y}");
    }

    #[test]
    fn latency_cdf_is_monotone_and_spans_zero_to_one() {
        // Goal: each CDF line goes right and up only, from fraction 0 to fraction 1; per-type
        // CDFs appear for vmsdb when it ran several types.
        let (summary, runs) = synthetic(2);
        let html = render(&summary, &runs);
        let svgs = svgs(&html);
        assert_eq!(svgs.len(), 3, "two types: plus vmsdb's per-type CDF");
        for svg in &svgs[1..] {
            let lines = polylines(svg);
            assert!(lines.len() >= 2);
            let first_top = lines[0].1.last().unwrap().1;
            for (name, points) in &lines {
                assert!(points.len() > 10, "{name}: {} points", points.len());
                for w in points.windows(2) {
                    assert!(w[1].0 >= w[0].0, "{name}: x goes back at {w:?}");
                    assert!(w[1].1 <= w[0].1, "{name}: fraction drops at {w:?}");
                }
                // All lines end at fraction 1 (the same height) and start at 0 (lower).
                assert_eq!(points.last().unwrap().1, first_top, "{name}");
                assert!(points[0].1 > first_top + 100.0, "{name}");
            }
        }
        assert_eq!(polylines(svgs[2]).len(), 2, "one line per vmsdb type");
    }

    #[test]
    fn cdf_points_follow_the_histogram() {
        // Goal: the CDF starts at the lowest value with 0 and reaches 1 at the highest.
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for v in [1_000_000u64, 2_000_000, 2_000_000, 8_000_000] {
            h.record(v).unwrap();
        }
        let p = cdf_points(&h);
        assert_eq!(p.len(), 4);
        assert!((p[0].0 - 1.0).abs() < 0.01 && p[0].1 == 0.0);
        assert!((p[1].1 - 0.25).abs() < 1e-9 && (p[2].1 - 0.75).abs() < 1e-9);
        assert!((p[3].0 - 8.0).abs() < 0.01 && p[3].1 == 1.0);
    }

    #[test]
    fn data_strings_are_escaped_and_nothing_is_fetched() {
        // Goal: strings from the data never reach the page as markup, and the page loads no
        // external resource (the only URL is the SVG namespace).
        let (summary, runs) = synthetic(2);
        let html = render(&summary, &runs);
        for raw in [
            "x<y",
            "<b>bold",
            "acc<ounts>",
            "\"poor\"",
            "sum<&>",
            "odd\"<sys>",
            "tr<ansfer>",
            "dep&osit",
            "<accounts>",
        ] {
            assert!(!html.contains(raw), "unescaped {raw:?}");
        }
        for escaped in [
            "x&lt;y &amp; &quot;z&quot;",
            "&lt;b&gt;bold&lt;/b&gt; &amp; &quot;q&quot;",
            "acc&lt;ounts&gt;: too &quot;poor&quot; &amp; sad",
            "sum&lt;&amp;&gt;",
            "odd&quot;&lt;sys&gt;&amp;",
            "tr&lt;ansfer&gt;",
            "dep&amp;osit",
        ] {
            assert!(html.contains(escaped), "missing {escaped:?}");
        }
        let types = &html[html.find("<h2>Per transaction type</h2>").unwrap()..];
        assert!(
            types.find("tr&lt;ansfer&gt;").unwrap() < types.find("dep&amp;osit").unwrap(),
            "types in the workload's order"
        );
        let namespace = "http://www.w3.org/2000/svg\"";
        for (i, _) in html.match_indices("http") {
            assert!(html[i..].starts_with(namespace), "URL at {i}");
        }
        assert!(html.contains(namespace));
        for banned in ["<script", "<link", "src=", "@import", "url("] {
            assert!(!html.contains(banned), "{banned}");
        }
    }

    #[test]
    fn script_in_workload_and_system_names_is_escaped() {
        // Goal: a workload, system and transaction type named `<script>&"` appears as text
        // wherever the page names it (title, heading, tables, per-type heading), never as
        // markup.
        const NAME: &str = "<script>&\"";
        const ESCAPED: &str = "&lt;script&gt;&amp;&quot;";
        let runs = vec![
            synthetic_run("vmsdb", 1, &[10, 10], &[("sum", 0)], false),
            synthetic_run(NAME, 1, &[5, 5], &[("sum", 0)], false),
        ];
        let summary = Summary::new(
            NAME,
            serde_json::json!({ NAME: NAME }),
            serde_json::json!({}),
            &[NAME],
            &runs,
        );
        let html = render(&summary, &runs);
        assert!(!html.contains(NAME), "unescaped name");
        assert!(!html.contains("<script"), "a script element");
        for place in [
            format!("<title>vmsdb bench: {ESCAPED}</title>"),
            format!("<h1>vmsdb bench report: {ESCAPED}</h1>"),
            format!("<th>{ESCAPED}</th><td>{ESCAPED}</td>"),
            format!("<th>vs {ESCAPED}</th>"),
            format!("<b>{ESCAPED}</b>"),
            format!("</span>{ESCAPED}</h3>"),
            format!("<td>{ESCAPED}</td><td class=\"n\">"),
        ] {
            assert!(html.contains(&place), "missing {place:?}");
        }
    }

    #[test]
    fn summary_table_marks_criteria() {
        // Goal: each criterion cell says OK, VIOLATED or anomalies (expected); ratios to each
        // baseline appear.
        let runs = vec![
            synthetic_run("vmsdb", 1, &[10, 10], &[("sum", 0), ("orders", 2)], false),
            synthetic_run("eventual", 1, &[5, 5], &[("sum", 4), ("orders", 0)], true),
        ];
        let summary = Summary::new(
            "w",
            serde_json::json!({}),
            serde_json::json!({}),
            &["t"],
            &runs,
        );
        let html = render(&summary, &runs);
        assert!(html.contains("2 <span class=\"bad\">VIOLATED</span>"));
        assert!(html.contains("4 <span class=\"warn\">anomalies (expected)</span>"));
        assert!(html.contains("0 <span class=\"ok\">OK</span>"));
        assert!(html.contains("CONSISTENCY VIOLATIONS OR ERRORS FOUND"));
        assert!(html.contains("<th>vs eventual</th>"));
        assert!(html.contains("2.00×"), "vmsdb does twice eventual's work");
    }

    #[test]
    fn latencies_keep_three_significant_digits() {
        assert_eq!(fmt_ms(0.000821), "0.000821");
        assert_eq!(fmt_ms(0.407807), "0.408");
        assert_eq!(fmt_ms(5.976), "5.98");
        assert_eq!(fmt_ms(33.98), "34.0");
        assert_eq!(fmt_ms(250.4), "250");
        assert_eq!(fmt_ms(0.0), "0");
    }

    #[test]
    fn utc_datetime_converts_known_instants() {
        assert_eq!(utc_datetime(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(utc_datetime(t), "2023-11-14 22:13:20 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // leap day
        assert_eq!(utc_datetime(t), "2000-02-29 00:00:00 UTC");
    }
}

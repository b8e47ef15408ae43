//! A small, dependency-free SVG line-chart writer for the HTML report: linear and log axes with
//! "nice" ticks, gridlines, polylines and a legend. The output is plain inline SVG (no scripts,
//! no external fonts or stylesheets).

use std::fmt::Write as _;

/// Escapes `s` for HTML and SVG text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The colour of each system, in `order`: the known systems have fixed colours, any other name
/// takes the next colour no one uses yet, so every system of a report has a distinct colour.
pub fn system_colors(order: &[String]) -> Vec<String> {
    const KNOWN: [(&str, &str); 4] = [
        ("vmsdb", "#1f6fd1"),
        ("eventual", "#e8740c"),
        ("serial", "#2a9d3a"),
        ("postgres", "#8e44ad"),
    ];
    const SPARE: [&str; 6] = [
        "#d62728", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    ];
    let mut used: Vec<String> = Vec::new();
    let mut spare = SPARE.iter();
    let mut n_generated = 0u32;
    for name in order {
        let color = match KNOWN.iter().find(|(n, _)| n == name) {
            Some((_, c)) => (*c).to_string(),
            None => loop {
                match spare.next() {
                    Some(c) if used.iter().any(|u| u == c) => continue,
                    Some(c) => break (*c).to_string(),
                    None => {
                        // Golden-angle hues: distinct from each other for any practical count.
                        n_generated += 1;
                        break format!("hsl({}, 65%, 42%)", (n_generated * 137 + 20) % 360);
                    }
                }
            },
        };
        used.push(color);
    }
    used
}

/// The colour of the `i`-th line of a chart whose lines are not systems (e.g. operation types).
pub fn palette(i: usize) -> &'static str {
    const P: [&str; 10] = [
        "#1f6fd1", "#e8740c", "#2a9d3a", "#d62728", "#8e44ad", "#8c564b", "#e377c2", "#7f7f7f",
        "#bcbd22", "#17becf",
    ];
    P[i % P.len()]
}

/// The "nice" step (1, 2 or 5 × 10^k) for about `target` intervals over `span`.
pub fn nice_step(span: f64, target: usize) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    // Rounded to the nearest nice number: the tick count lands near `target`, either side.
    let nice = if f < 1.5 {
        1.0
    } else if f < 3.0 {
        2.0
    } else if f < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Ticks at multiples of a nice step inside `[lo, hi]`, about `target` + 1 of them.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let step = nice_step(hi - lo, target);
    ticks_with_step(lo, hi, step)
}

/// Multiples of `step` inside `[lo, hi]` (computed as `i × step`, so they do not drift).
pub fn ticks_with_step(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    if !(step > 0.0 && step.is_finite() && lo.is_finite() && hi.is_finite()) {
        return Vec::new();
    }
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    // A fractional step m / 10^d: compute i·m / 10^d, exact for round numbers (0.6, not
    // 0.6000000000000001).
    let d = (-step.log10().floor()).max(0.0) as i32;
    let scale = 10f64.powi(d);
    let m = (step * scale).round();
    let exact = d > 0 && ((m / scale - step).abs() <= step * 1e-9);
    (first..=last)
        .map(|i| {
            if exact {
                i as f64 * m / scale
            } else {
                i as f64 * step
            }
        })
        .collect()
}

/// An axis from 0 that ends on a tick: `hi` rounded up to the next multiple of the nice step
/// for `[0, hi]`, and the ticks (with that same step) up to it.
pub fn nice_axis_from_zero(hi: f64, target: usize) -> (f64, Vec<f64>) {
    let step = nice_step(hi, target);
    let top = (hi / step - 1e-9).ceil().max(1.0) * step;
    let ticks = ticks_with_step(0.0, top, step);
    (*ticks.last().unwrap_or(&top), ticks)
}

/// Ticks of a log axis over `[lo, hi]` (both > 0): the powers of ten inside it, plus 2× and 5×
/// of them when that leaves fewer than 3 ticks, plus 1.5×, 3× and 7× when 1-2-5 leaves fewer
/// than 4.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if lo <= 0.0 || hi < lo || !hi.is_finite() {
        return Vec::new();
    }
    let (k0, k1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let at = |m: f64, k: i32| {
        if k >= 0 {
            m * 10f64.powi(k)
        } else {
            m / 10f64.powi(-k)
        }
    };
    let inside = |v: f64| v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9);
    let decades: Vec<f64> = (k0..=k1)
        .map(|k| at(1.0, k))
        .filter(|v| inside(*v))
        .collect();
    if decades.len() >= 3 {
        return decades;
    }
    let with = |ms: &[f64]| -> Vec<f64> {
        (k0..=k1)
            .flat_map(|k| ms.iter().map(move |m| at(*m, k)))
            .filter(|v| inside(*v))
            .collect()
    };
    let t = with(&[1.0, 2.0, 5.0]);
    if t.len() >= 4 {
        return t;
    }
    let t = with(&[1.0, 1.5, 2.0, 3.0, 5.0, 7.0]);
    if t.len() >= 2 {
        t
    } else {
        // Less than a factor 1.5 wide: linear ticks look the same on a log axis.
        nice_ticks(lo, hi, 4)
    }
}

/// A tick label: as few decimals as the spacing of `ticks` needs, thousands as `k`, millions
/// as `M`.
pub fn fmt_tick(v: f64, ticks: &[f64]) -> String {
    let step = ticks
        .windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .fold(f64::INFINITY, f64::min);
    let step = if step.is_finite() && step > 0.0 {
        step
    } else {
        v.abs().max(1.0)
    };
    if v == 0.0 {
        return "0".to_string();
    }
    let top = ticks.iter().fold(0f64, |m, t| m.max(t.abs()));
    let (div, suffix) = if top >= 1e6 && step >= 1e5 {
        (1e6, "M")
    } else if top >= 1e4 && step >= 100.0 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    // Steps like 0.25 or 1.5 need more decimals than their magnitude suggests; all labels of
    // an axis get the same number.
    let needs = |x: f64| {
        let x = x / div;
        let mut d = (-(step / div).log10().floor()).max(0.0) as i32;
        while d < 6 && ((x * 10f64.powi(d)).round() - x * 10f64.powi(d)).abs() > 1e-6 {
            d += 1;
        }
        d as usize
    };
    let d = ticks
        .iter()
        .copied()
        .chain([v])
        .map(needs)
        .max()
        .unwrap_or(0);
    let scaled = v / div;
    let s = format!("{scaled:.d$}");
    let s = if s.starts_with('-') && s.trim_start_matches(['-', '0', '.']).is_empty() {
        s[1..].to_string()
    } else {
        s
    };
    format!("{s}{suffix}")
}

/// How an axis maps values to pixels.
#[derive(Clone, Copy, Debug)]
pub enum Scale {
    Linear { lo: f64, hi: f64 },
    Log { lo: f64, hi: f64 },
}

impl Scale {
    /// The position of `v` in `[0, 1]` along the axis (clamped).
    pub fn fraction(&self, v: f64) -> f64 {
        let f = match *self {
            Scale::Linear { lo, hi } => {
                if hi > lo {
                    (v - lo) / (hi - lo)
                } else {
                    0.5
                }
            }
            Scale::Log { lo, hi } => {
                if hi > lo && lo > 0.0 && v > 0.0 {
                    (v.ln() - lo.ln()) / (hi.ln() - lo.ln())
                } else if v <= 0.0 {
                    0.0
                } else {
                    0.5
                }
            }
        };
        if f.is_finite() {
            f.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// One axis: its scale, tick positions, tick labels and title.
pub struct Axis {
    pub scale: Scale,
    pub ticks: Vec<f64>,
    pub labels: Vec<String>,
    pub title: String,
}

impl Axis {
    /// An axis whose labels are [`fmt_tick`] of its ticks (on a log scale, each with the
    /// decimals it needs itself: 0.01, 0.1, 1, 10).
    pub fn new(scale: Scale, ticks: Vec<f64>, title: impl Into<String>) -> Self {
        let labels = match scale {
            Scale::Linear { .. } => ticks.iter().map(|t| fmt_tick(*t, &ticks)).collect(),
            Scale::Log { .. } => ticks.iter().map(|t| fmt_tick(*t, &[*t])).collect(),
        };
        Axis {
            scale,
            ticks,
            labels,
            title: title.into(),
        }
    }
}

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub color: String,
    pub points: Vec<(f64, f64)>,
    /// Also mark every point with a dot (for short series).
    pub markers: bool,
    /// An SVG `stroke-dasharray` ("6 3"), so lines that coincide stay distinguishable.
    pub dash: Option<&'static str>,
}

/// A line chart.
pub struct Chart {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
    pub width: f64,
    pub height: f64,
}

/// Margins around the plot area: room for the title, the tick labels, the axis titles and (on
/// the right) the legend.
const MARGIN_LEFT: f64 = 72.0;
const MARGIN_RIGHT: f64 = 160.0;
const MARGIN_TOP: f64 = 34.0;
const MARGIN_BOTTOM: f64 = 52.0;

impl Chart {
    pub fn new(title: impl Into<String>, x: Axis, y: Axis) -> Self {
        Chart {
            title: title.into(),
            x,
            y,
            series: Vec::new(),
            width: 880.0,
            height: 380.0,
        }
    }

    /// The plot area: left, top, right, bottom, in pixels.
    pub fn plot_area(&self) -> (f64, f64, f64, f64) {
        (
            MARGIN_LEFT,
            MARGIN_TOP,
            self.width - MARGIN_RIGHT,
            self.height - MARGIN_BOTTOM,
        )
    }

    /// The pixel position of data point `(x, y)`.
    pub fn to_px(&self, x: f64, y: f64) -> (f64, f64) {
        let (l, t, r, b) = self.plot_area();
        (
            l + self.x.scale.fraction(x) * (r - l),
            b - self.y.scale.fraction(y) * (b - t),
        )
    }

    /// The SVG element.
    pub fn render(&self) -> String {
        let (l, t, r, b) = self.plot_area();
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="Helvetica, Arial, sans-serif" font-size="12" role="img" aria-label="{title}">"#,
            w = self.width,
            h = self.height,
            title = escape(&self.title)
        );
        let _ = write!(
            s,
            r##"<rect x="0" y="0" width="{}" height="{}" fill="#ffffff"/>"##,
            self.width, self.height
        );
        let _ = write!(
            s,
            r##"<text x="{}" y="20" text-anchor="middle" font-size="14" font-weight="bold" fill="#222">{}</text>"##,
            (l + r) / 2.0,
            escape(&self.title)
        );
        // Gridlines and ticks.
        s.push_str(r##"<g stroke="#e3e3e3" stroke-width="1">"##);
        for v in &self.x.ticks {
            let (x, _) = self.to_px(*v, 0.0);
            let _ = write!(s, r#"<line x1="{x:.1}" y1="{t}" x2="{x:.1}" y2="{b}"/>"#);
        }
        for v in &self.y.ticks {
            let (_, y) = self.to_px(self.x_lo(), *v);
            let _ = write!(s, r#"<line x1="{l}" y1="{y:.1}" x2="{r}" y2="{y:.1}"/>"#);
        }
        s.push_str("</g>");
        let _ = write!(
            s,
            r##"<rect x="{l}" y="{t}" width="{}" height="{}" fill="none" stroke="#888"/>"##,
            r - l,
            b - t
        );
        s.push_str(r##"<g fill="#333">"##);
        for (v, label) in self.x.ticks.iter().zip(&self.x.labels) {
            let (x, _) = self.to_px(*v, 0.0);
            let _ = write!(
                s,
                r##"<line x1="{x:.1}" y1="{b}" x2="{x:.1}" y2="{}" stroke="#888"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
                b + 5.0,
                b + 18.0,
                escape(label)
            );
        }
        for (v, label) in self.y.ticks.iter().zip(&self.y.labels) {
            let (_, y) = self.to_px(self.x_lo(), *v);
            let _ = write!(
                s,
                r##"<line x1="{}" y1="{y:.1}" x2="{l}" y2="{y:.1}" stroke="#888"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                l - 5.0,
                l - 8.0,
                y + 4.0,
                escape(label)
            );
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            (l + r) / 2.0,
            b + 40.0,
            escape(&self.x.title)
        );
        let (yx, yy) = (16.0, (t + b) / 2.0);
        let _ = write!(
            s,
            r#"<text x="{yx}" y="{yy}" text-anchor="middle" transform="rotate(-90 {yx} {yy})">{}</text>"#,
            escape(&self.y.title)
        );
        s.push_str("</g>");
        // Lines.
        for series in &self.series {
            if series.points.is_empty() {
                continue;
            }
            let points: Vec<String> = series
                .points
                .iter()
                .map(|(x, y)| {
                    let (px, py) = self.to_px(*x, *y);
                    format!("{px:.1},{py:.1}")
                })
                .collect();
            let _ = write!(
                s,
                r#"<polyline data-series="{}" fill="none" stroke="{}" stroke-width="2" stroke-linejoin="round"{} points="{}"/>"#,
                escape(&series.name),
                escape(&series.color),
                dash_attr(series.dash),
                points.join(" ")
            );
            if series.markers {
                let _ = write!(s, r#"<g fill="{}">"#, escape(&series.color));
                for (x, y) in &series.points {
                    let (px, py) = self.to_px(*x, *y);
                    let _ = write!(s, r#"<circle cx="{px:.1}" cy="{py:.1}" r="3"/>"#);
                }
                s.push_str("</g>");
            }
        }
        // Legend, right of the plot area, so it never hides a line.
        let lx = r + 16.0;
        for (i, series) in self.series.iter().enumerate() {
            let y = t + 10.0 + 20.0 * i as f64;
            let name = if series.points.is_empty() {
                format!("{} (no data)", series.name)
            } else {
                series.name.clone()
            };
            let _ = write!(
                s,
                r##"<line x1="{lx}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="3"{}/><text x="{}" y="{}" fill="#222">{}</text>"##,
                lx + 22.0,
                escape(&series.color),
                dash_attr(series.dash),
                lx + 28.0,
                y + 4.0,
                escape(&truncate(&name, 20))
            );
        }
        s.push_str("</svg>");
        s
    }

    fn x_lo(&self) -> f64 {
        match self.x.scale {
            Scale::Linear { lo, .. } | Scale::Log { lo, .. } => lo,
        }
    }
}

fn dash_attr(dash: Option<&str>) -> String {
    dash.map(|d| format!(r#" stroke-dasharray="{}""#, escape(d)))
        .unwrap_or_default()
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max_chars - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks_land_on_round_numbers() {
        // Goal: ticks are multiples of 1, 2 or 5 × 10^k and cover the range without drifting.
        assert_eq!(
            nice_ticks(0.0, 1234.0, 7),
            vec![0.0, 200.0, 400.0, 600.0, 800.0, 1000.0, 1200.0]
        );
        assert_eq!(nice_ticks(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(nice_ticks(3.0, 48.0, 5), vec![10.0, 20.0, 30.0, 40.0]);
        let (top, ticks) = nice_axis_from_zero(1234.0, 7);
        assert_eq!(top, 1400.0);
        assert_eq!(ticks.len(), 8);
        assert_eq!(nice_axis_from_zero(1200.0, 6).0, 1200.0);
        // The case that once left the top unlabelled: 178k rounds to a 20k step for the top
        // but 30k/tick asked for 50k ticks; one step serves both now.
        let (top, ticks) = nice_axis_from_zero(178_000.0, 6);
        assert_eq!(ticks.last(), Some(&top));
        assert!(top >= 178_000.0);
        assert_eq!(nice_axis_from_zero(0.0, 6), (1.0, vec![0.0, 1.0]));
        let t = nice_ticks(0.0, 0.0003, 6);
        assert_eq!(t.len(), 7, "{t:?}");
        assert!((t[6] - 0.0003).abs() < 1e-12);
    }

    #[test]
    fn log_ticks_are_decades_or_finer_on_short_ranges() {
        // Goal: wide ranges get powers of ten only; ranges under two decades get 2× and 5×.
        assert_eq!(log_ticks(0.05, 120.0), vec![0.1, 1.0, 10.0, 100.0]);
        assert_eq!(log_ticks(0.02, 1.0), vec![0.02, 0.05, 0.1, 0.2, 0.5, 1.0]);
        assert_eq!(log_ticks(2.5, 26.0), vec![3.0, 5.0, 7.0, 10.0, 15.0, 20.0]);
        assert_eq!(log_ticks(0.8, 2.5), vec![1.0, 1.5, 2.0]);
        assert_eq!(log_ticks(1.1, 1.4), vec![1.1, 1.2, 1.3, 1.4]);
        assert!(log_ticks(0.0, 5.0).is_empty());
    }

    #[test]
    fn tick_labels_use_the_step_precision_and_suffixes() {
        // Goal: labels are short and exact: no float noise, k/M for large counts.
        let t = nice_ticks(0.0, 1.0, 5);
        let labels: Vec<String> = t.iter().map(|v| fmt_tick(*v, &t)).collect();
        assert_eq!(labels, ["0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let t = nice_ticks(0.0, 1_250_000.0, 5);
        let labels: Vec<String> = t.iter().map(|v| fmt_tick(*v, &t)).collect();
        assert_eq!(
            labels,
            ["0", "0.2M", "0.4M", "0.6M", "0.8M", "1.0M", "1.2M"]
        );
        let t = nice_ticks(0.0, 900_000.0, 5);
        assert_eq!(fmt_tick(t[1], &t), "200k");
        let t = [0.0, 0.25, 0.5, 0.75];
        assert_eq!(fmt_tick(t[1], &t), "0.25", "a 0.25 step needs two decimals");
        assert_eq!(fmt_tick(t[2], &t), "0.50");
        let t = nice_ticks(0.0, 40_000.0, 4);
        assert_eq!(fmt_tick(t[1], &t), "10k");
        let t = nice_ticks(0.0, 1234.0, 7);
        assert_eq!(fmt_tick(t[6], &t), "1200");
        assert_eq!(fmt_tick(0.05, &[0.05]), "0.05");
        let log = Axis::new(
            Scale::Log {
                lo: 0.0004,
                hi: 34.0,
            },
            log_ticks(0.0004, 34.0),
            "x",
        );
        assert_eq!(log.labels, ["0.001", "0.01", "0.1", "1", "10"]);
    }

    #[test]
    fn scales_map_into_the_plot_area() {
        // Goal: linear and log scales map the domain ends to the plot edges; out-of-range
        // values stay inside.
        let c = Chart::new(
            "t",
            Axis::new(
                Scale::Log { lo: 0.1, hi: 100.0 },
                log_ticks(0.1, 100.0),
                "x",
            ),
            Axis::new(
                Scale::Linear { lo: 0.0, hi: 1.0 },
                nice_ticks(0.0, 1.0, 5),
                "y",
            ),
        );
        let (l, t, r, b) = c.plot_area();
        assert_eq!(c.to_px(0.1, 0.0), (l, b));
        assert_eq!(c.to_px(100.0, 1.0), (r, t));
        let (mx, _) = c.to_px(10f64.powf(0.5), 0.0);
        assert!((mx - (l + (r - l) * 0.5)).abs() < 1e-6);
        assert_eq!(c.to_px(1e9, -5.0), (r, b));
    }

    #[test]
    fn every_system_gets_a_distinct_color() {
        // Goal: known systems keep fixed colours, others take distinct unused ones.
        let names: Vec<String> = [
            "vmsdb", "serial", "a", "b", "c", "d", "e", "f", "g", "h", "eventual",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c = system_colors(&names);
        assert_eq!(c.len(), names.len());
        for i in 0..c.len() {
            for j in 0..i {
                assert_ne!(c[i], c[j], "{} and {}", names[i], names[j]);
            }
        }
        assert_eq!(c[0], system_colors(&["vmsdb".to_string()])[0]);
    }

    #[test]
    fn escape_covers_markup_characters() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}

//! `plaza-bench plot`: SVG charts from `suite --json` reports, drawn here without a plotting
//! library: grouped bars, one group per load point, one bar per server.
//!
//! ```text
//! fanout reports ─▶ fanout-per-cpu.svg (deliveries per server CPU second)
//!                   fanout-p50.svg, fanout-p99.svg (latency)
//! idle reports   ─▶ idle-memory.svg (server RSS per connection)
//! storm reports  ─▶ storm-connect.svg (connections per second)
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

/// Plot options.
#[derive(Debug, clap::Args)]
pub(crate) struct PlotArgs {
    /// Folder to write the SVG files into.
    #[arg(long, default_value = "docs/bench")]
    pub out: PathBuf,
    /// `suite --json` reports.
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
}

/// One chart: groups along the x axis, a bar per series in each group.
#[derive(Debug, Default)]
pub(crate) struct Chart {
    /// Title line.
    pub title: String,
    /// What the y axis measures.
    pub y_label: String,
    /// Group labels.
    pub groups: Vec<String>,
    /// Series name and one value per group (`None`: no bar).
    pub series: Vec<(String, Vec<Option<f64>>)>,
}

impl Chart {
    fn new(title: &str, y_label: &str) -> Self {
        Self {
            title: title.to_owned(),
            y_label: y_label.to_owned(),
            ..Self::default()
        }
    }

    fn set(&mut self, series: &str, group: &str, value: f64) {
        let g = match self.groups.iter().position(|x| x == group) {
            Some(g) => g,
            None => {
                self.groups.push(group.to_owned());
                for (_, values) in &mut self.series {
                    values.push(None);
                }
                self.groups.len() - 1
            }
        };
        let s = match self.series.iter().position(|(name, _)| name == series) {
            Some(s) => s,
            None => {
                self.series
                    .push((series.to_owned(), vec![None; self.groups.len()]));
                self.series.len() - 1
            }
        };
        self.series[s].1[g] = Some(value);
    }
}

const PALETTE: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// A value in a short form: 1234567 → "1.23M".
fn short(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".to_owned()
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The axis top: a round number at or above `max`.
fn nice_max(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let step = 10f64.powf(max.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * step >= max {
            return m * step;
        }
    }
    10.0 * step
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Draws `chart` as a standalone SVG document.
pub(crate) fn svg(chart: &Chart) -> String {
    let (left, right, top, bottom) = (80.0, 170.0, 50.0, 70.0);
    let n_series = chart.series.len().max(1) as f64;
    let group_w = (n_series * 22.0 + 20.0).max(90.0);
    let plot_w = group_w * chart.groups.len().max(1) as f64;
    let plot_h = 320.0;
    let w = (left + plot_w + right).max(left + chart.title.chars().count() as f64 * 8.0);
    let h = top + plot_h + bottom;
    let max = chart
        .series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .fold(0.0f64, |a, b| a.max(*b));
    let top_value = nice_max(max);
    let y = |v: f64| top + plot_h - v / top_value * plot_h;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="22" font-size="15" font-weight="bold">{}</text>
<text x="14" y="{:.0}" transform="rotate(-90 14 {:.0})" text-anchor="middle">{}</text>
"#,
        escape(&chart.title),
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        escape(&chart.y_label)
    );
    for i in 0..=5 {
        let v = top_value * i as f64 / 5.0;
        let _ = writeln!(
            out,
            r##"<line x1="{left}" x2="{:.0}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{:.0}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + plot_w,
            y(v),
            y(v),
            left - 6.0,
            y(v) + 4.0,
            short(v)
        );
    }
    for (g, group) in chart.groups.iter().enumerate() {
        let x0 = left + g as f64 * group_w + 10.0;
        for (s, (_, values)) in chart.series.iter().enumerate() {
            let Some(v) = values.get(g).copied().flatten() else {
                continue;
            };
            let x = x0 + s as f64 * 22.0;
            let _ = writeln!(
                out,
                r#"<rect x="{x:.1}" y="{:.1}" width="18" height="{:.1}" fill="{}"><title>{}: {}</title></rect>"#,
                y(v),
                (top + plot_h - y(v)).max(0.5),
                PALETTE[s % PALETTE.len()],
                escape(&chart.series[s].0),
                short(v)
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.0}" text-anchor="middle">{}</text>"#,
            left + (g as f64 + 0.5) * group_w,
            top + plot_h + 18.0,
            escape(group)
        );
    }
    let _ = writeln!(
        out,
        r##"<line x1="{left}" x2="{left}" y1="{top}" y2="{:.0}" stroke="#333"/><line x1="{left}" x2="{:.0}" y1="{:.0}" y2="{:.0}" stroke="#333"/>"##,
        top + plot_h,
        left + plot_w,
        top + plot_h,
        top + plot_h
    );
    for (s, (name, _)) in chart.series.iter().enumerate() {
        let ly = top + 10.0 + s as f64 * 20.0;
        let lx = left + plot_w + 20.0;
        let _ = writeln!(
            out,
            r#"<rect x="{lx:.0}" y="{:.0}" width="12" height="12" fill="{}"/><text x="{:.0}" y="{ly:.0}">{}</text>"#,
            ly - 10.0,
            PALETTE[s % PALETTE.len()],
            lx + 18.0,
            escape(name)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn connections(report: &Value) -> u64 {
    report["runs"][0]["connections"].as_u64().unwrap_or(0)
}

fn thousands(n: u64) -> String {
    if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// The charts the reports hold, by file name.
pub(crate) fn charts(reports: &[Value]) -> Vec<(&'static str, Chart)> {
    let mut per_cpu = Chart::new(
        "Fan-out: deliveries per server CPU second (higher is better; medians)",
        "deliveries / server CPU-s",
    );
    let mut p50 = Chart::new(
        "Fan-out: median delivery latency (lower is better)",
        "p50 latency, ms",
    );
    let mut p99 = Chart::new(
        "Fan-out: 99th percentile delivery latency (lower is better)",
        "p99 latency, ms",
    );
    let mut memory = Chart::new(
        "Idle subscribed connections: server RSS per connection (lower is better)",
        "KiB per connection",
    );
    let mut storm = Chart::new(
        "Connect storm: connections per second to subscribed (higher is better)",
        "connections / s",
    );
    // Load points in order of subscribers, whatever order the files came in.
    let mut sorted: Vec<&Value> = reports.iter().collect();
    sorted.sort_by_key(|r| connections(r));
    for report in sorted {
        let n = thousands(connections(report));
        let Some(medians) = report["medians"].as_array() else {
            continue;
        };
        for m in medians {
            let target = m["target"].as_str().unwrap_or("?");
            match report["scenario"].as_str() {
                Some("fanout") => {
                    for p in m["phases"].as_array().into_iter().flatten() {
                        let group = format!("{n} × {}/s", p["rate"].as_f64().unwrap_or(0.0));
                        let f = |k: &str| p[k].as_f64().unwrap_or(0.0);
                        per_cpu.set(target, &group, f("delivered_per_cpu_s"));
                        p50.set(target, &group, f("p50_ms"));
                        p99.set(target, &group, f("p99_ms"));
                    }
                }
                Some("idle") => {
                    let kib = m["rss_per_conn_bytes"].as_f64().unwrap_or(0.0) / 1024.0;
                    memory.set(target, &format!("{n} conns"), kib);
                }
                Some("storm") => {
                    let rate = m["connect_per_sec"].as_f64().unwrap_or(0.0);
                    storm.set(target, &format!("{n} conns"), rate);
                }
                _ => {}
            }
        }
    }
    [
        ("fanout-per-cpu.svg", per_cpu),
        ("fanout-p50.svg", p50),
        ("fanout-p99.svg", p99),
        ("idle-memory.svg", memory),
        ("storm-connect.svg", storm),
    ]
    .into_iter()
    .filter(|(_, c)| !c.groups.is_empty())
    .collect()
}

/// Reads the reports and writes every chart they give into `args.out`.
pub(crate) fn plot(args: &PlotArgs) -> Result<()> {
    let reports = args
        .reports
        .iter()
        .map(|p| read(p))
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir_all(&args.out)?;
    for (name, chart) in charts(&reports) {
        let path = args.out.join(name);
        std::fs::write(&path, svg(&chart))?;
        println!("{}", path.display());
    }
    Ok(())
}

fn read(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_reports_become_one_group_per_load_point_and_a_bar_per_server() {
        let report = serde_json::json!({
            "scenario": "fanout",
            "runs": [{"connections": 1000}],
            "medians": [
                {"target": "plaza", "phases": [
                    {"rate": 50.0, "delivered_per_cpu_s": 150000.0, "p50_ms": 1.0, "p99_ms": 9.0},
                    {"rate": 200.0, "delivered_per_cpu_s": 250000.0, "p50_ms": 2.0, "p99_ms": 12.0}]},
                {"target": "uws", "phases": [
                    {"rate": 50.0, "delivered_per_cpu_s": 170000.0, "p50_ms": 1.0, "p99_ms": 8.0}]}
            ]
        });
        let charts = charts(&[report]);
        let names: Vec<&str> = charts.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            ["fanout-per-cpu.svg", "fanout-p50.svg", "fanout-p99.svg"]
        );
        let per_cpu = &charts[0].1;
        assert_eq!(per_cpu.groups, ["1k × 50/s", "1k × 200/s"]);
        assert_eq!(per_cpu.series[1].0, "uws");
        assert_eq!(per_cpu.series[1].1, [Some(170000.0), None]);
        let doc = svg(per_cpu);
        assert!(doc.starts_with("<svg") && doc.ends_with("</svg>\n"));
        assert_eq!(
            doc.matches("<rect x=").count(),
            3 + 2,
            "3 bars + 2 legend keys"
        );
        assert!(doc.contains("<title>uws: 170k</title>"));
    }

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_max(173_000.0), 200_000.0);
        assert_eq!(nice_max(9.0), 10.0);
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(short(1_234_567.0), "1.23M");
    }
}

//! Showing a load run: live progress bars while it runs, a table at the end,
//! and charts (SVG, or HTML around the SVG) of the latency distribution and
//! throughput over time.
//!
//! Owns: presentation only. Must never: measure anything itself.

use super::stats::Sample;
use super::BenchResult;
use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use std::path::Path;

pub struct Progress {
    hidden: bool,
}

pub struct MeasureBar {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(hidden: bool) -> Progress {
        Progress { hidden }
    }

    pub fn connecting(&self, total: u64) -> ProgressBar {
        if self.hidden {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("connecting {bar:40} {pos}/{len} ({per_sec})").expect("valid template"),
        );
        bar
    }

    pub fn measuring(&self, secs: f64) -> MeasureBar {
        let bar = if self.hidden { ProgressBar::hidden() } else { ProgressBar::new((secs * 10.0) as u64) };
        bar.set_style(ProgressStyle::with_template("measuring {bar:40} {msg}").expect("valid template"));
        MeasureBar { bar }
    }
}

impl MeasureBar {
    pub fn update(&self, elapsed: f64, sample: &Sample) {
        self.bar.set_position((elapsed * 10.0) as u64);
        self.bar.set_message(format!(
            "sent {}/s  received {}/s",
            human(sample.published_per_sec),
            human(sample.received_per_sec)
        ));
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// 1234567.0 -> "1.23M".
pub fn human(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

pub fn print_table(r: &BenchResult) {
    let mut rows: Vec<(&str, String)> = vec![
        (
            "workload",
            format!(
                "{:?} over {:?} (MQTT {}), QoS {}, {} publishers, {} subscribers, {} B",
                r.scenario,
                r.transport,
                if r.mqtt_version == 5 { "5" } else { "3.1.1" },
                r.qos,
                r.publishers,
                r.subscribers,
                r.payload_bytes
            ),
        ),
        (
            "connect",
            format!("{} connections in {:.3} s ({} failed)", r.connections, r.connect_secs, r.connect_failures),
        ),
        ("published", format!("{} in {:.1} s = {}/s", r.published, r.measured_secs, human(r.publish_rate))),
        ("deliveries", format!("{}/s during the measured window", human(r.deliveries_per_sec))),
        (
            "loss",
            format!(
                "{:.4}% ({} of {} expected arrived after a drain){}",
                r.loss_ratio * 100.0,
                r.received,
                r.expected,
                if r.drain_cut_off {
                    "; the drain was cut off while deliveries still arrived: a backlog, not proven loss"
                } else {
                    ""
                }
            ),
        ),
    ];
    if let Some(l) = &r.latency_ms {
        rows.push((
            "latency ms",
            format!(
                "p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (mean {:.3})",
                l.p50, l.p90, l.p99, l.p999, l.max, l.mean
            ),
        ));
    }
    if let Some(l) = &r.ack_latency_ms {
        rows.push((
            "acknowledged",
            format!(
                "{}/s; send to ack ms: p50 {:.3}  p99 {:.3}  max {:.3}",
                human(r.acked as f64 / r.measured_secs),
                l.p50,
                l.p99,
                l.max
            ),
        ));
    }
    if r.gifts_published > 0 {
        rows.push((
            "gifts",
            format!(
                "{} of {} expected deliveries arrived ({} sent)",
                r.gifts_received, r.gifts_expected, r.gifts_published
            ),
        ));
    }
    if let (Some(peak), Some(now)) = (r.broker_peak_rss_bytes, r.broker_rss_bytes) {
        rows.push(("broker RSS", format!("peak {:.1} MB, now {:.1} MB", peak as f64 / 1e6, now as f64 / 1e6)));
    }
    if let Some(b) = r.bytes_per_connection {
        rows.push(("per connection", format!("{b:.0} bytes of broker RSS")));
    }
    rows.push((
        "load tool CPU",
        format!(
            "{:.0}% of its CPUs{}",
            r.tool_cpu_share * 100.0,
            if r.tool_saturated {
                "  SATURATED: the tool may be the bottleneck; results are a lower bound"
            } else {
                ""
            }
        ),
    ));
    for (k, v) in rows {
        println!("{k:>15}  {v}");
    }
}

/// Writes `path` as SVG, or HTML (SVG inside, with the table) when it ends in `.html`.
pub fn write_report(path: &Path, r: &BenchResult) -> anyhow::Result<()> {
    let svg = render_svg(r)?;
    if path.extension().is_some_and(|e| e == "html") {
        let json = serde_json::to_string_pretty(r)?;
        let html = format!(
            "<!doctype html><meta charset=utf-8><title>starling bench: {:?}</title>\
             <body style=\"font-family:sans-serif\"><h1>starling bench: {:?}</h1>{svg}<pre>{}</pre></body>",
            r.scenario,
            r.scenario,
            json.replace('<', "&lt;")
        );
        std::fs::write(path, html)?;
    } else {
        std::fs::write(path, svg)?;
    }
    Ok(())
}

fn render_svg(r: &BenchResult) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 700)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(350);
        draw_throughput(&top, &r.timeline)?;
        draw_latency(&bottom, r)?;
        root.present()?;
    }
    Ok(svg)
}

fn draw_throughput<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    samples: &[Sample],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let max_t = samples.last().map_or(1.0, |s| s.at_secs).max(1.0);
    let max_y = samples.iter().map(|s| s.received_per_sec.max(s.published_per_sec)).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption("throughput (messages per second)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_t, 0.0..max_y)?;
    chart.configure_mesh().x_desc("seconds").y_label_formatter(&|v| human(*v)).draw()?;
    chart
        .draw_series(LineSeries::new(samples.iter().map(|s| (s.at_secs, s.received_per_sec)), &BLUE))?
        .label("received")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(samples.iter().map(|s| (s.at_secs, s.published_per_sec)), &RED))?
        .label("published")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    Ok(())
}

fn draw_latency<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    r: &BenchResult,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let Some(l) = &r.latency_ms else { return Ok(()) };
    let points = [("p50", l.p50), ("p90", l.p90), ("p99", l.p99), ("p99.9", l.p999), ("max", l.max)];
    let max_y = points.iter().map(|p| p.1).fold(0.001, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption("latency distribution (ms)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0usize..points.len(), 0.0..max_y)?;
    chart
        .configure_mesh()
        .x_labels(points.len())
        .x_label_formatter(&|i| points.get(*i).map_or(String::new(), |p| p.0.to_string()))
        .y_desc("ms")
        .draw()?;
    chart.draw_series(points.iter().enumerate().map(|(i, (_, v))| {
        let mut bar = Rectangle::new([(i, 0.0), (i + 1, *v)], BLUE.mix(0.6).filled());
        bar.set_margin(0, 0, 15, 15);
        bar
    }))?;
    Ok(())
}

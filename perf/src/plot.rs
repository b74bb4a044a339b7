//! The flood plot, in the manner of the KmMR paper's Fig. 9: consensus
//! latency (log scale) against flood rate, bftd and etcd, one panel per
//! (flood kind, victim role). SVG, so no font or image library is needed.

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::failover::system_name;
use crate::flood::{StepRow, VictimRole};
use crate::flooder::FloodKind;
use crate::kv_compare::System;
use crate::loadgen::us_to_ms;

/// What the plot needs of one step (from a run, or from `flood.csv`).
#[derive(Clone, Debug)]
pub struct PlotRow {
    pub system: System,
    pub role: VictimRole,
    pub kind: Option<FloodKind>,
    pub rate_pps: f64,
    pub rate_mbps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub ops_per_s: f64,
}

impl PlotRow {
    pub fn from_step(row: &StepRow) -> Self {
        PlotRow {
            system: row.system,
            role: row.role,
            kind: row.kind,
            rate_pps: row.rate_pps,
            rate_mbps: row.rate_mbps,
            p50_ms: us_to_ms(row.report.latency_us_p50),
            p99_ms: us_to_ms(row.report.latency_us_p99),
            ops_per_s: row.report.ops_per_s,
        }
    }
}

/// Reads the rows of a `flood.csv` (columns found by name).
pub fn parse_flood_csv(text: &str) -> Result<Vec<PlotRow>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().context("empty CSV")?.split(',').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("CSV has no column {name}"))
    };
    let (system, role, kind) = (
        column("system")?,
        column("victim_role")?,
        column("flood_kind")?,
    );
    let (pps, mbps) = (column("rate_pps")?, column("rate_mbps")?);
    let (p50, p99, ops) = (column("p50_ms")?, column("p99_ms")?, column("ops_per_s")?);
    let mut rows = Vec::new();
    for (number, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').collect();
        let at = |i: usize| cells.get(i).copied().unwrap_or("");
        let float = |i: usize| -> Result<f64> {
            at(i)
                .parse()
                .with_context(|| format!("line {}: {:?} is not a number", number + 2, at(i)))
        };
        rows.push(PlotRow {
            system: match at(system) {
                "etcd" => System::Etcd,
                "bftd" => System::Bftd,
                other => anyhow::bail!("line {}: unknown system {other:?}", number + 2),
            },
            role: match at(role) {
                "backup" => VictimRole::Backup,
                "leader" => VictimRole::Leader,
                other => anyhow::bail!("line {}: unknown victim role {other:?}", number + 2),
            },
            kind: match at(kind) {
                "none" => None,
                name => Some(
                    FloodKind::ALL
                        .into_iter()
                        .find(|k| k.name() == name)
                        .with_context(|| format!("line {}: unknown flood {name:?}", number + 2))?,
                ),
            },
            rate_pps: float(pps)?,
            rate_mbps: float(mbps)?,
            p50_ms: float(p50)?,
            p99_ms: float(p99)?,
            ops_per_s: float(ops)?,
        });
    }
    Ok(rows)
}

/// (system, "p50" or "p99", points).
type Series = (System, &'static str, Vec<(f64, f64)>);

const PANEL_WIDTH: u32 = 560;
const PANEL_HEIGHT: u32 = 360;

/// Writes one SVG with a grid of panels: rows = flood kinds, columns =
/// victim roles that were measured.
pub fn flood_svg(path: &Path, rows: &[PlotRow]) -> Result<()> {
    let size = flood_svg_size(rows)?;
    let root = SVGBackend::new(path, size).into_drawing_area();
    draw_flood(&root, rows)?;
    root.present()
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// Like [`flood_svg`], the SVG document as a string (for an HTML page).
pub fn flood_svg_string(rows: &[PlotRow]) -> Result<String> {
    let size = flood_svg_size(rows)?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw_flood(&root, rows)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

fn flood_kinds_and_roles(rows: &[PlotRow]) -> (Vec<FloodKind>, Vec<VictimRole>) {
    let kinds: Vec<FloodKind> = FloodKind::ALL
        .into_iter()
        .filter(|k| rows.iter().any(|r| r.kind == Some(*k)))
        .collect();
    let roles: Vec<VictimRole> = [VictimRole::Backup, VictimRole::Leader]
        .into_iter()
        .filter(|role| rows.iter().any(|r| r.role == *role))
        .collect();
    (kinds, roles)
}

/// (width, height) in pixels of the flood plot of `rows`.
fn flood_svg_size(rows: &[PlotRow]) -> Result<(u32, u32)> {
    let (kinds, roles) = flood_kinds_and_roles(rows);
    anyhow::ensure!(!kinds.is_empty() && !roles.is_empty(), "nothing to plot");
    Ok((
        PANEL_WIDTH * roles.len() as u32,
        PANEL_HEIGHT * kinds.len() as u32 + 40,
    ))
}

fn draw_flood(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    rows: &[PlotRow],
) -> Result<()> {
    let (kinds, roles) = flood_kinds_and_roles(rows);
    root.fill(&WHITE).map_err(plot_error)?;
    let (title, body) = root.split_vertically(40);
    title
        .titled(
            "Consensus latency (closed-loop 0/0 put) vs flood rate at one replica",
            ("sans-serif", 18),
        )
        .map_err(plot_error)?;
    let panels = body.split_evenly((kinds.len(), roles.len()));
    for (i, panel) in panels.iter().enumerate() {
        let kind = kinds[i / roles.len()];
        let role = roles[i % roles.len()];
        draw_panel(panel, rows, kind, role)?;
    }
    Ok(())
}

/// x of a step: Mbit/s for 65,495-byte datagrams, kpps otherwise.
fn x_of(kind: FloodKind, row: &PlotRow) -> f64 {
    match kind {
        FloodKind::UdpBig => row.rate_mbps,
        _ => row.rate_pps / 1000.0,
    }
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    rows: &[PlotRow],
    kind: FloodKind,
    role: VictimRole,
) -> Result<()> {
    // The no-flood step of the same role is the x = 0 point of every kind.
    let points = |system: System, quantile: fn(&PlotRow) -> f64| -> Vec<(f64, f64)> {
        let mut p: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.system == system && r.role == role)
            .filter(|r| r.kind.is_none() || r.kind == Some(kind))
            .filter(|r| r.ops_per_s > 0.0)
            .map(|r| (x_of(kind, r), quantile(r)))
            .collect();
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
        p
    };
    let p50 = |r: &PlotRow| r.p50_ms.max(0.001);
    let p99 = |r: &PlotRow| r.p99_ms.max(0.001);
    let series: Vec<Series> = [System::Bftd, System::Etcd]
        .into_iter()
        .flat_map(|s| [(s, "p50", points(s, p50)), (s, "p99", points(s, p99))])
        .filter(|(_, _, p)| !p.is_empty())
        .collect();
    let x_max = series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|q| q.0))
        .fold(1.0, f64::max)
        * 1.05;
    let y_values = series.iter().flat_map(|(_, _, p)| p.iter().map(|q| q.1));
    // Room below the data for the legend.
    let y_min = y_values.clone().fold(f64::INFINITY, f64::min).min(1.0) / 4.0;
    let y_max = y_values.fold(0.0, f64::max).max(1.0) * 1.5;
    let x_label = match kind {
        FloodKind::UdpBig => "flood rate (Mbit/s)",
        _ => "flood rate (kpps)",
    };
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{} flood, {} victim", kind.name(), role.name()),
            ("sans-serif", 15),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .y_labels(8)
        .y_label_formatter(&|v| {
            if *v >= 1.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        })
        .x_label_formatter(&|v| format!("{v:.0}"))
        .x_desc(x_label)
        .y_desc("latency (ms, log)")
        .draw()
        .map_err(plot_error)?;
    for (system, quantile, points) in series {
        let base = match system {
            System::Bftd => RGBColor(31, 119, 180),
            System::Etcd => RGBColor(214, 39, 40),
        };
        let color = if quantile == "p50" {
            base.to_rgba()
        } else {
            base.mix(0.5)
        };
        let style = ShapeStyle::from(color).stroke_width(2);
        let label = format!("{} {quantile}", system_name(system));
        chart
            .draw_series(LineSeries::new(points.clone(), style))
            .map_err(plot_error)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        if quantile == "p50" {
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, style.filled())))
                .map_err(plot_error)?;
        } else {
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&p| TriangleMarker::new(p, 4, style.filled())),
                )
                .map_err(plot_error)?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

pub(crate) fn plot_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plot: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_round_trip_into_a_plot() {
        let csv = "system,victim_role,victim,flood_kind,step_pct,rate_pps,rate_mbps,p50_ms,p99_ms,ops_per_s\n\
                   etcd,backup,1,none,0,0,0.0,3.9,10.6,1872.0\n\
                   etcd,backup,1,udp-65495,100,3178,1704.1,4.1,12.2,1738.0\n\
                   bftd,leader,0,tcp-syn,100,25521,11.0,8.1,65.0,824.0\n";
        let rows = parse_flood_csv(csv).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].kind, Some(FloodKind::UdpBig));
        assert_eq!(rows[2].role, VictimRole::Leader);
        let path = std::env::temp_dir().join(format!("bftd-perf-plot-{}.svg", std::process::id()));
        flood_svg(&path, &rows).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(svg.contains("udp-65495 flood, backup victim"));
    }
}

//! `bftd-perf report`: the CSVs of a results directory (kv-compare,
//! tls-compare, failover, flood, ...) as one self-contained HTML page: a
//! table per CSV and an inline SVG plot where one makes sense (the flood
//! plot of [`crate::plot`] for flood CSVs; latency percentiles and
//! throughput per system against clients or run for the others).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::plot::plot_error;

/// A parsed CSV: the header row and the data rows (each as wide as the
/// header; short rows are padded with empty cells).
#[derive(Clone, Debug, PartialEq)]
pub struct Csv {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Csv {
    fn column(&self, name: &str) -> Option<usize> {
        self.headers.iter().position(|h| h == name)
    }

    /// Column `i` of every row as numbers, if every cell is one.
    fn numbers(&self, i: usize) -> Option<Vec<f64>> {
        self.rows.iter().map(|r| r[i].trim().parse().ok()).collect()
    }
}

/// Parses CSV as the benchmarks write it: comma-separated, a header row,
/// fields quoted with `"` when they hold a comma, a quote (doubled) or a
/// line break. Blank lines are skipped.
pub fn parse_csv(text: &str) -> Result<Csv> {
    let mut records: Vec<Vec<String>> = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    // One pass over the characters: bounded by the text's length.
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                if !(record.len() == 1 && record[0].trim().is_empty()) {
                    records.push(std::mem::take(&mut record));
                }
                record.clear();
            }
            (false, c) => field.push(c),
        }
    }
    anyhow::ensure!(!quoted, "a quoted field is not closed");
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    let mut records = records.into_iter();
    let headers = records.next().context("empty CSV (no header row)")?;
    let mut rows = Vec::new();
    for (i, mut r) in records.enumerate() {
        anyhow::ensure!(
            r.len() <= headers.len(),
            "row {} has {} fields, the header {}",
            i + 2,
            r.len(),
            headers.len()
        );
        r.resize(headers.len(), String::new());
        rows.push(r);
    }
    Ok(Csv { headers, rows })
}

/// The CSV files named by `inputs`: files as given, directories searched
/// (down to 4 levels) for `*.csv`, each directory's files in name order.
pub fn csv_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("read directory {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() && depth > 0 {
                walk(&path, depth - 1, out)?;
            } else if path.extension().is_some_and(|e| e == "csv") {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            walk(input, 4, &mut out)?;
        } else {
            anyhow::ensure!(
                input.is_file(),
                "{} is neither a CSV file nor a directory",
                input.display()
            );
            out.push(input.clone());
        }
    }
    anyhow::ensure!(
        !out.is_empty(),
        "no .csv files in {inputs:?} (give a results directory such as perf/results/2026-11-21, or CSV files)"
    );
    Ok(out)
}

/// Reads `files` and writes the page: a section per CSV, titled with its
/// path (as given), with its plots and its table.
pub fn html_page(title: &str, files: &[PathBuf]) -> Result<String> {
    let mut sections = Vec::new();
    for path in files {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let csv = parse_csv(&text).with_context(|| format!("parse {}", path.display()))?;
        sections.push((path.display().to_string(), text, csv));
    }
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n<ul class=\"toc\">\n",
        escape(title),
        escape(title)
    );
    for (i, (name, _, csv)) in sections.iter().enumerate() {
        let _ = writeln!(
            html,
            "<li><a href=\"#csv{i}\">{}</a> ({} rows)</li>",
            escape(name),
            csv.rows.len()
        );
    }
    html.push_str("</ul>\n");
    for (i, (name, text, csv)) in sections.iter().enumerate() {
        let _ = writeln!(html, "<section id=\"csv{i}\">\n<h2>{}</h2>", escape(name));
        for svg in plots(text, csv) {
            html.push_str("<div class=\"plot\">");
            html.push_str(svg_element(&svg));
            html.push_str("</div>\n");
        }
        html.push_str(&table(csv));
        html.push_str("</section>\n");
    }
    html.push_str("</body>\n</html>\n");
    Ok(html)
}

const STYLE: &str = "body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0 2em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafafa; }
.plot { margin: 1em 0; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 2em; }
";

/// The `<svg>` element of an SVG document (drops an XML declaration).
fn svg_element(svg: &str) -> &str {
    svg.find("<svg").map_or(svg, |i| &svg[i..])
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The CSV as an HTML table; numeric cells are right-aligned.
fn table(csv: &Csv) -> String {
    let mut out = String::from("<table>\n<thead><tr>");
    for h in &csv.headers {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &csv.rows {
        out.push_str("<tr>");
        for cell in row {
            let class = if cell.trim().parse::<f64>().is_ok() {
                " class=\"num\""
            } else {
                ""
            };
            let _ = write!(out, "<td{class}>{}</td>", escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

/// The plots that fit `csv` (none when no plot makes sense). A plot that
/// fails to draw is left out with a warning: the table still shows the data.
fn plots(text: &str, csv: &Csv) -> Vec<String> {
    let mut out = Vec::new();
    if csv.column("flood_kind").is_some() && csv.column("victim_role").is_some() {
        match crate::plot::parse_flood_csv(text)
            .and_then(|rows| crate::plot::flood_svg_string(&rows))
        {
            Ok(svg) => out.push(svg),
            Err(e) => eprintln!("warning: no flood plot: {e:#}"),
        }
        return out;
    }
    let latency = |h: &str| {
        let h = h.to_ascii_lowercase();
        h.contains("p50") || h.contains("p99") || h.ends_with("_ms") || h.contains("_ms_")
    };
    let latency: Vec<usize> = (0..csv.headers.len())
        .filter(|&i| latency(&csv.headers[i]) && !csv.headers[i].contains("max"))
        .collect();
    let throughput: Vec<usize> = ["ops_per_s", "ops/s"]
        .iter()
        .filter_map(|h| csv.column(h))
        .collect();
    for (columns, y_desc) in [(latency, "latency (ms)"), (throughput, "ops/s")] {
        match per_system_svg(csv, &columns, y_desc) {
            Ok(Some(svg)) => out.push(svg),
            Ok(None) => {}
            Err(e) => eprintln!("warning: no {y_desc} plot: {e:#}"),
        }
    }
    out
}

/// Columns that tell one measured configuration from another, when they
/// vary within the CSV (the system always).
const GROUP_COLUMNS: [&str; 4] = ["system", "transport", "durability", "op"];
/// The x axis: the first of these the CSV has, with numbers in it.
const X_COLUMNS: [&str; 3] = ["clients", "run", "round"];

/// One plotted line: (label, color index, index of its y column, points).
type Line = (String, usize, usize, Vec<(f64, f64)>);

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// One line per (group, y column) against the x column; several rows at
/// the same x (rounds) are summarized by their median. `None` when the CSV
/// has no system column, no x column or none of `y_columns`.
fn per_system_svg(csv: &Csv, y_columns: &[usize], y_desc: &str) -> Result<Option<String>> {
    let Some(system) = csv.column("system") else {
        return Ok(None);
    };
    let Some((x, xs)) = X_COLUMNS
        .iter()
        .filter_map(|h| csv.column(h))
        .find_map(|i| Some((i, csv.numbers(i)?)))
    else {
        return Ok(None);
    };
    let y_columns: Vec<(usize, Vec<f64>)> = y_columns
        .iter()
        .filter_map(|&i| Some((i, csv.numbers(i)?)))
        .collect();
    if y_columns.is_empty() || csv.rows.is_empty() {
        return Ok(None);
    }
    let group_columns: Vec<usize> = GROUP_COLUMNS
        .iter()
        .filter_map(|h| csv.column(h))
        .filter(|&i| {
            i == system || {
                let mut values: Vec<&str> = csv.rows.iter().map(|r| r[i].as_str()).collect();
                values.sort();
                values.dedup();
                values.len() > 1
            }
        })
        .collect();
    let group_of = |r: &[String]| -> String {
        let parts: Vec<&str> = group_columns.iter().map(|&i| r[i].as_str()).collect();
        parts.join(" ")
    };
    let mut groups: Vec<String> = Vec::new();
    for r in &csv.rows {
        let g = group_of(r);
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    let mut series: Vec<Line> = Vec::new();
    for (gi, g) in groups.iter().enumerate() {
        for (yi, (column, ys)) in y_columns.iter().enumerate() {
            let mut at_x: Vec<(f64, Vec<f64>)> = Vec::new();
            for (ri, r) in csv.rows.iter().enumerate() {
                if &group_of(r) != g {
                    continue;
                }
                match at_x.iter_mut().find(|(x, _)| *x == xs[ri]) {
                    Some((_, v)) => v.push(ys[ri]),
                    None => at_x.push((xs[ri], vec![ys[ri]])),
                }
            }
            let mut points: Vec<(f64, f64)> = at_x
                .into_iter()
                .map(|(x, mut v)| {
                    v.sort_by(f64::total_cmp);
                    (x, v[v.len() / 2])
                })
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let label = format!("{g} {}", csv.headers[*column]);
            series.push((label, gi % COLORS.len(), yi, points));
        }
    }
    let all = series.iter().flat_map(|s| s.3.iter());
    let (x_min, x_max) = all
        .clone()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.0), hi.max(p.0))
        });
    let y_max = all.fold(0.0_f64, |m, p| m.max(p.1));
    let pad = ((x_max - x_min) * 0.05).max(0.5);
    let x_range = (x_min - pad)..(x_max + pad);
    let y_range = 0.0..(y_max * 1.15).max(1e-3);
    let x_desc = csv.headers[x].clone();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{y_desc} by {x_desc}"), ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(x_range, y_range)
            .map_err(plot_error)?;
        // Client counts and run numbers are integers: label them so.
        let integer_x = xs.iter().all(|x| x.fract() == 0.0);
        let x_label_count = if integer_x {
            ((x_max - x_min) as usize + 1).clamp(2, 12)
        } else {
            10
        };
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_labels(x_label_count)
            .x_label_formatter(&|v| {
                if integer_x {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                }
            })
            .x_desc(x_desc.as_str())
            .y_desc(y_desc)
            .draw()
            .map_err(plot_error)?;
        for (label, color, marker, points) in &series {
            let base = COLORS[*color];
            // The first y column (p50) solid, the next ones lighter.
            let alpha = [1.0, 0.55, 0.3][(*marker).min(2)];
            let style = ShapeStyle::from(base.mix(alpha)).stroke_width(2);
            chart
                .draw_series(LineSeries::new(points.clone(), style))
                .map_err(plot_error)?
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
            match marker % 3 {
                0 => chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, style.filled())))
                    .map(|_| ()),
                1 => chart
                    .draw_series(
                        points
                            .iter()
                            .map(|&p| TriangleMarker::new(p, 4, style.filled())),
                    )
                    .map(|_| ()),
                _ => chart
                    .draw_series(points.iter().map(|&p| Cross::new(p, 4, style)))
                    .map(|_| ()),
            }
            .map_err(plot_error)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(Some(svg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_keep_their_commas_and_quotes() {
        let csv = parse_csv("a,b,c\n1,\"x, \"\"y\"\"\",3\n\n2,z\n").unwrap();
        assert_eq!(csv.headers, ["a", "b", "c"]);
        assert_eq!(csv.rows[0], ["1", "x, \"y\"", "3"]);
        assert_eq!(csv.rows[1], ["2", "z", ""]);
        assert!(parse_csv("a\n\"open\n").is_err());
        assert!(parse_csv("a\n1,2\n").is_err());
    }

    fn fixture_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bftd-perf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(
            dir.join("kv-compare.csv"),
            "system,durability,op,clients,endpoints,ops_per_s,latency_ms_p50,latency_ms_p99,latency_ms_p999,latency_ms_max,errors\n\
             etcd,fsync,put,1,3,1205.3,0.790,1.497,3.535,5.323,0\n\
             bftd,fsync,put,1,4,861.1,1.112,1.975,6.131,43.807,0\n\
             etcd,fsync,put,32,3,5437.8,5.439,13.919,25.343,44.063,0\n\
             bftd,fsync,put,32,4,4321.0,6.210,12.004,20.100,31.000,0\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("sub/failover.csv"),
            "system,run,leader_before,leader_after,failover_ms,first_by_probe,pause_ms_max,errors_after_kill,acked_writes,lost_writes,note\n\
             etcd,1,0,2,1502.4,true,2028.7,106,17943,0,\"kill+reap 20 ms; errors: a, b <c>\"\n\
             bftd,1,0,1,612.0,true,700.5,3,15000,0,\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("flood.csv"),
            "system,victim_role,victim,flood_kind,step_pct,rate_pps,rate_mbps,p50_ms,p99_ms,ops_per_s\n\
             etcd,backup,1,none,0,0,0.0,3.9,10.6,1872.0\n\
             etcd,backup,1,udp-65495,100,3178,1704.1,4.1,12.2,1738.0\n\
             bftd,backup,1,none,0,0,0.0,2.6,5.6,2875.6\n\
             bftd,backup,1,udp-65495,100,3000,1600.0,3.5,7.1,2177.8\n",
        )
        .unwrap();
        std::fs::write(dir.join("notes.md"), "not a CSV\n").unwrap();
        dir
    }

    #[test]
    fn a_results_directory_becomes_one_page_with_a_table_and_a_plot_per_csv() {
        let dir = fixture_dir("report");
        let files = csv_files(std::slice::from_ref(&dir)).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.strip_prefix(&dir).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["flood.csv", "kv-compare.csv", "sub/failover.csv"]);
        let html = html_page("bftd results", &files).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<h1>bftd results</h1>"));
        // Every row of every table, cells escaped.
        assert!(
            html.contains("<tr><td>bftd</td><td>fsync</td><td>put</td><td class=\"num\">32</td><td class=\"num\">4</td><td class=\"num\">4321.0</td>"),
            "{html}"
        );
        assert_eq!(html.matches("<table>").count(), 3);
        assert_eq!(html.matches("<tr><td>").count(), 4 + 2 + 4);
        assert!(html.contains("kill+reap 20 ms; errors: a, b &lt;c&gt;"));
        // Plots: the flood plot; latency and throughput for kv-compare;
        // latency for failover (no throughput column).
        assert_eq!(html.matches("<svg").count(), 1 + 2 + 1, "{html}");
        assert!(html.contains("udp-65495 flood, backup victim"));
        assert!(html.contains("latency (ms) by clients"));
        assert!(html.contains("bftd latency_ms_p99"));
        assert!(html.contains("latency (ms) by run"));
        assert!(html.contains("etcd failover_ms"));
        assert!(!html.contains("<?xml"));
    }

    #[test]
    fn no_csv_is_an_error_that_says_what_to_give() {
        let dir = std::env::temp_dir().join(format!("bftd-perf-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = csv_files(std::slice::from_ref(&dir))
            .unwrap_err()
            .to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("no .csv files"), "{err}");
    }
}

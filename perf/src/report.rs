//! Result tables: aligned text for the terminal, CSV and Markdown for files.

use std::fmt::Write as _;

use serde::Serialize;

use crate::loadgen::{us_to_ms, LoadgenReport};

/// One measured configuration of one system.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub system: String,
    pub durability: String,
    pub op: String,
    pub clients: u32,
    pub endpoints: usize,
    pub ops_per_s: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_p999: f64,
    pub latency_ms_max: f64,
    pub errors: u64,
}

impl Row {
    pub fn new(system: &str, durability: &str, report: &LoadgenReport) -> Self {
        Row {
            system: system.to_string(),
            durability: durability.to_string(),
            op: report.op.name().to_string(),
            clients: report.clients,
            endpoints: report.endpoints,
            ops_per_s: report.ops_per_s,
            latency_ms_p50: us_to_ms(report.latency_us_p50),
            latency_ms_p99: us_to_ms(report.latency_us_p99),
            latency_ms_p999: us_to_ms(report.latency_us_p999),
            latency_ms_max: us_to_ms(report.latency_us_max),
            errors: report.errors,
        }
    }
}

/// Orders rows so both systems sit next to each other for each client count
/// (the order of systems as first seen is kept).
pub fn side_by_side(rows: &[Row]) -> Vec<Row> {
    let mut systems: Vec<&str> = Vec::new();
    for row in rows {
        if !systems.contains(&row.system.as_str()) {
            systems.push(&row.system);
        }
    }
    let system_rank = |row: &Row| {
        systems
            .iter()
            .position(|s| *s == row.system)
            .unwrap_or(usize::MAX)
    };
    let mut sorted = rows.to_vec();
    sorted.sort_by_key(|row| (row.clients, system_rank(row)));
    sorted
}

const HEADERS: [&str; 8] = [
    "system",
    "durability",
    "op",
    "clients",
    "ops/s",
    "p50 ms",
    "p99 ms",
    "errors",
];

fn cells(row: &Row) -> [String; 8] {
    [
        row.system.clone(),
        row.durability.clone(),
        row.op.clone(),
        row.clients.to_string(),
        format!("{:.0}", row.ops_per_s),
        format!("{:.2}", row.latency_ms_p50),
        format!("{:.2}", row.latency_ms_p99),
        row.errors.to_string(),
    ]
}

/// An aligned plain-text table of [`Row`]s (text left, numbers right).
pub fn to_text(rows: &[Row]) -> String {
    let body: Vec<Vec<String>> = rows.iter().map(|r| cells(r).to_vec()).collect();
    text_table(&HEADERS, &body, 3)
}

/// A Markdown table with the same columns as [`to_text`].
pub fn to_markdown(rows: &[Row]) -> String {
    let body: Vec<Vec<String>> = rows.iter().map(|r| cells(r).to_vec()).collect();
    markdown_table(&HEADERS, &body, 3)
}

/// An aligned plain-text table: columns before `numeric_from` are text
/// (left-aligned), the others numbers (right-aligned).
pub fn text_table(headers: &[&str], body: &[Vec<String>], numeric_from: usize) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for line in body {
        assert_eq!(
            line.len(),
            headers.len(),
            "row width must match the headers"
        );
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let format_line = |line: &[String]| {
        let mut text = String::new();
        for (i, (cell, &width)) in line.iter().zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            if i >= numeric_from {
                let _ = write!(text, "{cell:>width$}");
            } else {
                let _ = write!(text, "{cell:<width$}");
            }
        }
        text.trim_end().to_string() + "\n"
    };
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let mut out = format_line(&header);
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
    out.push('\n');
    for line in body {
        out.push_str(&format_line(line));
    }
    out
}

/// A Markdown table; columns from `numeric_from` on are right-aligned.
pub fn markdown_table(headers: &[&str], body: &[Vec<String>], numeric_from: usize) -> String {
    let mut out = format!("| {} |\n", headers.join(" | "));
    let aligns: Vec<&str> = (0..headers.len())
        .map(|i| if i >= numeric_from { "---:" } else { "---" })
        .collect();
    out.push_str(&format!("| {} |\n", aligns.join(" | ")));
    for line in body {
        assert_eq!(
            line.len(),
            headers.len(),
            "row width must match the headers"
        );
        let escaped: Vec<String> = line.iter().map(|c| c.replace('|', "\\|")).collect();
        out.push_str(&format!("| {} |\n", escaped.join(" | ")));
    }
    out
}

/// CSV with every field of [`Row`] (more than the printed table).
pub fn to_csv(rows: &[Row]) -> String {
    let mut out = String::from(
        "system,durability,op,clients,endpoints,ops_per_s,latency_ms_p50,latency_ms_p99,latency_ms_p999,latency_ms_max,errors\n",
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{:.1},{:.3},{:.3},{:.3},{:.3},{}",
            row.system,
            row.durability,
            row.op,
            row.clients,
            row.endpoints,
            row.ops_per_s,
            row.latency_ms_p50,
            row.latency_ms_p99,
            row.latency_ms_p999,
            row.latency_ms_max,
            row.errors
        );
    }
    out
}

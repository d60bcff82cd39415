//! Output formats: kubectl-style tables, JSON and YAML, written to any `io::Write`.

use std::io::Write;

use serde::Serialize;

/// `-o` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people (default).
    #[default]
    Table,
    /// JSON for scripts.
    Json,
    /// YAML for scripts and people.
    Yaml,
}

/// Writes `value` as JSON or YAML (for `Table`, callers print their own table instead).
pub fn write_data<T: Serialize>(
    out: &mut dyn Write,
    format: Format,
    value: &T,
) -> anyhow::Result<()> {
    match format {
        Format::Json | Format::Table => {
            serde_json::to_writer_pretty(&mut *out, value)?;
            writeln!(out)?;
        }
        Format::Yaml => {
            out.write_all(k8s_snap::tree::to_yaml_string(value)?.as_bytes())?;
        }
    }
    Ok(())
}

/// A kubectl-style table: upper-case headers, columns separated by three spaces, no borders.
pub fn write_table(
    out: &mut dyn Write,
    headers: &[&str],
    rows: &[Vec<String>],
) -> anyhow::Result<()> {
    let mut table = comfy_table::Table::new();
    table
        .load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(headers.iter().copied());
    for row in rows {
        table.add_row(row.iter().map(String::as_str));
    }
    let last = headers.len().saturating_sub(1);
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if i == last { 0 } else { 3 }));
    }
    for line in table.lines() {
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// `2026-11-25T20:36:54Z`, or `<none>` like kubectl.
pub fn time_or_none(t: Option<jiff::Timestamp>) -> String {
    t.map_or_else(|| "<none>".to_string(), |t| t.to_string())
}

/// The line naming a new snapshot's commit and tag (`snapshot` and `import`).
pub fn write_commit_line(out: &mut dyn Write, commit: &str, name: &str) -> std::io::Result<()> {
    writeln!(out, "commit {commit}  tag snapshots/{name}")
}

/// `1.2 MiB`-style sizes.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

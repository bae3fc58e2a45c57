//! Figures for people: the by-level table of a published period, for an 80-column terminal.

use anyhow::Result;
use polars::prelude::*;

use crate::kpi::KpiTables;

fn int(df: &DataFrame, name: &str, row: usize) -> Result<i64> {
    Ok(df.column(name)?.i64()?.get(row).unwrap_or(0))
}

fn pct(df: &DataFrame, name: &str, row: usize) -> Result<String> {
    Ok(match df.column(name)?.f64()?.get(row) {
        Some(r) => format!("{:.2}", r * 100.0),
        None => "-".into(),
    })
}

/// The period's figures per level, one line each (at most 80 columns).
pub fn level_table(t: &KpiTables) -> Result<String> {
    let df = &t.by_level;
    let p = &t.period;
    let mut out = format!("{} ({}, {} … {})\n", p.id, p.convention, p.start, p.end);
    out.push_str(&format!(
        "{:<9}{:>8}{:>7}{:>7}{:>9}{:>7}{:>8}{:>6}{:>7}{:>8}{:>6}\n",
        "level",
        "received",
        "online",
        "onl%",
        "resolved",
        "early",
        "on time",
        "late",
        "ontm%",
        "in prog",
        "wait"
    ));
    let levels = df.column("level")?.str()?;
    for row in 0..df.height() {
        out.push_str(&format!(
            "{:<9}{:>8}{:>7}{:>7}{:>9}{:>7}{:>8}{:>6}{:>7}{:>8}{:>6}\n",
            levels.get(row).unwrap_or("?"),
            int(df, "received_new", row)?,
            int(df, "received_online", row)?,
            pct(df, "online_rate", row)?,
            int(df, "resolved_total", row)?,
            int(df, "resolved_early", row)?,
            int(df, "resolved_on_time", row)?,
            int(df, "resolved_overdue", row)?,
            pct(df, "on_time_rate", row)?,
            int(df, "in_progress_total", row)?,
            int(df, "waiting_acceptance", row)?,
        ));
    }
    Ok(out)
}

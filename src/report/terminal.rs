//! The by-level table for an 80-column terminal, printed at the end of a run.

use super::format::{int, pct};
use crate::error::Result;
use crate::kpi::KpiTables;

/// The period's figures per level, one line each (at most 80 columns); when the agencies of
/// the period are not those of the restating date, the restated figures follow, labelled.
pub fn level_table(t: &KpiTables) -> Result<String> {
    let p = &t.period;
    let title = format!("{} ({}, {} … {})", p.id, p.convention, p.start, p.end);
    let mut out = table(&title, &t.by_level)?;
    if t.restated.differs(&t.by_level) {
        let title = format!("{} restated to the agencies of {}", p.id, t.restated.to);
        out.push('\n');
        out.push_str(&table(&title, &t.restated.by_level)?);
    }
    Ok(out)
}

/// One table: its title, the column heads, a line per level.
fn table(title: &str, df: &polars::prelude::DataFrame) -> Result<String> {
    let mut out = format!("{title}\n");
    out.push_str(&format!(
        "{:<9}{:>8}{:>7}{:>7}{:>8}{:>7}{:>8}{:>6}{:>7}{:>7}{:>6}\n",
        "level",
        "received",
        "online",
        "onl%",
        "resolvd",
        "early",
        "on time",
        "late",
        "ontm%",
        "in prg",
        "wait"
    ));
    let levels = df.column("level")?.str()?;
    for row in 0..df.height() {
        out.push_str(&format!(
            "{:<9}{:>8}{:>7}{:>7}{:>8}{:>7}{:>8}{:>6}{:>7}{:>7}{:>6}\n",
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// One line per level, within 80 columns, the figures where the header says.
    #[test]
    fn the_level_table_fits_a_terminal() {
        let t = crate::kpi::tables_of(
            &[
                json!({"MaHoSo":"A","MaDonVi":"X","TrangThaiHoSo":"9","KenhThucHien":2,"NgayTiepNhan":"20240701080000",
                     "NgayKetThucXuLy":"20240702080000","NgayHenTra":"20240705170000","NgayCapNhat":"20240702090000"}),
            ],
            3,
        );
        let text = level_table(&t).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "2024-Q3 (decree09, 2024-06-15 … 2024-09-14)");
        assert_eq!(lines.len(), 6, "{text}");
        assert!(lines.iter().all(|l| l.chars().count() <= 80), "{text}");
        assert!(
            lines[4].starts_with("commune") && lines[4].contains("100.00"),
            "{text}"
        );
        assert!(
            lines[5].starts_with("all") && lines[5].split_whitespace().nth(1) == Some("1"),
            "{text}"
        );
    }
}

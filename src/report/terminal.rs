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

/// The column heads, with each column's least width (the figures of a province of ten million
/// cases are wider, and widen their column).
const HEADS: [(&str, usize); 11] = [
    ("level", 9),
    ("received", 8),
    ("online", 7),
    ("onl%", 7),
    ("resolvd", 8),
    ("early", 7),
    ("on time", 8),
    ("late", 6),
    ("ontm%", 7),
    ("in prg", 7),
    ("wait", 6),
];

/// One table: its title, the column heads, a line per level; every figure at least one space
/// from the one before.
fn table(title: &str, df: &polars::prelude::DataFrame) -> Result<String> {
    let levels = df.column("level")?.str()?;
    let mut rows = vec![HEADS.iter().map(|h| h.0.to_string()).collect::<Vec<_>>()];
    for row in 0..df.height() {
        rows.push(vec![
            levels.get(row).unwrap_or("?").to_string(),
            int(df, "received_new", row)?.to_string(),
            int(df, "received_online", row)?.to_string(),
            pct(df, "online_rate", row)?,
            int(df, "resolved_total", row)?.to_string(),
            int(df, "resolved_early", row)?.to_string(),
            int(df, "resolved_on_time", row)?.to_string(),
            int(df, "resolved_overdue", row)?.to_string(),
            pct(df, "on_time_rate", row)?,
            int(df, "in_progress_total", row)?.to_string(),
            int(df, "waiting_acceptance", row)?.to_string(),
        ]);
    }
    let widths: Vec<usize> = HEADS
        .iter()
        .enumerate()
        .map(|(c, (head, least))| {
            let widest = rows[1..]
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0);
            (*least).max(widest + 1).max(head.len())
        })
        .collect();
    let mut out = format!("{title}\n");
    for r in &rows {
        for (c, cell) in r.iter().enumerate() {
            let w = widths[c];
            match c {
                0 => out.push_str(&format!("{cell:<w$}")),
                _ => out.push_str(&format!("{cell:>w$}")),
            }
        }
        out.push('\n');
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

    /// A province of millions keeps its figures apart: every column at least a space wide of
    /// the one before, whatever the number of digits.
    #[test]
    fn figures_of_millions_stay_apart() {
        use polars::prelude::*;
        let big = |v: i64| Column::new("x".into(), vec![v, 7]);
        let mut cols = vec![Column::new("level".into(), vec!["district", "commune"])];
        for (name, v) in [
            ("received_new", 4_431_000),
            ("received_online", 2_875_362),
            ("resolved_total", 38_969_702),
            ("resolved_early", 35_114_025),
            ("resolved_on_time", 1_402_506),
            ("resolved_overdue", 137_172),
            ("in_progress_total", 472_206),
            ("waiting_acceptance", 72_240),
        ] {
            cols.push(big(v).with_name(name.into()));
        }
        for name in ["online_rate", "on_time_rate"] {
            cols.push(Column::new(name.into(), vec![Some(0.6489), None]));
        }
        let df = DataFrame::new(2, cols).unwrap();
        let text = table("t", &df).unwrap();
        let lines: Vec<Vec<&str>> = text
            .lines()
            .skip(2)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines[0],
            [
                "district", "4431000", "2875362", "64.89", "38969702", "35114025", "1402506",
                "137172", "64.89", "472206", "72240"
            ],
            "{text}"
        );
        assert_eq!(lines[1][1], "7", "{text}");
        assert_eq!(lines[1][3], "-", "{text}");
        // Small figures keep the 80-column layout.
        let small = text.lines().nth(1).unwrap();
        assert!(small.starts_with("level    received"), "{text}");
    }
}

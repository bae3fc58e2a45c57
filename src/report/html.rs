//! The period's report for people, `reports/period=<id>/index.html`: one self-contained page
//! (no network needed), in Vietnamese with English subtitles, that prints on A4 — the official
//! table per level, charts, the procedure catalog and the official table per agency.

use std::fmt::Write as _;

use html_escape::encode_text as esc;
use polars::prelude::*;

use super::chart::bars;
use super::format::{int, level_vi, num, percent, rate, truncate};
use super::table::{official_cells, official_header};
use crate::domain::period::Convention;
use crate::domain::rules::{measure_names, rates, CATALOG_MEASURES};
use crate::domain::Level;
use crate::error::Result;
use crate::kpi::tables::level_rank;
use crate::kpi::KpiTables;

const STYLE: &str = r#"
@page { size: A4; margin: 12mm 10mm; }
* { box-sizing: border-box; }
body { font-family: "Times New Roman", "DejaVu Serif", serif; font-size: 11pt; color: #111; margin: 0 auto; max-width: 277mm; padding: 8px; }
h1 { font-size: 16pt; margin: 0 0 2px; text-transform: uppercase; text-align: center; }
h2 { font-size: 13pt; margin: 18px 0 6px; border-bottom: 1px solid #444; }
small { display: block; font-size: 7.5pt; color: #555; font-weight: normal; font-style: italic; }
.en { text-align: center; color: #555; font-style: italic; margin: 0 0 8px; }
.meta { text-align: center; font-size: 10pt; margin: 0 0 10px; }
table { border-collapse: collapse; width: 100%; font-size: 8.5pt; page-break-inside: auto; }
thead { display: table-header-group; }
tr { page-break-inside: avoid; }
th, td { border: 1px solid #777; padding: 2px 3px; }
th { background: #eee; font-weight: bold; text-align: center; vertical-align: middle; }
th i { display: block; font-style: normal; font-weight: normal; font-size: 7pt; }
td { text-align: right; font-variant-numeric: tabular-nums; }
td.name { text-align: left; }
tr.all td { font-weight: bold; background: #f5f5f5; }
tr.lvl td { background: #fafafa; font-weight: bold; text-align: left; }
.charts { display: flex; flex-wrap: wrap; gap: 8px; page-break-inside: avoid; }
figure { margin: 0; }
svg .t { font: bold 11px sans-serif; } svg .s { font: italic 9px sans-serif; fill: #555; }
svg .l, svg .v { font: 10px sans-serif; } svg .b { fill: #2b6ca3; }
footer { margin-top: 14px; font-size: 8.5pt; color: #444; }
@media print { body { padding: 0; } h2 { page-break-after: avoid; } .agencies { page-break-before: always; } }
"#;

/// The report of one period: self-contained HTML.
pub fn html(t: &KpiTables, run_id: &str, generated_at: &str) -> Result<String> {
    let per_agency = agencies(t)?;
    let mut h = String::with_capacity(64 * 1024);
    header(&mut h, t, run_id, generated_at);
    by_level(&mut h, &t.by_level, None)?;
    if t.restated.differs(&t.by_level) {
        by_level(&mut h, &t.restated.by_level, Some(t.restated.to))?;
    }
    charts(&mut h, &t.by_level, &per_agency)?;
    catalog(&mut h, &t.catalog)?;
    by_agency(&mut h, &per_agency)?;
    let _ = write!(
        h,
        "<footer>Số liệu tính từng hồ sơ theo định nghĩa của phần mềm motcua (kpi.md); cột (3)–(13) theo mẫu II.06a Thông tư 01/2020/TT-VPCP. <i>Figures computed case by case as defined in kpi.md; columns (3)–(13) follow form II.06a of Circular 01/2020/TT-VPCP.</i></footer></body></html>"
    );
    Ok(h)
}

/// The document head and the title block: period, bounds, convention, run.
fn header(h: &mut String, t: &KpiTables, run_id: &str, generated_at: &str) {
    let p = &t.period;
    let convention = match p.convention {
        Convention::Decree09 => "quy ước Nghị định 09/2019/NĐ-CP (từ ngày 15 tháng trước đến ngày 14) · Decree 09 cut-off",
        Convention::Calendar => "theo lịch · calendar periods",
    };
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"vi\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>Tình hình giải quyết TTHC {id}</title><style>{STYLE}</style></head><body>",
        id = p.id
    );
    let _ = write!(
        h,
        "<header><h1>Tình hình, kết quả giải quyết thủ tục hành chính</h1><p class=\"en\">Administrative-procedure cases received and resolved</p><p class=\"meta\">Kỳ báo cáo <i>(period)</i> <b id=\"period\">{id}</b>: từ ngày <b id=\"start\">{s}</b> đến ngày <b id=\"end\">{e}</b> — {conv}<br>Mã lượt tính <i>(run id)</i>: <code id=\"run\">{run}</code> · Lập lúc <i>(generated)</i>: {gen}</p></header>",
        id = p.id,
        s = p.start.format("%d/%m/%Y"),
        e = p.end.format("%d/%m/%Y"),
        conv = convention,
        run = esc(run_id),
        gen = esc(generated_at)
    );
}

/// The level of row `row` of a table with a `level` column.
fn level_at(df: &DataFrame, row: usize) -> Result<Level> {
    Ok(df
        .column("level")?
        .str()?
        .get(row)
        .and_then(Level::parse)
        .unwrap_or(Level::Unknown))
}

/// The official table per level, as was, or restated to the agencies of a day.
fn by_level(h: &mut String, df: &DataFrame, restated_to: Option<chrono::NaiveDate>) -> Result<()> {
    match restated_to {
        None => h.push_str("<section><h2>Theo cấp <small>by level, as the agencies were in the period</small></h2><table id=\"by-level\">"),
        Some(to) => {
            let _ = write!(
                h,
                "<section><h2>Theo cấp, quy đổi theo cơ cấu tổ chức ngày {vi} <small>by level, restated to the agencies of {en}: each agency's cases under the agency that took over from it</small></h2><table id=\"by-level-restated\">",
                vi = to.format("%d/%m/%Y"),
                en = to
            );
        }
    }
    h.push_str(&official_header("Cấp", "level"));
    h.push_str("<tbody>");
    // Restated cells are told apart by their row key: `restated.commune`.
    let key = |level: Level| match restated_to {
        None => level.as_str().to_string(),
        Some(_) => format!("restated.{level}"),
    };
    for row in 0..df.height() {
        let level = level_at(df, row)?;
        let class = if level == Level::All {
            " class=\"all\""
        } else {
            ""
        };
        let _ = write!(
            h,
            "<tr{class}><td class=\"name\">{}<small>{}</small></td>{}</tr>",
            level_vi(level),
            level,
            official_cells(df, row, &key(level))?
        );
    }
    h.push_str("</tbody></table></section>");
    Ok(())
}

/// Online and on-time rates per level, and the agencies with the most overdue cases.
fn charts(h: &mut String, df: &DataFrame, per_agency: &[AgencyRow]) -> Result<()> {
    let mut online = vec![];
    let mut on_time = vec![];
    for row in 0..df.height() {
        let level = level_at(df, row)?;
        let label = format!("{} ({level})", level_vi(level));
        let o = rate(df, "online_rate", row)?;
        online.push((label.clone(), o.unwrap_or(0.0), percent(o)));
        let r = rate(df, "on_time_rate", row)?;
        on_time.push((label, r.unwrap_or(0.0), percent(r)));
    }
    let mut overdue: Vec<(String, f64, String)> = per_agency
        .iter()
        .filter(|a| a.overdue > 0)
        .map(|a| (truncate(&a.name, 34), a.overdue as f64, num(a.overdue)))
        .collect();
    overdue.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    overdue.truncate(10);
    let max_overdue = overdue.first().map(|o| o.1).unwrap_or(0.0);
    h.push_str("<section><h2>Biểu đồ <small>charts</small></h2><div class=\"charts\">");
    h.push_str(&bars(
        "Tỷ lệ hồ sơ trực tuyến theo cấp",
        "online rate per level",
        &online,
        1.0,
    ));
    h.push_str(&bars(
        "Tỷ lệ giải quyết đúng hạn theo cấp",
        "on-time rate per level",
        &on_time,
        1.0,
    ));
    h.push_str(&bars(
        "Cơ quan có nhiều hồ sơ quá hạn nhất",
        "agencies with the most overdue cases (resolved late + in progress overdue)",
        &overdue,
        max_overdue,
    ));
    h.push_str("</div></section>");
    Ok(())
}

/// The procedure catalog per level.
fn catalog(h: &mut String, c: &DataFrame) -> Result<()> {
    h.push_str("<section><h2>Thủ tục hành chính <small>procedure catalog</small></h2><table id=\"catalog\"><thead><tr><th>Cấp<small>level</small></th><th>Số thủ tục<small>procedures</small></th><th>Một cửa<small>one-stop</small></th><th>Liên thông<small>inter-agency</small></th><th>DVC toàn trình<small>full online</small></th><th>DVC một phần<small>partly online</small></th><th>Có phát sinh hồ sơ<small>with cases</small></th><th>Tỷ lệ DVC trực tuyến<small>online rate</small></th></tr></thead><tbody>");
    for row in 0..c.height() {
        let level = level_at(c, row)?;
        let class = if level == Level::All {
            " class=\"all\""
        } else {
            ""
        };
        let _ = write!(
            h,
            "<tr{class}><td class=\"name\">{}<small>{level}</small></td>",
            level_vi(level)
        );
        for m in CATALOG_MEASURES {
            let v = int(c, m, row)?;
            let _ = write!(
                h,
                "<td data-row=\"{level}\" data-m=\"catalog.{m}\" data-v=\"{v}\">{}</td>",
                num(v)
            );
        }
        let _ = write!(h, "<td>{}</td></tr>", percent(rate(c, "online_rate", row)?));
    }
    h.push_str("</tbody></table></section>");
    Ok(())
}

/// The official table per agency, grouped by level.
fn by_agency(h: &mut String, per_agency: &[AgencyRow]) -> Result<()> {
    h.push_str("<section class=\"agencies\"><h2>Theo cơ quan <small>by agency</small></h2><table id=\"by-agency\">");
    h.push_str(&official_header("Cơ quan", "agency"));
    h.push_str("<tbody>");
    let mut current = None;
    for a in per_agency {
        if current != Some(a.level) {
            current = Some(a.level);
            let _ = write!(
                h,
                "<tr class=\"lvl\"><td colspan=\"17\">{} <small>{}</small></td></tr>",
                level_vi(a.level),
                a.level
            );
        }
        let _ = write!(
            h,
            "<tr><td class=\"name\">{}<small>{}</small></td>{}</tr>",
            esc(&a.name),
            esc(&a.code),
            official_cells(&a.frame, 0, &a.code)?
        );
    }
    h.push_str("</tbody></table></section>");
    Ok(())
}

struct AgencyRow {
    level: Level,
    code: String,
    name: String,
    overdue: i64,
    /// One row: the agency's measures summed over its fields, with its rates.
    frame: DataFrame,
}

/// `cases_by_agency` summed over fields: one row per agency, in level then code order.
fn agencies(t: &KpiTables) -> Result<Vec<AgencyRow>> {
    let names = measure_names();
    let sums: Vec<Expr> = names.iter().map(|m| col(*m).sum().alias(*m)).collect();
    let mut aggs = sums;
    aggs.push(col("agency_name").first().alias("agency_name"));
    aggs.push(col("level").first().alias("level"));
    let rank = level_rank();
    let mut select: Vec<Expr> = vec![col("level"), col("agency_code"), col("agency_name")];
    select.extend(names.iter().map(|m| col(*m)));
    select.extend(rates());
    let df = t
        .by_agency
        .clone()
        .lazy()
        .group_by([col("agency_code")])
        .agg(aggs)
        .sort_by_exprs([rank, col("agency_code")], SortMultipleOptions::default())
        .select(select)
        .collect()?;
    let mut out = vec![];
    for row in 0..df.height() {
        let one = df.slice(row as i64, 1);
        let code = one
            .column("agency_code")?
            .str()?
            .get(0)
            .unwrap_or("")
            .to_string();
        let name = one
            .column("agency_name")?
            .str()?
            .get(0)
            .map(str::to_string)
            .unwrap_or_else(|| code.clone());
        let level = one
            .column("level")?
            .str()?
            .get(0)
            .and_then(Level::parse)
            .unwrap_or(Level::Unknown);
        let overdue = int(&one, "resolved_overdue", 0)? + int(&one, "in_progress_overdue", 0)?;
        out.push(AgencyRow {
            level,
            code,
            name,
            overdue,
            frame: one,
        });
    }
    Ok(out)
}

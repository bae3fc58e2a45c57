//! Figures for people: the by-level table for an 80-column terminal, and the period's report
//! `reports/period=<id>/index.html` — one self-contained page (no network needed), in
//! Vietnamese with English subtitles, that prints on A4.

use std::fmt::Write as _;

use anyhow::Result;
use html_escape::encode_text as esc;
use polars::prelude::*;

use crate::kpi::KpiTables;
use crate::period::Convention;

fn int(df: &DataFrame, name: &str, row: usize) -> Result<i64> {
    Ok(df.column(name)?.i64()?.get(row).unwrap_or(0))
}

fn rate(df: &DataFrame, name: &str, row: usize) -> Result<Option<f64>> {
    Ok(df.column(name)?.f64()?.get(row))
}

fn pct(df: &DataFrame, name: &str, row: usize) -> Result<String> {
    Ok(match rate(df, name, row)? {
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

// ---------------------------------------------------------------------------------------------
// The HTML report
// ---------------------------------------------------------------------------------------------

/// Vietnamese thousands: 24.836.
fn num(n: i64) -> String {
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('.');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// 86,56 %
fn percent(r: Option<f64>) -> String {
    match r {
        Some(r) => format!("{:.2} %", r * 100.0).replace('.', ","),
        None => "–".into(),
    }
}

fn level_vi(level: &str) -> &'static str {
    match level {
        "province" => "Cấp tỉnh",
        "district" => "Cấp huyện",
        "commune" => "Cấp xã",
        "unknown" => "Không xác định",
        "all" => "Toàn tỉnh",
        _ => "?",
    }
}

/// The columns of the official table: (measure, Vietnamese, English, official column number).
const OFFICIAL: [(&str, &str, &str, &str); 13] = [
    ("received_total", "Tổng số", "total", "3"),
    ("received_online", "Trực tuyến", "online", "4"),
    (
        "received_offline",
        "Trực tiếp, BCCI",
        "in person, post",
        "5",
    ),
    ("carried_over", "Kỳ trước chuyển qua", "carried over", "6"),
    ("resolved_total", "Tổng số", "total", "7"),
    ("resolved_early", "Trước hạn", "early", "8"),
    ("resolved_on_time", "Đúng hạn", "on time", "9"),
    ("resolved_overdue", "Quá hạn", "overdue", "10"),
    ("in_progress_total", "Tổng số", "total", "11"),
    ("in_progress_within", "Trong hạn", "within", "12"),
    ("in_progress_overdue", "Quá hạn", "overdue", "13"),
    ("waiting_acceptance", "Chờ tiếp nhận", "waiting", "–"),
    ("refused", "Từ chối", "refused", "–"),
];

const RATES: [(&str, &str, &str); 3] = [
    ("online_rate", "Tỷ lệ trực tuyến", "online rate"),
    ("on_time_rate", "Tỷ lệ đúng hạn", "on-time rate"),
    (
        "progress_rate_766",
        "Chỉ số tiến độ (QĐ 766)",
        "progress, Decision 766",
    ),
];

fn official_header(first: &str, first_en: &str) -> String {
    let mut h = String::from("<thead><tr>");
    let _ = write!(h, "<th rowspan=\"2\">{first}<small>{first_en}</small></th>");
    for (vi, en, span) in [
        ("Số hồ sơ nhận giải quyết", "received", 4),
        ("Đã giải quyết", "resolved", 4),
        ("Đang giải quyết", "in progress", 3),
        ("Khác", "other", 2),
    ] {
        let _ = write!(h, "<th colspan=\"{span}\">{vi}<small>{en}</small></th>");
    }
    let _ = write!(
        h,
        "<th colspan=\"3\">Tỷ lệ<small>rates</small></th></tr><tr>"
    );
    for (_, vi, en, col) in OFFICIAL {
        let _ = write!(h, "<th>{vi}<small>{en}</small><i>({col})</i></th>");
    }
    for (_, vi, en) in RATES {
        let _ = write!(h, "<th>{vi}<small>{en}</small></th>");
    }
    h.push_str("</tr></thead>");
    h
}

fn official_cells(df: &DataFrame, row: usize, key: &str) -> Result<String> {
    let mut s = String::new();
    for (m, _, _, _) in OFFICIAL {
        let v = int(df, m, row)?;
        let _ = write!(
            s,
            "<td data-row=\"{}\" data-m=\"{m}\" data-v=\"{v}\">{}</td>",
            esc(key),
            num(v)
        );
    }
    for (m, _, _) in RATES {
        let r = rate(df, m, row)?;
        let v = r.map(|r| format!("{r:.6}")).unwrap_or_default();
        let _ = write!(
            s,
            "<td data-row=\"{}\" data-m=\"{m}\" data-v=\"{v}\">{}</td>",
            esc(key),
            percent(r)
        );
    }
    Ok(s)
}

/// A horizontal bar chart as inline SVG: (label, value, shown text), values in [0, max].
fn bars(title: &str, subtitle: &str, items: &[(String, f64, String)], max: f64) -> String {
    let row = 22.0;
    let label_w = 210.0;
    let bar_w = 380.0;
    let h = row * items.len() as f64 + 34.0;
    let mut s = format!(
        "<figure><svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 680 {h}\" width=\"680\" height=\"{h}\" role=\"img\" aria-label=\"{}\">",
        esc(title)
    );
    let _ = write!(
        s,
        "<text x=\"0\" y=\"14\" class=\"t\">{}</text><text x=\"0\" y=\"28\" class=\"s\">{}</text>",
        esc(title),
        esc(subtitle)
    );
    for (i, (label, v, shown)) in items.iter().enumerate() {
        let y = 36.0 + i as f64 * row;
        let w = if max > 0.0 {
            (v / max).clamp(0.0, 1.0) * bar_w
        } else {
            0.0
        };
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" class=\"l\" text-anchor=\"end\">{}</text><rect x=\"{}\" y=\"{}\" width=\"{w:.1}\" height=\"{}\" class=\"b\"/><text x=\"{}\" y=\"{}\" class=\"v\">{}</text>",
            label_w - 6.0,
            y + 13.0,
            esc(label),
            label_w,
            y + 2.0,
            row - 6.0,
            label_w + w + 5.0,
            y + 13.0,
            esc(shown)
        );
    }
    s.push_str("</svg></figure>");
    s
}

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
    let p = &t.period;
    let convention = match p.convention {
        Convention::Decree09 => "quy ước Nghị định 09/2019/NĐ-CP (từ ngày 15 tháng trước đến ngày 14) · Decree 09 cut-off",
        Convention::Calendar => "theo lịch · calendar periods",
    };
    let mut h = String::with_capacity(64 * 1024);
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

    // By level
    let df = &t.by_level;
    let levels = df.column("level")?.str()?;
    h.push_str("<section><h2>Theo cấp <small>by level</small></h2><table id=\"by-level\">");
    h.push_str(&official_header("Cấp", "level"));
    h.push_str("<tbody>");
    for row in 0..df.height() {
        let level = levels.get(row).unwrap_or("?");
        let class = if level == "all" { " class=\"all\"" } else { "" };
        let _ = write!(
            h,
            "<tr{class}><td class=\"name\">{}<small>{}</small></td>{}</tr>",
            level_vi(level),
            level,
            official_cells(df, row, level)?
        );
    }
    h.push_str("</tbody></table></section>");

    // Charts
    let mut online = vec![];
    let mut on_time = vec![];
    for row in 0..df.height() {
        let level = levels.get(row).unwrap_or("?");
        let label = format!("{} ({level})", level_vi(level));
        let o = rate(df, "online_rate", row)?;
        online.push((label.clone(), o.unwrap_or(0.0), percent(o)));
        let r = rate(df, "on_time_rate", row)?;
        on_time.push((label, r.unwrap_or(0.0), percent(r)));
    }
    let per_agency = agencies(t)?;
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

    // Catalog
    let c = &t.catalog;
    let cl = c.column("level")?.str()?;
    h.push_str("<section><h2>Thủ tục hành chính <small>procedure catalog</small></h2><table id=\"catalog\"><thead><tr><th>Cấp<small>level</small></th><th>Số thủ tục<small>procedures</small></th><th>Một cửa<small>one-stop</small></th><th>Liên thông<small>inter-agency</small></th><th>DVC toàn trình<small>full online</small></th><th>DVC một phần<small>partly online</small></th><th>Có phát sinh hồ sơ<small>with cases</small></th><th>Tỷ lệ DVC trực tuyến<small>online rate</small></th></tr></thead><tbody>");
    for row in 0..c.height() {
        let level = cl.get(row).unwrap_or("?");
        let class = if level == "all" { " class=\"all\"" } else { "" };
        let _ = write!(
            h,
            "<tr{class}><td class=\"name\">{}<small>{level}</small></td>",
            level_vi(level)
        );
        for m in crate::rules::CATALOG_MEASURES {
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

    // By agency
    h.push_str("<section class=\"agencies\"><h2>Theo cơ quan <small>by agency</small></h2><table id=\"by-agency\">");
    h.push_str(&official_header("Cơ quan", "agency"));
    h.push_str("<tbody>");
    let mut current = String::new();
    for a in &per_agency {
        if a.level != current {
            current = a.level.clone();
            let _ = write!(
                h,
                "<tr class=\"lvl\"><td colspan=\"17\">{} <small>{}</small></td></tr>",
                level_vi(&current),
                esc(&current)
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
    let _ = write!(
        h,
        "<footer>Số liệu tính từng hồ sơ theo định nghĩa của phần mềm motcua (kpi.md); cột (3)–(13) theo mẫu II.06a Thông tư 01/2020/TT-VPCP. <i>Figures computed case by case as defined in kpi.md; columns (3)–(13) follow form II.06a of Circular 01/2020/TT-VPCP.</i></footer></body></html>"
    );
    Ok(h)
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

struct AgencyRow {
    level: String,
    code: String,
    name: String,
    overdue: i64,
    /// One row: the agency's measures summed over its fields, with its rates.
    frame: DataFrame,
}

/// `cases_by_agency` summed over fields: one row per agency, in level then code order.
fn agencies(t: &KpiTables) -> Result<Vec<AgencyRow>> {
    let names = crate::rules::measure_names();
    let sums: Vec<Expr> = names.iter().map(|m| col(*m).sum().alias(*m)).collect();
    let mut aggs = sums;
    aggs.push(col("agency_name").first().alias("agency_name"));
    aggs.push(col("level").first().alias("level"));
    let rank = crate::kpi::level_rank();
    let mut select: Vec<Expr> = vec![col("level"), col("agency_code"), col("agency_name")];
    select.extend(names.iter().map(|m| col(*m)));
    select.extend(crate::rules::rates());
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
            .unwrap_or("unknown")
            .to_string();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vietnamese_number_shapes() {
        assert_eq!(num(106071), "106.071");
        assert_eq!(num(433), "433");
        assert_eq!(num(1000), "1.000");
        assert_eq!(percent(Some(0.865566)), "86,56 %");
        assert_eq!(percent(None), "–");
    }
}

//! The official table of form II.06a (Circular 01/2020/TT-VPCP): its columns (3)–(13), the
//! waiting and refused counts, and the rates, with Vietnamese and English headings.

use std::fmt::Write as _;

use html_escape::encode_text as esc;
use polars::prelude::*;

use super::format::{int, num, percent, rate};
use crate::error::Result;

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

pub fn official_header(first: &str, first_en: &str) -> String {
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

pub fn official_cells(df: &DataFrame, row: usize, key: &str) -> Result<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_carries_every_official_column_with_its_value() {
        let mut cols: Vec<Column> = OFFICIAL
            .iter()
            .enumerate()
            .map(|(i, (m, ..))| Column::new((*m).into(), [1000 * i as i64]))
            .collect();
        cols.extend(
            RATES
                .iter()
                .map(|(m, ..)| Column::new((*m).into(), [Some(0.5f64)])),
        );
        let df = DataFrame::new(1, cols).unwrap();
        let cells = official_cells(&df, 0, "X<1>").unwrap();
        assert_eq!(cells.matches("<td").count(), OFFICIAL.len() + RATES.len());
        assert!(
            cells.contains(
                r#"data-row="X&lt;1&gt;" data-m="received_online" data-v="1000">1.000</td>"#
            ),
            "{cells}"
        );
        assert!(
            cells.contains(r#"data-m="on_time_rate" data-v="0.500000">50,00 %</td>"#),
            "{cells}"
        );
        let head = official_header("Cấp", "level");
        assert_eq!(head.matches("<i>(").count(), OFFICIAL.len());
    }
}

//! Numbers and names as people read them: Vietnamese thousands and percentages, level names.

use polars::prelude::*;

use crate::domain::Level;
use crate::error::Result;

pub fn int(df: &DataFrame, name: &str, row: usize) -> Result<i64> {
    Ok(df.column(name)?.i64()?.get(row).unwrap_or(0))
}

pub fn rate(df: &DataFrame, name: &str, row: usize) -> Result<Option<f64>> {
    Ok(df.column(name)?.f64()?.get(row))
}

pub fn pct(df: &DataFrame, name: &str, row: usize) -> Result<String> {
    Ok(match rate(df, name, row)? {
        Some(r) => format!("{:.2}", r * 100.0),
        None => "-".into(),
    })
}

/// Vietnamese thousands: 24.836.
pub fn num(n: i64) -> String {
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
pub fn percent(r: Option<f64>) -> String {
    match r {
        Some(r) => format!("{:.2} %", r * 100.0).replace('.', ","),
        None => "–".into(),
    }
}

/// A level's Vietnamese name.
pub fn level_vi(level: Level) -> &'static str {
    match level {
        Level::Province => "Cấp tỉnh",
        Level::District => "Cấp huyện",
        Level::Commune => "Cấp xã",
        Level::Unknown => "Không xác định",
        Level::All => "Toàn tỉnh",
    }
}

pub fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vietnamese_number_shapes() {
        assert_eq!(num(106071), "106.071");
        assert_eq!(num(433), "433");
        assert_eq!(num(1000), "1.000");
        assert_eq!(num(-1234567), "-1.234.567");
        assert_eq!(percent(Some(0.865566)), "86,56 %");
        assert_eq!(percent(None), "–");
        assert_eq!(truncate("Ủy ban nhân dân xã", 8), "Ủy ban …");
        assert_eq!(truncate("Sở", 8), "Sở");
        assert_eq!(level_vi(Level::All), "Toàn tỉnh");
    }

    #[test]
    fn cells_read_counts_and_rates() {
        let df = df!("n" => [Some(5i64), None], "r" => [Some(0.5f64), None]).unwrap();
        assert_eq!(int(&df, "n", 0).unwrap(), 5);
        assert_eq!(int(&df, "n", 1).unwrap(), 0);
        assert_eq!(pct(&df, "r", 0).unwrap(), "50.00");
        assert_eq!(pct(&df, "r", 1).unwrap(), "-");
        assert!(int(&df, "missing", 0).is_err());
    }
}

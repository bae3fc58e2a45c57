//! Vietnam time: the source writes local times (`Asia/Ho_Chi_Minh`, UTC+7, no daylight
//! saving) in several shapes; motcua keeps instants as microseconds since the epoch (UTC) and
//! the terms of `kpi.md` as local dates.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Asia::Ho_Chi_Minh;

/// Parses `yyyyMMddHHmmss`, `dd/MM/yyyy HH:mm:ss`, `dd/MM/yyyy` (local) or ISO 8601 with an offset.
pub fn parse_instant(s: &str) -> Option<i64> {
    let local = |ndt: NaiveDateTime| {
        Ho_Chi_Minh
            .from_local_datetime(&ndt)
            .single()
            .map(|t| t.timestamp_micros())
    };
    if s.len() == 14 && s.bytes().all(|b| b.is_ascii_digit()) {
        return NaiveDateTime::parse_from_str(s, "%Y%m%d%H%M%S")
            .ok()
            .and_then(local);
    }
    if s.len() == 19 && s.as_bytes()[2] == b'/' {
        return NaiveDateTime::parse_from_str(s, "%d/%m/%Y %H:%M:%S")
            .ok()
            .and_then(local);
    }
    if s.len() == 10 && s.as_bytes()[2] == b'/' {
        return NaiveDate::parse_from_str(s, "%d/%m/%Y")
            .ok()
            .and_then(|d| local(d.and_hms_opt(0, 0, 0)?));
    }
    if s.len() >= 20 && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T' {
        return DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_micros());
    }
    None
}

/// A local date in any shape the source writes dates: `yyyyMMdd`, `yyyy-MM-dd`, `dd/MM/yyyy`,
/// or any date-time shape of [`parse_instant`] (its Vietnam-local date).
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
        return NaiveDate::parse_from_str(s, "%Y%m%d").ok();
    }
    if s.len() == 10 && s.as_bytes()[4] == b'-' {
        return NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
    }
    parse_instant(s).map(local_date)
}

/// An instant (epoch microseconds) as a date-time, clamped to the range chrono represents
/// (±262,000 years: every instant motcua reads or computes lies far inside it).
fn utc(micros: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or(if micros < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// The Vietnam-local calendar date of an instant.
pub fn local_date(micros: i64) -> NaiveDate {
    utc(micros).with_timezone(&Ho_Chi_Minh).date_naive()
}

/// An instant as the source's `yyyyMMddHHmmss` in Vietnam time (for `updated_from`).
pub fn source_timestamp(micros: i64) -> String {
    utc(micros)
        .with_timezone(&Ho_Chi_Minh)
        .format("%Y%m%d%H%M%S")
        .to_string()
}

/// Whether chrono represents the instant `micros` (a value read back from state files is
/// checked with this before it is used).
pub fn in_range(micros: i64) -> bool {
    DateTime::<Utc>::from_timestamp_micros(micros).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_date_shape_reads_in_vietnam_time() {
        let want = parse_instant("20240915020000").unwrap();
        assert_eq!(parse_instant("2024-09-14T19:00:00Z"), Some(want));
        assert_eq!(parse_instant("2024-09-15T02:00:00+07:00"), Some(want));
        assert_eq!(parse_instant("15/09/2024 02:00:00"), Some(want));
        assert_eq!(local_date(want).to_string(), "2024-09-15");
        assert_eq!(
            local_date(parse_instant("15/09/2024").unwrap()).to_string(),
            "2024-09-15"
        );
        assert_eq!(source_timestamp(want), "20240915020000");
        for bad in [
            "2024/08/01",
            "32/07/2024 09:00:00",
            "20241301000000",
            "yesterday",
            "2024-09-14",
            "",
        ] {
            assert_eq!(parse_instant(bad), None, "{bad}");
        }
    }

    #[test]
    fn dates_in_every_shape() {
        let want = NaiveDate::from_ymd_opt(2025, 7, 1);
        for s in [
            "20250701",
            "2025-07-01",
            "01/07/2025",
            "20250701083000",
            "2025-06-30T20:00:00Z",
        ] {
            assert_eq!(parse_date(s), want, "{s}");
        }
        for bad in ["20251301", "2025-13-01", "July", "2025070", ""] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn instants_out_of_range_never_panic() {
        assert!(!in_range(i64::MAX) && !in_range(i64::MIN));
        assert!(in_range(0));
        assert_eq!(source_timestamp(i64::MAX), source_timestamp(i64::MAX - 1));
        assert!(local_date(i64::MIN) < local_date(0));
    }
}

//! Vietnam time: the source writes local times (`Asia/Ho_Chi_Minh`, UTC+7, no daylight
//! saving) in several shapes; motcua keeps instants as microseconds since the epoch (UTC) and
//! the terms of `kpi.md` as local dates.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Asia::Ho_Chi_Minh;

/// Parses `yyyyMMddHHmmss`, `dd/MM/yyyy HH:mm:ss`, `dd/MM/yyyy` (local) or ISO 8601 with an offset.
pub fn parse_instant(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() == 14 && b.iter().all(u8::is_ascii_digit) {
        // yyyyMMddHHmmss
        let d = ymd(&b[0..4], &b[4..6], &b[6..8])?;
        return local(hms(d, &b[8..10], &b[10..12], &b[12..14])?);
    }
    if b.len() == 19 && b[2] == b'/' {
        // dd/MM/yyyy HH:mm:ss, by hand when laid out exactly so; chrono reads the rest.
        let exact = b[5] == b'/' && b[10] == b' ' && b[13] == b':' && b[16] == b':';
        let fast = || {
            hms(
                ymd(&b[6..10], &b[3..5], &b[0..2])?,
                &b[11..13],
                &b[14..16],
                &b[17..19],
            )
        };
        return exact
            .then(fast)
            .flatten()
            .or_else(|| NaiveDateTime::parse_from_str(s, "%d/%m/%Y %H:%M:%S").ok())
            .and_then(local);
    }
    if b.len() == 10 && b[2] == b'/' {
        // dd/MM/yyyy
        let fast = || ymd(&b[6..10], &b[3..5], &b[0..2]);
        return (b[5] == b'/')
            .then(fast)
            .flatten()
            .or_else(|| NaiveDate::parse_from_str(s, "%d/%m/%Y").ok())
            .and_then(|d| local(d.and_hms_opt(0, 0, 0)?));
    }
    if s.len() >= 20 && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T' {
        return DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_micros());
    }
    None
}

/// Vietnam's offset from UTC, in microseconds: UTC+7 since 13 June 1975, unchanged since (the
/// tz database's `Asia/Ho_Chi_Minh`).
const OFFSET: i64 = 7 * 3_600_000_000;

/// From 1976 on (in UTC and in local time alike), local time is UTC+7 and is converted
/// without looking the offset up in the tz database (a tenth of a pull's normalising did).
const FIXED_FROM: i64 = 189_302_400_000_000;

/// A Vietnam-local date-time as an instant; `None` for a local time that did not exist.
fn local(ndt: NaiveDateTime) -> Option<i64> {
    let naive = ndt.and_utc().timestamp_micros();
    if naive >= FIXED_FROM {
        return Some(naive - OFFSET);
    }
    Ho_Chi_Minh
        .from_local_datetime(&ndt)
        .single()
        .map(|t| t.timestamp_micros())
}

/// The number written by `digits`, all ASCII digits (parsed by hand: chrono's
/// `parse_from_str` reads its format string again for every value, a few percent of a pull).
fn number(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
    })
}

fn ymd(year: &[u8], month: &[u8], day: &[u8]) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(number(year)? as i32, number(month)?, number(day)?)
}

/// The date at `HH:mm:ss`; second 60 is a leap second, as chrono reads it.
fn hms(d: NaiveDate, h: &[u8], m: &[u8], s: &[u8]) -> Option<NaiveDateTime> {
    match number(s)? {
        60 => d.and_hms_milli_opt(number(h)?, number(m)?, 59, 1_000),
        s => d.and_hms_opt(number(h)?, number(m)?, s),
    }
}

/// A local date in any shape the source writes dates: `yyyyMMdd`, `yyyy-MM-dd`, `dd/MM/yyyy`,
/// or any date-time shape of [`parse_instant`] (its Vietnam-local date).
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() == 8 && b.iter().all(u8::is_ascii_digit) {
        // yyyyMMdd
        return ymd(&b[0..4], &b[4..6], &b[6..8]);
    }
    if b.len() == 10 && b[4] == b'-' {
        // yyyy-MM-dd, by hand when laid out exactly so; chrono reads the rest.
        let fast = || ymd(&b[0..4], &b[5..7], &b[8..10]);
        return (b[7] == b'-')
            .then(fast)
            .flatten()
            .or_else(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok());
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
    if micros >= FIXED_FROM {
        // Past chrono's range (never read from a source), the last date it has.
        return micros
            .checked_add(OFFSET)
            .and_then(DateTime::<Utc>::from_timestamp_micros)
            .map_or(NaiveDate::MAX, |t| t.date_naive());
    }
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

    /// The hand parsers read exactly what chrono's `parse_from_str` read before them (only
    /// on all-digit values, for the compact shapes), on valid and invalid values alike.
    #[test]
    fn the_hand_parsers_agree_with_chrono() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let pad = |v: u64, w: usize| format!("{v:0w$}");
        for _ in 0..20_000 {
            let (y, mo, d) = (1990 + next(50), next(14), next(33));
            let (h, mi, s) = (next(26), next(62), next(62));
            let mut compact = format!(
                "{}{}{}{}{}{}",
                pad(y, 4),
                pad(mo, 2),
                pad(d, 2),
                pad(h, 2),
                pad(mi, 2),
                pad(s, 2)
            );
            if next(10) == 0 {
                let i = next(14) as usize;
                compact.replace_range(i..i + 1, ["x", " ", "-", "+"][next(4) as usize]);
            }
            let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
            let chrono = NaiveDateTime::parse_from_str(&compact, "%Y%m%d%H%M%S")
                .ok()
                .filter(|_| digits(&compact));
            let local = |t: NaiveDateTime| {
                Ho_Chi_Minh
                    .from_local_datetime(&t)
                    .single()
                    .map(|t| t.timestamp_micros())
            };
            assert_eq!(parse_instant(&compact), chrono.and_then(local), "{compact}");
            let slashed = format!(
                "{}/{}/{} {}:{}:{}",
                pad(d, 2),
                pad(mo, 2),
                pad(y, 4),
                pad(h, 2),
                pad(mi, 2),
                pad(s, 2)
            );
            let chrono = NaiveDateTime::parse_from_str(&slashed, "%d/%m/%Y %H:%M:%S").ok();
            assert_eq!(parse_instant(&slashed), chrono.and_then(local), "{slashed}");
            let day = &compact[..8];
            assert_eq!(
                parse_date(day),
                NaiveDate::parse_from_str(day, "%Y%m%d")
                    .ok()
                    .filter(|_| digits(day)),
                "{day}"
            );
            let dashed = format!("{}-{}-{}", pad(y, 4), pad(mo, 2), pad(d, 2));
            assert_eq!(
                parse_date(&dashed),
                NaiveDate::parse_from_str(&dashed, "%Y-%m-%d").ok(),
                "{dashed}"
            );
        }
    }

    /// Read without the tz database from 1976 on, local times and local dates are what the
    /// database gives, on either side of that line and of midnight.
    #[test]
    fn vietnam_time_without_the_database_is_the_databases() {
        let by_db = |m: i64| utc(m).with_timezone(&Ho_Chi_Minh).date_naive();
        let hour = 3_600_000_000_i64;
        let mut m = FIXED_FROM - 400 * 24 * hour;
        while m < FIXED_FROM + 400 * 24 * hour {
            assert_eq!(local_date(m), by_db(m), "{m}");
            let naive = DateTime::<Utc>::from_timestamp_micros(m)
                .unwrap()
                .naive_utc();
            let db = Ho_Chi_Minh
                .from_local_datetime(&naive)
                .single()
                .map(|t| t.timestamp_micros());
            assert_eq!(local(naive), db, "{naive}");
            m += hour / 2 + 17_000_000;
        }
        for m in [0, 1_720_000_000_000_000, 4_102_444_800_000_000] {
            assert_eq!(local_date(m), by_db(m), "{m}");
        }
    }

    #[test]
    fn instants_out_of_range_never_panic() {
        assert!(!in_range(i64::MAX) && !in_range(i64::MIN));
        assert!(in_range(0));
        assert_eq!(source_timestamp(i64::MAX), source_timestamp(i64::MAX - 1));
        assert!(local_date(i64::MIN) < local_date(0));
        assert_eq!(local_date(i64::MAX), NaiveDate::MAX);
    }
}

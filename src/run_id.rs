//! Run ids: `20261128T023151123Z-89a3`, the run's start in UTC to the millisecond, then a random
//! suffix. They sort in start order (runs on one root never overlap: the lock), and the start
//! can be read back from them — staging uses it to know when a version of a case was pulled.

use chrono::{NaiveDateTime, Utc};

/// A new run id, started now.
pub fn new() -> String {
    let now = Utc::now();
    format!(
        "{}{:03}Z-{:04x}",
        now.format("%Y%m%dT%H%M%S"),
        now.timestamp_subsec_millis(),
        rand::random::<u16>()
    )
}

/// The start of run `id` in epoch microseconds; `None` when `id` is not a run id (ids of the
/// seconds-only form `20200101T000000Z-dead` are read too).
pub fn started_at(id: &str) -> Option<i64> {
    let secs = NaiveDateTime::parse_from_str(id.get(..15)?, "%Y%m%dT%H%M%S").ok()?;
    let millis = match id.get(15..18) {
        Some(m) if m.bytes().all(|b| b.is_ascii_digit()) => m.parse::<i64>().ok()?,
        _ => 0,
    };
    Some(secs.and_utc().timestamp_micros() + millis * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_id_holds_its_start() {
        let before = Utc::now().timestamp_micros() / 1000 * 1000;
        let id = new();
        let after = Utc::now().timestamp_micros();
        let at = started_at(&id).unwrap_or_default();
        assert!(at >= before && at <= after, "{id}");
        assert_eq!(
            started_at("20261128T023151123Z-89a3"),
            Some(1_795_833_111_123_000)
        );
        assert_eq!(
            started_at("20200101T000000Z-dead"),
            Some(1_577_836_800_000_000)
        );
        for odd in ["", "r1", "test-run", "2026-11-28T02:31:51Z"] {
            assert_eq!(started_at(odd), None, "{odd}");
        }
    }
}

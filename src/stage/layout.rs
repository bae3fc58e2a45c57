//! Where a case lives in `cases/` (see `schemas/staging-layout.md`).
//!
//! A case id says when the case was received: `MaHoSo` is `<agency>-YYMMDD-<serial>`
//! (Circular 01/2018/TT-VPCP; `source-api.md`'s example `000.00.15.H57-240615-0001`). The
//! staging table is partitioned by that date — `cases/case_month=2024-06/bucket=1/` holds the
//! cases whose id says 9–16 June 2024 — so a case stays in one partition for life (the id never
//! changes), and a night's changes, which are the day's new cases and the progress of recent
//! ones, fall in the few newest partitions: a nightly run rewrites those, not the province's
//! history. Ids without such a date go to sixteen `case_month=none` buckets by a hash of the id.

use std::fmt;

use chrono::{Datelike, NaiveDate};
use sha2::{Digest, Sha256};

/// Days of a month per bucket: buckets 0–3 hold days 1–8, 9–16, 17–24 and 25–31.
pub const DAYS_PER_BUCKET: u32 = 8;
/// Buckets of `case_month=none`, by a hash of the id.
pub const UNDATED_BUCKETS: u32 = 16;

/// One partition (one file) of the staging table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Partition {
    /// Cases whose id carries a date: its month and its bucket of days.
    Dated { year: i32, month: u32, bucket: u32 },
    /// Cases whose id carries none: a hash bucket.
    Undated { bucket: u32 },
}

impl Partition {
    /// The partition of a case id (trimmed, as staged): a pure function of the id.
    pub fn of(case_id: &str) -> Partition {
        match date_in_id(case_id) {
            Some(day) => Partition::Dated {
                year: day.year(),
                month: day.month(),
                bucket: (day.day() - 1) / DAYS_PER_BUCKET,
            },
            None => {
                let h = Sha256::digest(case_id.as_bytes());
                let n = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
                Partition::Undated {
                    bucket: n % UNDATED_BUCKETS,
                }
            }
        }
    }

    /// Its file under the output root.
    pub fn path(&self) -> String {
        format!("cases/{self}/part-0.parquet")
    }

    /// The partition whose file is at `path`, if `path` is one of the layout's files.
    pub fn from_path(path: &str) -> Option<Partition> {
        let rest = path.strip_prefix("cases/case_month=")?;
        let (month, rest) = rest.split_once("/bucket=")?;
        let bucket: u32 = rest.strip_suffix("/part-0.parquet")?.parse().ok()?;
        let p = match month {
            "none" => Partition::Undated { bucket },
            m => {
                let (y, mo) = m.split_once('-')?;
                Partition::Dated {
                    year: y.parse().ok()?,
                    month: mo.parse().ok()?,
                    bucket,
                }
            }
        };
        // Only the exact spelling this module writes.
        (p.path() == path).then_some(p)
    }
}

impl fmt::Display for Partition {
    /// `case_month=2024-06/bucket=1`, `case_month=none/bucket=07`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partition::Dated {
                year,
                month,
                bucket,
            } => write!(f, "case_month={year:04}-{month:02}/bucket={bucket}"),
            Partition::Undated { bucket } => write!(f, "case_month=none/bucket={bucket:02}"),
        }
    }
}

/// The date written in a case id: the first `-`-separated segment after the first that is six
/// digits `YYMMDD` forming a real date (years 2000–2099).
pub fn date_in_id(case_id: &str) -> Option<NaiveDate> {
    case_id.split('-').skip(1).find_map(|s| {
        let b = s.as_bytes();
        if b.len() != 6 || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = |i: usize| ((b[i] - b'0') * 10 + (b[i + 1] - b'0')) as u32;
        NaiveDate::from_ymd_opt(2000 + n(0) as i32, n(2), n(4))
    })
}

/// Whether `path` is a file of the layout before this one (`cases/bucket=NN/part-0.parquet`,
/// sixteen buckets by a hash of the id), which [`super::migrate`] rewrites once.
pub fn is_hash_layout(path: &str) -> bool {
    path.strip_prefix("cases/bucket=")
        .and_then(|r| r.strip_suffix("/part-0.parquet"))
        .is_some_and(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_lives_in_the_partition_of_the_date_in_its_id() {
        let p = Partition::of("000.00.15.H57-240615-0001");
        assert_eq!(
            p,
            Partition::Dated {
                year: 2024,
                month: 6,
                bucket: 1
            }
        );
        assert_eq!(p.path(), "cases/case_month=2024-06/bucket=1/part-0.parquet");
        assert_eq!(Partition::from_path(&p.path()), Some(p));
        // Day ranges: 1–8, 9–16, 17–24, 25–31.
        for (day, bucket) in [
            (1, 0),
            (8, 0),
            (9, 1),
            (16, 1),
            (17, 2),
            (24, 2),
            (25, 3),
            (31, 3),
        ] {
            let id = format!("X-2401{day:02}-000001");
            assert!(
                matches!(Partition::of(&id), Partition::Dated { bucket: b, .. } if b == bucket),
                "{id}"
            );
        }
        // The demo's ids: a six-digit serial after the date does not confuse it.
        assert_eq!(
            date_in_id("000.00.01.H57-240701-123456"),
            NaiveDate::from_ymd_opt(2024, 7, 1)
        );
    }

    #[test]
    fn ids_without_a_date_are_hashed_stably() {
        for id in [
            "A",
            "HS-2024-07-01",
            "X-241341-1",
            "X-240230-1",
            "X-24070-1",
            "X-24O701-1",
            "",
        ] {
            assert!(date_in_id(id).is_none(), "{id}");
            let p = Partition::of(id);
            assert!(matches!(p, Partition::Undated { bucket } if bucket < UNDATED_BUCKETS));
            assert_eq!(p, Partition::of(id), "the same id, the same partition");
            assert_eq!(Partition::from_path(&p.path()), Some(p));
        }
        let seen: std::collections::BTreeSet<_> =
            (0..2000).map(|i| Partition::of(&format!("H{i}"))).collect();
        assert_eq!(
            seen.len(),
            UNDATED_BUCKETS as usize,
            "2,000 ids reach every bucket"
        );
        // Pinned (the first four bytes of SHA-256, big-endian, mod 16): the hash must never
        // change, or a case would be staged twice.
        assert_eq!(Partition::of("H1"), Partition::Undated { bucket: 10 });
        assert_eq!(
            Partition::of("H1").path(),
            "cases/case_month=none/bucket=10/part-0.parquet"
        );
    }

    #[test]
    fn only_the_layouts_own_paths_are_recognised() {
        assert!(Partition::from_path("cases/case_month=2024-6/bucket=1/part-0.parquet").is_none());
        assert!(Partition::from_path("cases/case_month=2024-06/bucket=1/part-1.parquet").is_none());
        assert!(Partition::from_path("cases/case_month=none/bucket=7/part-0.parquet").is_none());
        assert!(Partition::from_path("kpi/case_month=none/bucket=07/part-0.parquet").is_none());
        assert!(is_hash_layout("cases/bucket=07/part-0.parquet"));
        assert!(!is_hash_layout(
            "cases/case_month=none/bucket=07/part-0.parquet"
        ));
    }
}

//! Reporting periods: ids, the two conventions and their bounds (`kpi.md`, "Reporting periods").
//!
//! A period has an id (`2024-Q3`, `2024-H1`, `2024-9M`, `2024`, `2024-09`) and, under a
//! convention, a first day F and a last day L, both inclusive local dates.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, Months, NaiveDate};
use serde::{Deserialize, Serialize};

/// How period ids map to dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Convention {
    /// Decree 09/2019/NĐ-CP cut-off: a month runs from the 15th of the month before to the 14th.
    #[default]
    Decree09,
    /// Calendar months, quarters, halves and years.
    Calendar,
}

impl Convention {
    pub fn as_str(self) -> &'static str {
        match self {
            Convention::Decree09 => "decree09",
            Convention::Calendar => "calendar",
        }
    }
}

impl FromStr for Convention {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "decree09" => Ok(Convention::Decree09),
            "calendar" => Ok(Convention::Calendar),
            other => Err(format!(
                "{other:?} is not a period convention: decree09 or calendar"
            )),
        }
    }
}

impl fmt::Display for Convention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of a period, which is also what `backfill` steps by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Month,
    Quarter,
    Half,
    NineMonths,
    Year,
}

/// A reporting period id. Ordering is chronological within one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeriodId {
    Month { year: i32, month: u32 },
    Quarter { year: i32, quarter: u32 },
    Half { year: i32, half: u32 },
    NineMonths { year: i32 },
    Year { year: i32 },
}

/// A period resolved under a convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub id: PeriodId,
    pub convention: Convention,
    /// F: first local day, inclusive.
    pub start: NaiveDate,
    /// L: last local day, inclusive.
    pub end: NaiveDate,
}

#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a period id: use 2024-Q3, 2024-H1, 2024-9M, 2024 or 2024-09")]
pub struct BadPeriod(pub String);

impl FromStr for PeriodId {
    type Err = BadPeriod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadPeriod(s.to_string());
        let s = s.trim();
        let (year, rest) = match s.split_once('-') {
            Some((y, r)) => (y, Some(r)),
            None => (s, None),
        };
        if year.len() != 4 {
            return Err(bad());
        }
        let year: i32 = year.parse().map_err(|_| bad())?;
        if !(1900..=2999).contains(&year) {
            return Err(bad());
        }
        let num = |t: &str, lo: u32, hi: u32| -> Result<u32, BadPeriod> {
            let n: u32 = t.parse().map_err(|_| bad())?;
            if (lo..=hi).contains(&n) && t.chars().all(|c| c.is_ascii_digit()) {
                Ok(n)
            } else {
                Err(bad())
            }
        };
        Ok(match rest {
            None => PeriodId::Year { year },
            Some("9M") | Some("9m") => PeriodId::NineMonths { year },
            Some(r) if r.starts_with(['Q', 'q']) => PeriodId::Quarter {
                year,
                quarter: num(&r[1..], 1, 4)?,
            },
            Some(r) if r.starts_with(['H', 'h']) => PeriodId::Half {
                year,
                half: num(&r[1..], 1, 2)?,
            },
            Some(r) if r.len() == 2 => PeriodId::Month {
                year,
                month: num(r, 1, 12)?,
            },
            Some(_) => return Err(bad()),
        })
    }
}

impl fmt::Display for PeriodId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PeriodId::Month { year, month } => write!(f, "{year}-{month:02}"),
            PeriodId::Quarter { year, quarter } => write!(f, "{year}-Q{quarter}"),
            PeriodId::Half { year, half } => write!(f, "{year}-H{half}"),
            PeriodId::NineMonths { year } => write!(f, "{year}-9M"),
            PeriodId::Year { year } => write!(f, "{year}"),
        }
    }
}

/// The first day of month `m` of year `y`. Period ids come only from parsing and stepping,
/// which keep years within 1900–2999 and months within 1–12, where every first day exists.
fn first_of(y: i32, m: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, 1).unwrap_or_default()
}

impl PeriodId {
    pub fn kind(&self) -> Kind {
        match self {
            PeriodId::Month { .. } => Kind::Month,
            PeriodId::Quarter { .. } => Kind::Quarter,
            PeriodId::Half { .. } => Kind::Half,
            PeriodId::NineMonths { .. } => Kind::NineMonths,
            PeriodId::Year { .. } => Kind::Year,
        }
    }

    /// The calendar months the period covers: (year, first month, month count).
    fn months(&self) -> (i32, u32, u32) {
        match *self {
            PeriodId::Month { year, month } => (year, month, 1),
            PeriodId::Quarter { year, quarter } => (year, 3 * quarter - 2, 3),
            PeriodId::Half { year, half } => (year, 6 * half - 5, 6),
            PeriodId::NineMonths { year } => (year, 1, 9),
            PeriodId::Year { year } => (year, 1, 12),
        }
    }

    /// F and L under `convention`.
    pub fn bounds(&self, convention: Convention) -> (NaiveDate, NaiveDate) {
        let (year, first, count) = self.months();
        let first_day = first_of(year, first);
        let last_month_first = first_day + Months::new(count - 1);
        match convention {
            Convention::Calendar => {
                let end = last_month_first + Months::new(1) - chrono::Days::new(1);
                (first_day, end)
            }
            // 15th of the month before the first month … 14th of the last month.
            Convention::Decree09 => {
                let start = first_day - Months::new(1) + chrono::Days::new(14);
                let end = last_month_first + chrono::Days::new(13);
                (start, end)
            }
        }
    }

    pub fn resolve(&self, convention: Convention) -> Period {
        let (start, end) = self.bounds(convention);
        Period {
            id: *self,
            convention,
            start,
            end,
        }
    }

    /// The period `delta` steps away, of the same kind.
    fn step(&self, delta: i32) -> PeriodId {
        let (year, index, per_year) = match *self {
            PeriodId::Month { year, month } => (year, month as i32 - 1, 12),
            PeriodId::Quarter { year, quarter } => (year, quarter as i32 - 1, 4),
            PeriodId::Half { year, half } => (year, half as i32 - 1, 2),
            PeriodId::NineMonths { year } | PeriodId::Year { year } => (year, 0, 1),
        };
        let n = year * per_year + index + delta;
        let (year, k) = (n.div_euclid(per_year), n.rem_euclid(per_year) as u32 + 1);
        match self {
            PeriodId::Month { .. } => PeriodId::Month { year, month: k },
            PeriodId::Quarter { .. } => PeriodId::Quarter { year, quarter: k },
            PeriodId::Half { .. } => PeriodId::Half { year, half: k },
            PeriodId::NineMonths { .. } => PeriodId::NineMonths { year },
            PeriodId::Year { .. } => PeriodId::Year { year },
        }
    }

    /// The period of the same kind that follows this one.
    pub fn next(&self) -> PeriodId {
        self.step(1)
    }

    /// The period of the same kind before this one.
    pub fn previous(&self) -> PeriodId {
        self.step(-1)
    }

    /// The quarter that contains local date `day` under `convention`.
    pub fn quarter_containing(day: NaiveDate, convention: Convention) -> PeriodId {
        let mut q = PeriodId::Quarter {
            year: day.year(),
            quarter: (day.month0() / 3) + 1,
        };
        // Under Decree 09 a date on or after the 15th of a quarter's last month belongs to the next one.
        for _ in 0..2 {
            let (start, end) = q.bounds(convention);
            if day > end {
                q = q.next();
            } else if day < start {
                q = q.previous();
            } else {
                break;
            }
        }
        q
    }
}

/// A backfill range that cannot be walked.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BadRange {
    #[error(
        "--from {0} and --to {1} are periods of different kinds: give two quarters, two months, …"
    )]
    Kinds(PeriodId, PeriodId),
    #[error("--from {0} comes after --to {1}: swap them")]
    Reversed(PeriodId, PeriodId),
    #[error("a backfill range is limited to {0} periods")]
    TooLong(usize),
}

/// The longest backfill range.
pub const MAX_RANGE: usize = 1200;

/// Every period from `from` to `to` inclusive; both must be of one kind.
pub fn range(from: PeriodId, to: PeriodId) -> Result<Vec<PeriodId>, BadRange> {
    if from.kind() != to.kind() {
        return Err(BadRange::Kinds(from, to));
    }
    if from > to {
        return Err(BadRange::Reversed(from, to));
    }
    let mut out = vec![from];
    let mut p = from;
    while p != to {
        p = p.next();
        out.push(p);
        if out.len() > MAX_RANGE {
            return Err(BadRange::TooLong(MAX_RANGE));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(id: &str, c: Convention) -> (String, String) {
        let (s, e) = id.parse::<PeriodId>().unwrap().bounds(c);
        (s.to_string(), e.to_string())
    }

    #[test]
    fn decree09_bounds_follow_kpi_md() {
        use Convention::Decree09 as D;
        assert_eq!(b("2024-Q3", D), ("2024-06-15".into(), "2024-09-14".into()));
        assert_eq!(b("2024-Q1", D), ("2023-12-15".into(), "2024-03-14".into()));
        assert_eq!(b("2024-H1", D), ("2023-12-15".into(), "2024-06-14".into()));
        assert_eq!(b("2024-H2", D), ("2024-06-15".into(), "2024-12-14".into()));
        assert_eq!(b("2024-9M", D), ("2023-12-15".into(), "2024-09-14".into()));
        assert_eq!(b("2024", D), ("2023-12-15".into(), "2024-12-14".into()));
        assert_eq!(b("2024-09", D), ("2024-08-15".into(), "2024-09-14".into()));
        assert_eq!(b("2024-01", D), ("2023-12-15".into(), "2024-01-14".into()));
    }

    #[test]
    fn calendar_bounds() {
        use Convention::Calendar as C;
        assert_eq!(b("2024-Q3", C), ("2024-07-01".into(), "2024-09-30".into()));
        assert_eq!(b("2024-02", C), ("2024-02-01".into(), "2024-02-29".into()));
        assert_eq!(b("2024-H2", C), ("2024-07-01".into(), "2024-12-31".into()));
        assert_eq!(b("2024", C), ("2024-01-01".into(), "2024-12-31".into()));
    }

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        for id in ["2024-Q3", "2024-H1", "2024-9M", "2024", "2024-09"] {
            assert_eq!(id.parse::<PeriodId>().unwrap().to_string(), id);
        }
        for bad in [
            "2024-Q5", "2024-13", "24-Q1", "2024-X", "2024-H3", "", "2024-1",
        ] {
            assert!(bad.parse::<PeriodId>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn ranges_and_current_quarter() {
        let r = range("2023-Q3".parse().unwrap(), "2024-Q2".parse().unwrap()).unwrap();
        let ids: Vec<String> = r.iter().map(|p| p.to_string()).collect();
        assert_eq!(ids, ["2023-Q3", "2023-Q4", "2024-Q1", "2024-Q2"]);
        let months = range("2023-11".parse().unwrap(), "2024-02".parse().unwrap()).unwrap();
        let ids: Vec<String> = months.iter().map(|p| p.to_string()).collect();
        assert_eq!(ids, ["2023-11", "2023-12", "2024-01", "2024-02"]);
        assert_eq!(
            "2024-01"
                .parse::<PeriodId>()
                .unwrap()
                .previous()
                .to_string(),
            "2023-12"
        );
        assert_eq!(
            "2024-H1"
                .parse::<PeriodId>()
                .unwrap()
                .previous()
                .to_string(),
            "2023-H2"
        );
        assert_eq!(
            "2024".parse::<PeriodId>().unwrap().next().to_string(),
            "2025"
        );
        assert!(range("2024-Q1".parse().unwrap(), "2024-03".parse().unwrap()).is_err());
        let d = NaiveDate::from_ymd_opt(2026, 9, 15).unwrap();
        assert_eq!(
            PeriodId::quarter_containing(d, Convention::Decree09).to_string(),
            "2026-Q4"
        );
        assert_eq!(
            PeriodId::quarter_containing(d, Convention::Calendar).to_string(),
            "2026-Q3"
        );
        let d = NaiveDate::from_ymd_opt(2026, 12, 20).unwrap();
        assert_eq!(
            PeriodId::quarter_containing(d, Convention::Decree09).to_string(),
            "2027-Q1"
        );
    }
}

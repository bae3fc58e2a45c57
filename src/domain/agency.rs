//! Agencies over time (`../shared/spec/agencies.md`), to be read beside it: the catalog keeps
//! every agency that ever handled a case, with its validity and successors; a case counts in a
//! period under its agency on its attribution date; restated figures follow main successors
//! to the structure of a target date.

use std::collections::HashMap;

use chrono::NaiveDate;

use super::level::Level;
use super::period::Period;

/// An agency of `/v1/donvi`, with its history.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Agency {
    pub code: String,
    pub name: Option<String>,
    /// `Cap`: 1 province, 2 district, 3 commune. It never changes: a unit that changes level
    /// gets a new code.
    pub cap: Option<i32>,
    pub parent: Option<String>,
    /// `HieuLucTu`: the first day it exists; `None`: always.
    pub valid_from: Option<NaiveDate>,
    /// `HieuLucDen`: the first day it no longer exists (exclusive); `None`: still exists.
    pub valid_to: Option<NaiveDate>,
    /// `MaDonViKeThua`: the codes that took over its cases when it ended, the main one first.
    pub successors: Vec<String>,
}

impl Agency {
    /// Whether it exists on `day`.
    pub fn valid_on(&self, day: NaiveDate) -> bool {
        self.valid_from.is_none_or(|f| f <= day) && self.valid_to.is_none_or(|t| day < t)
    }

    pub fn level(&self) -> Level {
        Level::of_cap(self.cap)
    }

    /// The agency that takes its cases when it ends.
    pub fn main_successor(&self) -> Option<&str> {
        self.successors.first().map(String::as_str)
    }
}

/// One hand-over of a case (`DanhSachChuyenDonVi`): from whom, to whom, on which local date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub from: String,
    pub to: Option<String>,
    pub on: NaiveDate,
}

/// The agency of a case on day `d`: `MaDonViCu` of the earliest transfer whose date is after
/// `d`; if there is none, the agency holding the case now.
pub fn agency_on<'a>(current: &'a str, transfers: &'a [Transfer], d: NaiveDate) -> &'a str {
    transfers
        .iter()
        .filter(|t| t.on > d)
        .min_by_key(|t| t.on)
        .map_or(current, |t| t.from.as_str())
}

/// The day a case counts on in period F … L: its end when it ended on or before L, else L.
pub fn attribution_date(period: &Period, ended: bool, end: Option<NaiveDate>) -> NaiveDate {
    match end {
        Some(e) if ended && e <= period.end => e,
        _ => period.end,
    }
}

/// Where an agency's figures go when restated to a target date.
#[derive(Debug, Clone, PartialEq)]
pub struct Restated {
    /// The agency that exists on the target date (or the last of a broken chain).
    pub code: String,
    /// The chain ends in an agency that neither exists on the target date nor has a successor.
    pub broken: bool,
}

/// The agency catalog with its history.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    agencies: Vec<Agency>,
    by_code: HashMap<String, usize>,
}

/// Successors followed at most, against a catalog whose successors loop.
const MAX_CHAIN: usize = 64;

impl Catalog {
    pub fn new(agencies: Vec<Agency>) -> Catalog {
        let by_code = agencies
            .iter()
            .enumerate()
            .map(|(i, a)| (a.code.clone(), i))
            .collect();
        Catalog { agencies, by_code }
    }

    pub fn get(&self, code: &str) -> Option<&Agency> {
        self.by_code.get(code).map(|i| &self.agencies[*i])
    }

    pub fn all(&self) -> &[Agency] {
        &self.agencies
    }

    pub fn len(&self) -> usize {
        self.agencies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.agencies.is_empty()
    }

    /// Whether the catalog carries any history (validity or successors).
    pub fn has_history(&self) -> bool {
        self.agencies
            .iter()
            .any(|a| a.valid_from.is_some() || a.valid_to.is_some() || !a.successors.is_empty())
    }

    /// `code` followed along main successors until an agency that exists on `target` is
    /// reached; an agency not in the catalog stays itself.
    pub fn restate(&self, code: &str, target: NaiveDate) -> Restated {
        let mut at = code;
        for _ in 0..MAX_CHAIN {
            let Some(a) = self.get(at) else {
                return Restated {
                    code: at.to_string(),
                    broken: at != code,
                };
            };
            if a.valid_on(target) {
                return Restated {
                    code: at.to_string(),
                    broken: false,
                };
            }
            match a.main_successor() {
                Some(next) if next != at => at = next,
                _ => break,
            }
        }
        Restated {
            code: at.to_string(),
            broken: true,
        }
    }

    /// The administrative levels of the structure of `day`: all three, but a level whose every
    /// agency ended before it (the district level after 1 July 2025).
    pub fn levels_on(&self, day: NaiveDate) -> Vec<Level> {
        Level::ADMINISTRATIVE
            .into_iter()
            .filter(|l| {
                let mut at = self.agencies.iter().filter(|a| a.level() == *l).peekable();
                at.peek().is_none() || at.any(|a| a.valid_to.is_none_or(|t| day < t))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::period::{Convention, PeriodId};

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    /// The agencies of agencies.md's worked example.
    pub(crate) fn worked_example() -> Catalog {
        let a = |code: &str, cap, from: Option<&str>, to: Option<&str>, succ: &[&str]| Agency {
            code: code.into(),
            cap: Some(cap),
            valid_from: from.map(day),
            valid_to: to.map(day),
            successors: succ.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        Catalog::new(vec![
            a("H1", 2, None, Some("2025-07-01"), &["X1"]),
            a("C1", 3, None, Some("2025-07-01"), &["X1"]),
            a("C2", 3, None, Some("2025-07-01"), &["X1"]),
            a("X1", 3, Some("2025-07-01"), None, &[]),
            a("P1", 1, None, Some("2025-03-01"), &["P2"]),
            a("P2", 1, Some("2025-03-01"), None, &[]),
        ])
    }

    #[test]
    fn validity_is_inclusive_from_and_exclusive_to() {
        let c = worked_example();
        let h1 = c.get("H1").unwrap();
        assert!(h1.valid_on(day("2025-06-30")) && !h1.valid_on(day("2025-07-01")));
        let x1 = c.get("X1").unwrap();
        assert!(!x1.valid_on(day("2025-06-30")) && x1.valid_on(day("2025-07-01")));
        assert!(Agency::default().valid_on(day("1900-01-01")));
    }

    #[test]
    fn the_agency_on_a_day_follows_the_transfers() {
        let t = vec![Transfer {
            from: "H1".into(),
            to: Some("X1".into()),
            on: day("2025-07-01"),
        }];
        assert_eq!(agency_on("X1", &t, day("2025-06-14")), "H1");
        assert_eq!(agency_on("X1", &t, day("2025-06-30")), "H1");
        assert_eq!(
            agency_on("X1", &t, day("2025-07-01")),
            "X1",
            "the day of the hand-over"
        );
        assert_eq!(agency_on("X1", &t, day("2025-07-20")), "X1");
        // Two hand-overs: the earliest after the day says who held it.
        let t = vec![
            Transfer {
                from: "A".into(),
                to: Some("B".into()),
                on: day("2025-01-01"),
            },
            Transfer {
                from: "B".into(),
                to: Some("C".into()),
                on: day("2025-07-01"),
            },
        ];
        assert_eq!(agency_on("C", &t, day("2024-12-31")), "A");
        assert_eq!(agency_on("C", &t, day("2025-03-01")), "B");
        assert_eq!(agency_on("C", &t, day("2025-08-01")), "C");
        assert_eq!(agency_on("C", &[], day("2020-01-01")), "C");
    }

    #[test]
    fn a_case_counts_on_its_end_or_the_periods_last_day() {
        let q = "2025-Q3"
            .parse::<PeriodId>()
            .unwrap()
            .resolve(Convention::Decree09);
        assert_eq!(
            attribution_date(&q, true, Some(day("2025-07-20"))),
            day("2025-07-20")
        );
        assert_eq!(attribution_date(&q, true, Some(day("2025-09-20"))), q.end);
        assert_eq!(attribution_date(&q, false, Some(day("2025-07-20"))), q.end);
        assert_eq!(attribution_date(&q, false, None), q.end);
    }

    #[test]
    fn restating_follows_main_successors_to_the_target_date() {
        let c = worked_example();
        let t = day("2026-01-01");
        for (from, to) in [
            ("H1", "X1"),
            ("C1", "X1"),
            ("C2", "X1"),
            ("X1", "X1"),
            ("P1", "P2"),
            ("P2", "P2"),
        ] {
            assert_eq!(
                c.restate(from, t),
                Restated {
                    code: to.into(),
                    broken: false
                },
                "{from}"
            );
        }
        assert_eq!(
            c.restate("NEVER", t),
            Restated {
                code: "NEVER".into(),
                broken: false
            }
        );
        // Before the switch, today's agencies do not exist yet: the chain keeps the last.
        assert_eq!(c.restate("H1", day("2024-01-01")).code, "H1");
        let gone = Catalog::new(vec![Agency {
            code: "G".into(),
            valid_to: Some(day("2020-01-01")),
            ..Default::default()
        }]);
        assert_eq!(
            gone.restate("G", t),
            Restated {
                code: "G".into(),
                broken: true
            }
        );
        let looped = Catalog::new(vec![
            Agency {
                code: "A".into(),
                valid_to: Some(day("2020-01-01")),
                successors: vec!["B".into()],
                ..Default::default()
            },
            Agency {
                code: "B".into(),
                valid_to: Some(day("2020-01-01")),
                successors: vec!["A".into()],
                ..Default::default()
            },
        ]);
        assert!(looped.restate("A", t).broken);
        assert_eq!(c.levels_on(t), [Level::Province, Level::Commune]);
        assert_eq!(c.levels_on(day("2025-06-30")), Level::ADMINISTRATIVE);
    }
}

//! The demo province after its profiled quarter: the 2024 cases still open at its end settle in
//! the quarters after; from January 2025 to the end of 2026-Q3 cases arrive at the agencies
//! that exist the day they do (three levels until July 2025, two after); and whenever the 2025
//! restructuring ends the agency holding an open case, the case is handed over
//! (`DanhSachChuyenDonVi`) to a successor. None of this moves a figure of the profiled quarter:
//! what changes there happens after its last day, and a case counts under the agency it had.

use chrono::{Days, Months, NaiveDate};
use rand::Rng;

use super::{Dates, Draft, Generator};
use crate::demo::province::{d, mergers, regrouping, two_levels};

/// The last day the demo draws: the end of 2026-Q3.
fn horizon() -> NaiveDate {
    d(2026, 9, 30)
}

impl Generator {
    /// A 2024 case open at the end of the profiled quarter (L) mostly ends in the quarters
    /// after; one waiting at L is mostly accepted soon after, then ends.
    pub(super) fn settle(&mut self, dr: &mut Draft, l: NaiveDate) {
        let open = dr.dates.processed.is_none() && dr.dates.returned.is_none();
        if !open || !matches!(dr.status, 1 | 2 | 4 | 5 | 6) || !self.rng.random_bool(0.75) {
            return;
        }
        if dr.status == 1 {
            let Some(sub) = dr.dates.sub else { return };
            let acc_day = self.day(l + Days::new(1), l + Days::new(10));
            let acc = self
                .at(acc_day, 7, 17)
                .max(sub + chrono::Duration::minutes(10));
            dr.dates.acc = Some(acc);
            dr.dates.due = Some(self.deadline(acc_day + Days::new(15)));
        }
        let Some(acc) = dr.dates.acc else { return };
        let from = (l + Days::new(1)).max(acc.date()) + Days::new(5);
        let end = self.day(from, (from + Days::new(300)).min(horizon()));
        self.finish(&mut dr.dates, end);
        dr.status = self.resolved_status(&mut dr.dates);
    }

    /// Cases arriving from January 2025 to the end of 2026-Q3: about 3,500 a month at scale 1,
    /// and a few refused, at the levels that exist that month; plus a few accepted by an old
    /// commune in the days after it ended (the dates of real systems are not exact).
    pub(super) fn later_years(&mut self) -> Vec<Draft> {
        let mut out = vec![];
        let mut month = d(2025, 1, 1);
        while month <= horizon() {
            let next = month + Months::new(1);
            let last = next - Days::new(1);
            let caps: &[(u8, f64)] = if month < two_levels() {
                &[(1, 0.23), (2, 0.32), (3, 0.45)]
            } else {
                &[(1, 0.35), (3, 0.65)]
            };
            for (cap, share) in caps {
                for _ in 0..self.scaled((3_500.0 * share) as u32) {
                    out.push(self.draw_flowing(*cap, month, last));
                }
                for _ in 0..self.scaled((120.0 * share) as u32) {
                    out.push(self.draw_refused(*cap, month, last));
                }
            }
            month = next;
        }
        for k in 0..self.scaled(3).max(1) {
            out.push(self.late_at_old_commune(k as usize));
        }
        out
    }

    /// A case accepted between `from` and `to` that takes its time: it ends within the period
    /// or after it, or is still in progress at the horizon.
    pub(super) fn draw_flowing(&mut self, cap: u8, from: NaiveDate, to: NaiveDate) -> Draft {
        let mut dates = Dates::default();
        let acc_day = self.day(from, to);
        self.accept(&mut dates, acc_day);
        let due_in = self.rng.random_range(5..=20);
        dates.due = Some(self.deadline(acc_day + Days::new(due_in)));
        let took = if self.rng.random_bool(0.93) {
            self.rng.random_range(0..=due_in)
        } else {
            due_in + self.rng.random_range(1..=25)
        };
        let end = acc_day + Days::new(took);
        let status = if end > horizon() {
            4
        } else {
            self.finish(&mut dates, end);
            match self.rng.random_range(0..100) {
                0..=1 => 7,
                2..=3 => 8,
                _ => self.resolved_status(&mut dates),
            }
        };
        let channel = if self.rng.random_bool(0.75) {
            2
        } else if self.rng.random_bool(0.9) {
            1
        } else {
            3
        };
        self.place(cap, channel, status, dates)
    }

    /// A case submitted and accepted at an old commune in the first days of July 2025, when it
    /// no longer exists, and resolved there.
    fn late_at_old_commune(&mut self, k: usize) -> Draft {
        let mut dates = Dates::default();
        let acc_day = two_levels() + Days::new(1 + (k % 3) as u64);
        let acc = self.at(acc_day, 8, 12);
        dates.sub = Some(acc - chrono::Duration::minutes(20));
        dates.acc = Some(acc);
        dates.due = Some(self.deadline(acc_day + Days::new(5)));
        self.finish(&mut dates, acc_day + Days::new(2));
        let status = self.resolved_status(&mut dates);
        let agency = self.layout.communes[(k + 3) % self.layout.communes.len()][0];
        let procedure = self.procedure_at(3);
        Draft {
            agency,
            first_agency: agency,
            transfers: vec![],
            procedure,
            channel: 1,
            status,
            dates,
            with_older_version: false,
        }
    }

    /// Hands the case over each time the 2025 restructuring ends its agency while it is open:
    /// on 1 January (the city district's cases alternate between its two halves), 1 March and
    /// 1 July (a district's cases mostly to the ward of its seat, some to the provincial
    /// service centre), at 07:30 that day.
    pub(super) fn hand_over(&mut self, dr: &mut Draft, i: usize) {
        for t in [regrouping(), mergers(), two_levels()] {
            let holder = &self.agencies[dr.agency];
            if holder.valid_to != Some(t) {
                continue;
            }
            let started = dr.dates.sub.or(dr.dates.acc).or(dr.dates.refused);
            let ended = dr
                .dates
                .processed
                .or(dr.dates.returned)
                .or(dr.dates.refused);
            if started.is_none_or(|s| s.date() >= t) || ended.is_some_and(|e| e.date() < t) {
                continue;
            }
            let to = match holder.successors.as_slice() {
                [] => continue,
                [a, b] if t == regrouping() => [*a, *b][i % 2],
                [main, centre, ..] if holder.cap == 2 => {
                    if self.rng.random_bool(0.15) {
                        *centre
                    } else {
                        *main
                    }
                }
                [main, ..] => *main,
            };
            let Some(at) = t.and_hms_opt(7, 30, 0) else {
                continue;
            };
            dr.transfers.push((at, dr.agency, to));
            dr.agency = to;
        }
    }
}

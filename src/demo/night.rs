//! The nights of a demo province: each night the case system changes as a real one does in a
//! day — cases received lately progress (processed, or their result returned), new cases are
//! received, and, when asked, a few old cases are corrected — all stamped on the night's day,
//! after everything served before. A nightly run then pulls just those changes.

use chrono::{Days, NaiveDate, NaiveDateTime, NaiveTime};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::{json, Value};

use super::generator;
use super::table::{At, Row, Table};
use crate::error::{Error, Result};
use crate::wire::local_date;

/// The nights of one drawn province.
pub struct Nights {
    seed: u64,
    scale: f64,
    /// Base positions of records a night may move on, in the order they will be.
    candidates: Vec<usize>,
    night: u64,
    rng: ChaCha8Rng,
}

/// What a night changed.
#[derive(Debug, Clone, Serialize)]
pub struct NightReport {
    pub night: u64,
    pub day: NaiveDate,
    /// Cases received lately that were processed or had their result returned.
    pub progressed: usize,
    /// Cases received that day (records, older versions and duplicates included).
    pub new_cases: usize,
    pub new_records: usize,
    /// Old cases corrected (a flag fixed, restamped).
    pub corrections: usize,
}

impl Nights {
    pub fn new(seed: u64, scale: f64, mut candidates: Vec<usize>) -> Nights {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6E69_6768_7473);
        candidates.shuffle(&mut rng);
        Nights {
            seed,
            scale,
            candidates,
            night: 0,
            rng,
        }
    }

    /// The next night: about `changes` changed records (half progress of recent cases while
    /// there are some, the rest new cases) and `corrections` old cases corrected.
    pub fn next(
        &mut self,
        table: &mut Table,
        changes: usize,
        corrections: usize,
    ) -> Result<NightReport> {
        self.night += 1;
        let day = local_date(table.max_updated) + Days::new(1);
        let mut rows = vec![];
        let mut gone = vec![];
        let progress = (changes / 2).min(self.candidates.len());
        for _ in 0..progress {
            let Some(x) = self.candidates.pop() else {
                break;
            };
            let v = self.read(table, x)?;
            rows.push(Row::of(&self.progressed(v, day)));
            gone.push(x);
        }
        let new = changes.saturating_sub(progress);
        let serial = 900_000_000_000 + self.night * 10_000_000;
        let mut g = generator::for_night(self.seed, self.scale, self.night);
        let mut new_records = 0;
        g.new_cases(day, new, serial, &mut |v| {
            new_records += 1;
            rows.push(Row::of(&v));
        });
        let base = table.base_len();
        for _ in 0..corrections.min(base) {
            let x = self.rng.random_range(0..base);
            if gone.contains(&x) {
                continue;
            }
            let mut v = self.read(table, x)?;
            let digitized = crate::wire::text(v.get("HoSoCoThanhPhanSoHoa")).unwrap_or_default();
            v["HoSoCoThanhPhanSoHoa"] = json!(if digitized == "1" { "0" } else { "1" });
            v["NgayCapNhat"] = stamp(self.at(day));
            rows.push(Row::of(&v));
            gone.push(x);
        }
        let latest = rows.iter().map(|r| r.updated).max();
        table.insert_many(rows, gone)?;
        if let Some(t) = latest.filter(|t| *t <= chrono::Utc::now().timestamp_micros()) {
            table.max_updated = table.max_updated.max(t);
        }
        table.updates += (progress + new_records + corrections) as u64;
        Ok(NightReport {
            night: self.night,
            day,
            progressed: progress,
            new_cases: new,
            new_records,
            corrections,
        })
    }

    fn read(&self, table: &Table, x: usize) -> Result<Value> {
        let json = table.read(&[At::Base(x)])?.pop().unwrap_or_default();
        serde_json::from_str(&json)
            .map_err(|e| Error::Internal(format!("a demo record is not JSON: {e}")))
    }

    /// A time of `day` in office hours.
    fn at(&mut self, day: NaiveDate) -> NaiveDateTime {
        let secs = self.rng.random_range(7 * 3600..17 * 3600);
        day.and_time(NaiveTime::from_num_seconds_from_midnight_opt(secs, 0).unwrap_or_default())
    }

    /// The record moved on by a day: processed (or, if it was, its result returned).
    fn progressed(&mut self, mut v: Value, day: NaiveDate) -> Value {
        let t = self.at(day);
        let status = crate::wire::text(v.get("TrangThaiHoSo")).unwrap_or_default();
        if status == "9" {
            v["TrangThaiHoSo"] = json!("10");
            v["NgayTra"] = stamp(t);
        } else {
            v["TrangThaiHoSo"] = json!("9");
            v["NgayKetThucXuLy"] = stamp(t);
        }
        v["NgayCapNhat"] = stamp(t + chrono::Duration::minutes(self.rng.random_range(5..=90)));
        v
    }
}

fn stamp(t: NaiveDateTime) -> Value {
    json!(t.format("%Y%m%d%H%M%S").to_string())
}

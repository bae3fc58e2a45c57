//! The latest version of each case: what a bucket keeps when new records meet the staged ones.

use polars::prelude::*;

use super::schema::staging_schema;
use crate::error::Result;

/// The row of each case's latest version, in `case_id` order.
///
/// The versions of a case are taken in the order they were pulled (`_order`; rows already
/// staged first), and each replaces the one kept so far if its `NgayCapNhat` is not older
/// (`source-api.md`: the stamp decides; on a tie the later arrival wins) — or if the one kept
/// so far is **untrusted**: stamped after the start of the run that pulled it (read from
/// `source_run_id`), i.e. in the future by a clock error at the source. Such a stamp cannot be
/// compared with real ones, so whatever a later pull brings replaces it: the source serves only
/// a case's current version, and its correction, stamped at the source's own time, is counted.
/// Rejected records never get here, so they never replace a valid version.
pub fn latest_rows(all: &DataFrame) -> Result<IdxCa> {
    Ok(latest_rows_counted(all, all.height())?.0)
}

/// [`latest_rows`], and how many cases the rows from `new_from` on are versions of (a merge's
/// new records: their versions beyond one a case are superseded within the run). `all` may
/// carry [`UNTRUSTED`] in place of `source_run_id` ([`with_trust`]).
pub fn latest_rows_counted(all: &DataFrame, new_from: usize) -> Result<(IdxCa, usize)> {
    let updated: Vec<Option<i64>> = all
        .column("updated_at")?
        .datetime()?
        .physical()
        .iter()
        .collect();
    let untrusted: Vec<bool> = match all.column(UNTRUSTED) {
        Ok(c) => c.bool()?.iter().map(|b| b.unwrap_or(false)).collect(),
        Err(_) => untrusted(&updated, all.column("source_run_id")?.str()?),
    };
    // Each row's (case id, arrival order, row), sorted stably: a case's versions together, in
    // the order they arrived. Sorted here rather than by polars, whose multi-column sort
    // encodes every row and copies the ids (80 MB for a partition of 430 thousand rows).
    let orders: Vec<Option<i64>> = all.column("_order")?.i64()?.iter().collect();
    let mut keys: Vec<(Option<&str>, Option<i64>, usize)> = all
        .column("case_id")?
        .str()?
        .iter()
        .zip(orders)
        .enumerate()
        .map(|(row, (id, order))| (id, order, row))
        .collect();
    keys.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut keep: Vec<IdxSize> = Vec::with_capacity(all.height());
    let mut new_cases = 0;
    // The case whose versions are being read: its id, the row kept so far, whether a new one.
    let mut current: Option<(Option<&str>, usize, bool)> = None;
    for (id, _, row) in keys {
        let new = row >= new_from;
        match &mut current {
            Some((kept_id, kept, any_new)) if *kept_id == id => {
                if untrusted[*kept] || updated[row] >= updated[*kept] {
                    *kept = row;
                }
                *any_new |= new;
            }
            _ => {
                if let Some((_, kept, any_new)) = current {
                    keep.push(kept as IdxSize);
                    new_cases += usize::from(any_new);
                }
                current = Some((id, row, new));
            }
        }
    }
    if let Some((_, kept, any_new)) = current {
        keep.push(kept as IdxSize);
        new_cases += usize::from(any_new);
    }
    Ok((IdxCa::from_vec("_row".into(), keep), new_cases))
}

/// The column that stands for `source_run_id` in the keys of a merge: whether each version's
/// stamp is untrusted (see [`latest_rows`]).
pub const UNTRUSTED: &str = "_untrusted";

/// `keys` with [`UNTRUSTED`] in place of `source_run_id`: a flag a row instead of a string.
pub fn with_trust(keys: DataFrame) -> Result<DataFrame> {
    let updated: Vec<Option<i64>> = keys
        .column("updated_at")?
        .datetime()?
        .physical()
        .iter()
        .collect();
    let flags = untrusted(&updated, keys.column("source_run_id")?.str()?);
    let mut keys = keys.drop("source_run_id")?;
    keys.with_column(Column::new(UNTRUSTED.into(), flags))?;
    Ok(keys)
}

/// Whether each version was stamped after the start of the run that pulled it (ids that are
/// not run ids, as in tests and tools, leave every stamp trusted).
fn untrusted(updated: &[Option<i64>], runs: &StringChunked) -> Vec<bool> {
    let mut starts: std::collections::HashMap<&str, Option<i64>> = Default::default();
    updated
        .iter()
        .zip(runs.iter())
        .map(|(u, run)| {
            let start = run.and_then(|r| {
                *starts
                    .entry(r)
                    .or_insert_with(|| crate::run_id::started_at(r))
            });
            matches!((u, start), (Some(u), Some(s)) if *u > s)
        })
        .collect()
}

/// Merges `new` records (with `_order`) into an existing staging bucket; returns the bucket
/// with one row per case and no helper columns, and how many new records were superseded.
pub fn upsert(existing: Option<DataFrame>, new: DataFrame) -> Result<DataFrame> {
    let names: Vec<Expr> = staging_schema().iter().map(|(n, _)| col(*n)).collect();
    let all = match existing {
        None => new,
        Some(old) => {
            // Rows already staged lose a tie on updated_at against anything newly received.
            let old = old
                .lazy()
                .select(names.clone())
                .with_column(lit(-1i64).cast(DataType::Int64).alias("_order"));
            concat([old, new.lazy()], UnionArgs::default())?.collect()?
        }
    };
    // The rows to keep are chosen on the key columns alone, then taken from the wide frame
    // once, in case_id order: one copy of the bucket, not one per sort.
    let rows = latest_rows(&all)?;
    let out = all.lazy().select(names).collect()?.take(&rows)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalise::{Normaliser, PiiKey};
    use serde_json::{json, Value};

    /// A version stamped in the future (after its run started) is replaced by whatever a
    /// later pull brings — the source's correction, stamped by its own clock, however far
    /// behind ours that runs — while an ordinary stamp still decides against older versions.
    #[test]
    fn a_future_stamp_does_not_outlive_the_correction() {
        let case = |status: i32, updated: &str| {
            json!({"MaHoSo":"A","MaDonVi":"X","TrangThaiHoSo":status,"NgayTiepNhan":"20240701080000",
                   "NgayKetThucXuLy":"20240701090000","NgayCapNhat":updated})
        };
        let stage = |old: Option<DataFrame>, run: &str, recs: Vec<Value>| {
            let mut n = Normaliser::new(PiiKey::new(b"k"), run);
            n.add_records("raw/p", &recs);
            upsert(old, n.finish().unwrap().cases).unwrap()
        };
        let status = |df: &DataFrame| df.column("status").unwrap().i32().unwrap().get(0);
        // Pulled on 2026-11-28, stamped 2099 by a clock error at the source: it replaces the
        // version staged before, as any newer version does.
        let before = stage(
            None,
            "20261127T100000000Z-aaaa",
            vec![case(2, "20240701080000")],
        );
        let future = stage(
            Some(before),
            "20261128T100000000Z-bbbb",
            vec![case(4, "20991231000000")],
        );
        assert_eq!(status(&future), Some(4));
        // Pulled again the next night, unchanged: still there.
        let again = stage(
            Some(future.clone()),
            "20261129T100000000Z-cccc",
            vec![case(4, "20991231000000")],
        );
        assert_eq!(status(&again), Some(4));
        // The correction, stamped by a source clock two years behind ours, replaces it.
        let fixed = stage(
            Some(again),
            "20261130T100000000Z-dddd",
            vec![case(9, "20241203080000")],
        );
        assert_eq!(status(&fixed), Some(9));
        assert_eq!(fixed.height(), 1);
        // Trusted again, the stamp decides: an older version arriving later does not win.
        let older = stage(
            Some(fixed),
            "20261201T100000000Z-eeee",
            vec![case(4, "20241201080000")],
        );
        assert_eq!(status(&older), Some(9));
        // Within one pull, the later of two equal stamps wins, and a greater stamp wins.
        let one = stage(
            None,
            "r",
            vec![
                case(10, "20240702000000"),
                case(9, "20240703000000"),
                case(4, "20240703000000"),
            ],
        );
        assert_eq!(status(&one), Some(4));
        // Ids that are not run ids (tests, tools) leave the stamps trusted.
        let plain = stage(None, "r1", vec![case(4, "20991231000000")]);
        let plain = stage(Some(plain), "r2", vec![case(9, "20240703080000")]);
        assert_eq!(status(&plain), Some(4));
    }

    #[test]
    fn latest_version_wins_and_rejects_never_replace() {
        let mut n = Normaliser::new(PiiKey::new(b"k"), "r1");
        let base = json!({"MaHoSo":"A","MaDonVi":"X","TrangThaiHoSo":"4","NgayTiepNhan":"20240701080000","NgayCapNhat":"20240701090000"});
        let mut newer = base.clone();
        newer["NgayCapNhat"] = json!("20240702090000");
        newer["TrangThaiHoSo"] = json!(9);
        newer["NgayKetThucXuLy"] = json!("20240702080000");
        let mut broken = newer.clone();
        broken["NgayCapNhat"] = json!("20240703090000");
        broken["NgayTra"] = json!("31/02/2024");
        n.add_records("raw/p1", &[newer.clone(), base.clone(), broken]);
        let out = n.finish().unwrap();
        assert_eq!(out.rejects.len(), 1);
        assert_eq!(out.rejects[0].reason.code(), "unreadable_date");
        let staged = upsert(None, out.cases).unwrap();
        assert_eq!(staged.height(), 1);
        assert_eq!(
            staged.column("status").unwrap().i32().unwrap().get(0),
            Some(9)
        );
        // A later run bringing the older version again does not move the case back.
        let mut n = Normaliser::new(PiiKey::new(b"k"), "r2");
        n.add_records("raw/p2", &[base]);
        let again = upsert(Some(staged), n.finish().unwrap().cases).unwrap();
        assert_eq!(
            again.column("status").unwrap().i32().unwrap().get(0),
            Some(9)
        );
    }
}

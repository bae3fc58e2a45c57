//! The sums of the [`cache`](super::cache), kept whole. Beside each period's cached counts per
//! partition, `_state/kpi-cache/<F>_<L>.sum.parquet` keeps their total over every partition of
//! staging, and which partitions at which versions it sums. A run that finds staging exactly
//! as that list says (a period published again, a report rebuilt, a backfill of periods
//! already counted) reads that one small file instead of a row per partition × agency ×
//! field; any difference (a partition replaced, added or gone) and the run counts as
//! [`cache`](super::cache) says, then writes the sums again.
//!
//! A sum file is read like the cache: as input. Another fingerprint, a damaged file or members
//! that differ from staging make it unused, never fatal; writing it is best effort.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use polars::prelude::*;
use tracing::{debug, warn};

use super::attribution::Agencies;
use super::cache::fingerprint;
use super::partial::Partial;
use super::partial::PER_PERIOD;
use crate::domain::period::Period;
use crate::error::{Error, Result};
use crate::parquet::{blocking, ParquetEncoder, ParquetFile, ROW_GROUP_ROWS};
use crate::store::Store;

/// The `partition` (and `version`) of the summed rows; member rows carry their partition's.
const ALL: &str = "*";
/// The `kind` of a member row: one partition summed, at its version.
const MEMBER: &str = "m";

/// Where period `p`'s sums are kept.
pub fn path(p: &Period) -> String {
    format!("_state/kpi-cache/{}_{}.sum.parquet", p.start, p.end)
}

/// The counts of every partition of `listing` (path, version) for `periods`, when every
/// period's sum file sums exactly those partitions at those versions.
pub async fn load(
    store: &Store,
    periods: &[Period],
    agencies: &Agencies,
    listing: &[(String, String)],
) -> Option<Partial> {
    let fp = fingerprint(agencies);
    let want: BTreeMap<String, String> = listing.iter().cloned().collect();
    let mut total = Partial::new(periods.len());
    for (i, p) in periods.iter().enumerate() {
        let bytes = match store.get(&path(p)).await {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(e) => {
                warn!(file = %path(p), error = %e, "the KPI sums cannot be read: counting from the cache");
                return None;
            }
        };
        let (fp, want) = (fp.clone(), want.clone());
        let read = blocking(move || {
            let used = add(&mut total, i, bytes, &fp, &want)?;
            Ok((total, used))
        })
        .await;
        match read {
            Ok((t, true)) => total = t,
            Ok((_, false)) => {
                debug!(file = %path(p), "the KPI sums are of another staging: counting from the cache");
                return None;
            }
            Err(e) => {
                warn!(file = %path(p), error = %e, "the KPI sums cannot be read: counting from the cache");
                return None;
            }
        }
    }
    Some(total)
}

/// Adds period `i`'s sums in `bytes` to `total` when they were made under `fp` over exactly
/// the partitions of `want`; whether they were.
fn add(
    total: &mut Partial,
    i: usize,
    bytes: Bytes,
    fp: &str,
    want: &BTreeMap<String, String>,
) -> Result<bool> {
    let file = ParquetFile::open(bytes)?;
    let mut frames = vec![];
    let mut members = BTreeMap::new();
    for range in file.ranges(ROW_GROUP_ROWS) {
        let df = file.read(None, range)?;
        let text = |c: &str| -> Result<Vec<Option<String>>> {
            Ok(df
                .column(c)?
                .str()?
                .iter()
                .map(|s| s.map(str::to_string))
                .collect())
        };
        if text("fingerprint")?
            .iter()
            .any(|f| f.as_deref() != Some(fp))
        {
            return Ok(false);
        }
        let (kind, part, version) = (text("kind")?, text("partition")?, text("version")?);
        for r in 0..df.height() {
            if kind[r].as_deref() == Some(MEMBER) {
                let (Some(p), Some(v)) = (&part[r], &version[r]) else {
                    return Err(Error::Internal(
                        "a KPI sums member without its partition".into(),
                    ));
                };
                members.insert(p.clone(), v.clone());
            }
        }
        frames.push(df);
    }
    if &members != want {
        return Ok(false);
    }
    let all = BTreeSet::from([ALL.to_string()]);
    for df in &frames {
        add_rows(total, i, df, &all)?;
    }
    Ok(true)
}

/// Keeps `total`, the counts of every partition of `listing` for `periods`, as the sums of
/// each period. A failure is a warning: the next run counts from the cache.
pub async fn save(
    store: &Store,
    enc: &ParquetEncoder,
    periods: &[Period],
    agencies: &Agencies,
    listing: &[(String, String)],
    total: &Partial,
) {
    let fp = fingerprint(agencies);
    for (i, p) in periods.iter().enumerate() {
        let written = match file(enc, &fp, listing, total, i) {
            Ok(b) => store.publish(&path(p), Bytes::from(b)).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            warn!(file = %path(p), error = %e, "the KPI sums could not be written: the next run counts from the cache");
        }
    }
}

/// Period `i`'s sum file: the summed rows, then one row per member partition.
fn file(
    enc: &ParquetEncoder,
    fp: &str,
    listing: &[(String, String)],
    total: &Partial,
    i: usize,
) -> Result<Vec<u8>> {
    let mut df = frame(fp, ALL, ALL, total, i)?;
    let n = listing.len();
    let text =
        |f: &dyn Fn(&(String, String)) -> &str| -> Vec<&str> { listing.iter().map(f).collect() };
    let cols = df
        .schema()
        .iter()
        .map(|(name, dtype)| match name.as_str() {
            "fingerprint" => Column::new(name.clone(), vec![fp; n]),
            "partition" => Column::new(name.clone(), text(&|m| m.0.as_str())),
            "version" => Column::new(name.clone(), text(&|m| m.1.as_str())),
            "kind" => Column::new(name.clone(), vec![MEMBER; n]),
            _ if dtype == &DataType::Int64 => Column::new(name.clone(), vec![0i64; n]),
            _ => Column::full_null(name.clone(), n, dtype),
        })
        .collect();
    df.vstack_mut_owned(DataFrame::new(n, cols)?)?;
    enc.encode(df)
}

/// The column of count `m` of a cached row.
fn count_col(m: usize) -> String {
    format!("c{m:02}")
}

/// Period `i` of `partial` as cache rows: `g` rows per agency × field, `u` rows per agency ×
/// procedure (the count in `c00`).
pub(super) fn frame(
    fp: &str,
    partition: &str,
    version: &str,
    partial: &Partial,
    i: usize,
) -> Result<DataFrame> {
    let (groups, used) = partial.rows(i);
    let n = groups.len() + used.len();
    let kind: Vec<&str> = (0..n)
        .map(|r| if r < groups.len() { "g" } else { "u" })
        .collect();
    let agency: Vec<&str> = groups
        .iter()
        .map(|g| g.agency)
        .chain(used.iter().map(|u| u.0))
        .collect();
    let key: Vec<Option<&str>> = groups
        .iter()
        .map(|g| g.field)
        .chain(used.iter().map(|u| u.1))
        .collect();
    let mut cols = vec![
        Column::new("fingerprint".into(), vec![fp; n]),
        Column::new("partition".into(), vec![partition; n]),
        Column::new("version".into(), vec![version; n]),
        Column::new("kind".into(), kind),
        Column::new("agency_code".into(), agency),
        Column::new("key".into(), key),
    ];
    for m in 0..PER_PERIOD {
        let v: Vec<i64> = groups
            .iter()
            .map(|g| g.counts[m])
            .chain(used.iter().map(|u| if m == 0 { u.2 } else { 0 }))
            .collect();
        cols.push(Column::new(count_col(m).into(), v));
    }
    let names: Vec<Option<&str>> = groups
        .iter()
        .map(|g| g.agency_name)
        .chain(used.iter().map(|_| None))
        .collect();
    let fields: Vec<Option<&str>> = groups
        .iter()
        .map(|g| g.field_name)
        .chain(used.iter().map(|_| None))
        .collect();
    let cases: Vec<i64> = groups
        .iter()
        .map(|g| g.cases)
        .chain(used.iter().map(|_| 0))
        .collect();
    cols.extend([
        Column::new("agency_name_text".into(), names),
        Column::new("field_name".into(), fields),
        Column::new("cases".into(), cases),
    ]);
    Ok(DataFrame::new(n, cols)?)
}

/// Adds the cache rows of `df` (period `i`) that belong to `partitions` to `total`.
pub(super) fn add_rows(
    total: &mut Partial,
    i: usize,
    df: &DataFrame,
    partitions: &BTreeSet<String>,
) -> Result<()> {
    let text = |c: &str| -> Result<Vec<Option<&str>>> { Ok(df.column(c)?.str()?.iter().collect()) };
    let (part, kind, agency, key) = (
        text("partition")?,
        text("kind")?,
        text("agency_code")?,
        text("key")?,
    );
    let (names, fields) = (text("agency_name_text")?, text("field_name")?);
    let damaged = || Error::Internal("a damaged KPI cache row".into());
    let ints = |c: &str| -> Result<Vec<i64>> {
        let n = df.column(c)?.i64()?.rechunk();
        Ok(n.cont_slice().map_err(|_| damaged())?.to_vec())
    };
    let counts: Vec<Vec<i64>> = (0..PER_PERIOD)
        .map(|m| ints(&count_col(m)))
        .collect::<Result<_>>()?;
    let cases = ints("cases")?;
    let mut row_counts = vec![0i64; PER_PERIOD];
    // Rows come a partition at a time: decide once per run of rows.
    let mut last: Option<(&str, bool)> = None;
    for r in 0..df.height() {
        let p = part[r].ok_or_else(damaged)?;
        let wanted = match last {
            Some((q, w)) if q == p => w,
            _ => partitions.contains(p),
        };
        last = Some((p, wanted));
        if !wanted {
            continue;
        }
        for (m, c) in counts.iter().enumerate() {
            row_counts[m] = c[r];
        }
        let used = match kind[r] {
            Some("g") => false,
            Some("u") => true,
            _ => return Err(damaged()),
        };
        let row = super::partial::Row {
            agency: agency[r].ok_or_else(damaged)?,
            key: key[r],
            counts: &row_counts,
            names: (names[r], fields[r]),
            cases: cases[r],
        };
        total.add_row(i, row, used, i == 0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kpi::cache::tests::periods;
    use crate::kpi::partial::{Row, PER_PERIOD};

    fn partial(n: i64) -> Partial {
        let mut p = Partial::new(2);
        for i in 0..2 {
            let counts: Vec<i64> = (0..PER_PERIOD as i64).map(|c| (c + i as i64) * n).collect();
            for (agency, name) in [("A", Some("Sở A")), ("B", None)] {
                let row = |key| Row {
                    agency,
                    key,
                    counts: &counts,
                    names: (name, Some("Hộ tịch")),
                    cases: n,
                };
                p.add_row(i, row(Some("HT")), false, i == 0);
                p.add_row(i, row(None), false, i == 0);
                p.add_row(i, row(Some("1.0001")), true, false);
            }
        }
        p
    }

    fn frames(p: Partial) -> String {
        format!("{:?}", p.total(&periods()).unwrap().frames())
    }

    fn listing(v: &str) -> Vec<(String, String)> {
        vec![
            (
                "cases/case_month=2024-07/part-0.parquet".into(),
                "v1".into(),
            ),
            ("cases/case_month=2024-08/part-0.parquet".into(), v.into()),
        ]
    }

    /// The sums come back as they were summed, for staging exactly as they list it, and for
    /// nothing else: a partition replaced, added or gone, other agencies, a damaged file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sums_come_back_only_for_the_staging_they_sum() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), "t").unwrap();
        let enc = ParquetEncoder::new().unwrap();
        let agencies = Agencies::default();
        let ps = periods();
        assert!(load(&store, &ps, &agencies, &listing("v1")).await.is_none());
        let mut total = partial(3);
        total.add(&partial(5));
        save(&store, &enc, &ps, &agencies, &listing("v1"), &total).await;
        let got = load(&store, &ps, &agencies, &listing("v1")).await.unwrap();
        assert_eq!(frames(got), frames(total.clone()));
        // A partition replaced, one more, one gone: not these sums.
        assert!(load(&store, &ps, &agencies, &listing("v2")).await.is_none());
        let mut more = listing("v1");
        more.push((
            "cases/case_month=2024-09/part-0.parquet".into(),
            "v1".into(),
        ));
        assert!(load(&store, &ps, &agencies, &more).await.is_none());
        assert!(load(&store, &ps, &agencies, &listing("v1")[..1])
            .await
            .is_none());
        // Other agencies: not these sums.
        let other = Agencies::new(crate::domain::agency::Catalog::new(vec![
            crate::normalise::Agency {
                code: "A".into(),
                ..Default::default()
            },
        ]))
        .unwrap();
        assert!(load(&store, &ps, &other, &listing("v1")).await.is_none());
        // One period's file damaged: nothing, and no error.
        store
            .publish(&path(&ps[1]), Bytes::from_static(b"damaged"))
            .await
            .unwrap();
        assert!(load(&store, &ps, &agencies, &listing("v1")).await.is_none());
        // Staging of no partitions sums to nothing.
        let none = Partial::new(2);
        save(&store, &enc, &ps, &agencies, &[], &none).await;
        let got = load(&store, &ps, &agencies, &[]).await.unwrap();
        assert_eq!(frames(got), frames(none));
    }
}

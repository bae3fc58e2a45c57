//! Stage 4: staging. The normalised records of a run meet the staging table `cases/` one
//! bucket at a time: each bucket is read, merged with the bucket's new records keeping the
//! latest version of each case ([`upsert`]), and replaced by one write. A replay rebuilds the
//! buckets from nothing. The table's columns and buckets are in [`schema`].

pub mod schema;
pub mod upsert;

use std::sync::Arc;

use futures::StreamExt;
use polars::prelude::DataFrame;

use crate::error::Result;
use crate::parquet::{blocking, decode, write_table, ParquetEncoder};
use crate::progress;
use crate::store::{Store, WrittenFile};
use schema::bucket_path;

/// Buckets merged at once: one, since polars already uses every core within a merge (two at
/// once measured no faster), and memory then holds the copies of a single bucket.
const AT_ONCE: usize = 1;

/// The new records of a bucket, with `_order` (read from the spill).
pub type NewRecords = Arc<dyn Fn(u32) -> Result<DataFrame> + Send + Sync>;

/// What a merge wrote.
#[derive(Debug, Default)]
pub struct Merged {
    /// The buckets written, in path order.
    pub files: Vec<WrittenFile>,
    /// New records superseded by a later version of their case in the same run.
    pub duplicates: u64,
}

/// Merges the new records of each of `buckets` into staging. With `rebuild`, the staged
/// buckets are ignored and every other bucket is removed.
pub async fn merge(
    store: &Store,
    enc: &ParquetEncoder,
    buckets: Vec<u32>,
    new: NewRecords,
    rebuild: bool,
) -> Result<Merged> {
    if rebuild {
        for (path, _) in store.list("cases").await? {
            if !buckets.iter().any(|b| path == bucket_path(*b)) {
                store.delete(&path).await?;
            }
        }
    }
    let bar = progress::bar(Some(buckets.len() as u64), "buckets", "staging");
    let merged: Vec<Result<(WrittenFile, u64)>> = futures::stream::iter(buckets)
        .map(|bucket| {
            let (new, bar) = (new.clone(), bar.clone());
            async move {
                let r = merge_bucket(store, enc, bucket, new, rebuild).await;
                bar.inc(1);
                r
            }
        })
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    bar.finish_and_clear();
    let mut out = Merged::default();
    for m in merged {
        let (file, duplicates) = m?;
        out.duplicates += duplicates;
        out.files.push(file);
    }
    out.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// One bucket: read, merged, written.
async fn merge_bucket(
    store: &Store,
    enc: &ParquetEncoder,
    bucket: u32,
    new: NewRecords,
    rebuild: bool,
) -> Result<(WrittenFile, u64)> {
    let path = bucket_path(bucket);
    let old = match rebuild {
        false => store.get(&path).await?,
        true => None,
    };
    let (merged, duplicates) = blocking(move || {
        let old = old
            .map(|b| decode(b).and_then(schema::conform))
            .transpose()
            .map_err(|e| {
                e.doing(format!(
                "{} is not readable Parquet: run `motcua replay --all` to rebuild staging from raw",
                bucket_path(bucket)
            ))
            })?;
        let new = new(bucket)?;
        let duplicates = (new.height() - new.column("case_id")?.n_unique()?) as u64;
        Ok((upsert::upsert(old, new)?, duplicates))
    })
    .await?;
    let file = write_table(store, enc, &path, merged).await?;
    Ok((file, duplicates))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalise::{Normaliser, PiiKey};
    use serde_json::json;

    /// A bucket of one case with a hand-over goes through spill, merge and Parquet whole
    /// (polars 0.55 makes the columns of one-row frames scalars; a list of structs must survive
    /// that).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_transferred_case_is_staged_with_its_transfers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), "t").unwrap();
        let enc = ParquetEncoder::new().unwrap();
        let mut n = Normaliser::new(PiiKey::new(b"k"), "r");
        n.add_records("raw/p", &[json!({"MaHoSo":"A","MaDonVi":"X1","TrangThaiHoSo":"9",
            "NgayTiepNhan":"20250502090000","NgayKetThucXuLy":"20250720100000","NgayCapNhat":"20251001120000",
            "DanhSachChuyenDonVi":[{"MaDonViCu":"H1","MaDonViMoi":"X1","NgayChuyen":"30/06/2025 23:30:00"}]})]);
        let mut spill = crate::normalise::Spill::new().unwrap();
        spill.add(n.finish().unwrap().cases).unwrap();
        let spill = Arc::new(spill);
        let buckets = spill.buckets();
        let merged = merge(
            &store,
            &enc,
            buckets,
            Arc::new(move |b| spill.read(b)),
            false,
        )
        .await
        .unwrap();
        let df = decode(store.get(&merged.files[0].path).await.unwrap().unwrap()).unwrap();
        let t = df
            .column("transfers")
            .unwrap()
            .list()
            .unwrap()
            .get_as_series(0)
            .unwrap();
        let t = t.struct_().unwrap().fields_as_series();
        assert_eq!(t[0].str().unwrap().get(0), Some("H1"));
        assert_eq!(t[1].str().unwrap().get(0), Some("X1"));
        let on = t[2].cast(&polars::prelude::DataType::Int32).unwrap();
        assert_eq!(on.i32().unwrap().get(0), Some(20_269), "2025-06-30, local");
    }

    /// Two runs merged into staging: each case once, in its bucket, the later version kept;
    /// a rebuild keeps only the buckets it was given.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn buckets_merge_run_after_run() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), "t").unwrap();
        let enc = ParquetEncoder::new().unwrap();
        let run = |status: i32, ids: std::ops::Range<u32>| -> DataFrame {
            let mut n = Normaliser::new(PiiKey::new(b"k"), "r");
            let recs: Vec<_> = ids
                .map(|i| {
                    json!({"MaHoSo": format!("C{i}"), "MaDonVi":"X", "TrangThaiHoSo": status,
                    "NgayTiepNhan":"20240701080000", "NgayKetThucXuLy":"20240702080000",
                    "NgayCapNhat": format!("2024070{}090000", status - 3)})
                })
                .collect();
            n.add_records("raw/p", &recs);
            n.finish().unwrap().cases
        };
        let split = |df: DataFrame| -> (Vec<u32>, NewRecords) {
            let parts = schema::by_bucket(&df).unwrap();
            let buckets = parts.keys().copied().collect();
            let parts = Arc::new(parts);
            (
                buckets,
                Arc::new(move |b| Ok(parts.get(&b).cloned().unwrap())),
            )
        };
        let (b, new) = split(run(4, 0..300));
        let first = merge(&store, &enc, b, new, false).await.unwrap();
        assert_eq!(
            first.files.iter().map(|f| f.rows.unwrap()).sum::<u64>(),
            300
        );
        let (b, new) = split(run(9, 200..400));
        let second = merge(&store, &enc, b, new, false).await.unwrap();
        assert_eq!(
            second.files.iter().map(|f| f.rows.unwrap()).sum::<u64>(),
            400
        );
        let mut resolved = 0;
        for f in &second.files {
            let df = decode(store.get(&f.path).await.unwrap().unwrap()).unwrap();
            let st = df.column("status").unwrap().i32().unwrap();
            resolved += st.iter().flatten().filter(|s| *s == 9).count();
        }
        assert_eq!(resolved, 200, "the later version of C200–C299 won");
        let (mut b, new) = split(run(4, 0..3));
        b.truncate(1);
        let rebuilt = merge(&store, &enc, b, new, true).await.unwrap();
        assert_eq!(rebuilt.files.len(), 1);
        assert_eq!(store.list("cases").await.unwrap().len(), 1);
    }
}

//! Staging written by a motcua before the partitions by date — `cases/bucket=NN/part-0.parquet`,
//! sixteen buckets by a hash of the id — is rebuilt in today's layout once, from itself (the raw
//! layer may have been pruned): its rows are read a row group at a time and spilled by
//! partition, the partitions are written, and only then are the old files removed. A migration
//! cut short leaves the old files, so the next run simply does it again. Until it ends, a
//! reader of `cases/` may see a case in both layouts.

use std::sync::Arc;

use polars::prelude::*;
use tracing::info;

use super::layout::is_hash_layout;
use super::schema::{to_staging, ORDER};
use super::{merge, Merged};
use crate::error::{Error, Result};
use crate::normalise::Spill;
use crate::parquet::{blocking, ParquetEncoder, ParquetFile, ROW_GROUP_ROWS};
use crate::store::Store;

/// Rebuilds staging in today's layout if any file of the old one is there; what it wrote.
pub async fn migrate(store: &Store, enc: &ParquetEncoder) -> Result<Option<Merged>> {
    // The older layout has its buckets directly under `cases/`: one level listed tells (every
    // run asks, and listing all of staging with each file's metadata cost a run twice).
    let folders = store.folders("cases").await?;
    let older = |f: &String| {
        let name = f
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        name.starts_with("bucket=")
    };
    if !folders.iter().any(older) {
        return Ok(None);
    }
    let old: Vec<String> = store
        .list("cases")
        .await?
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| is_hash_layout(p))
        .collect();
    if old.is_empty() {
        return Ok(None);
    }
    info!(
        files = old.len(),
        "staging is in the layout of an older motcua (buckets by a hash of the id): rebuilding it by the date in the case id, once"
    );
    let mut spill = Spill::new()?;
    let mut order = 0i64;
    for path in old {
        let bytes = store.get(&path).await?.ok_or_else(|| {
            Error::Internal(format!(
                "{path} vanished while migrating staging (another writer?)"
            ))
        })?;
        (spill, order) = blocking(move || {
            let unreadable = |e: Error| {
                e.doing(format!(
                    "{path} is not readable Parquet: run `motcua replay --all` to rebuild staging from raw"
                ))
            };
            let f = ParquetFile::open(bytes).map_err(unreadable)?;
            for range in f.ranges(ROW_GROUP_ROWS) {
                let mut df = to_staging(f.read(None, range).map_err(unreadable)?)?;
                let n = df.height() as i64;
                df.with_column(Column::new(ORDER.into(), (order..order + n).collect::<Vec<i64>>()))?;
                order += n;
                spill.add(df)?;
            }
            Ok((spill, order))
        })
        .await?;
    }
    spill.seal()?;
    let merged = merge(store, enc, Arc::new(spill), true).await?;
    info!(
        partitions = merged.files.len(),
        cases = merged.files.iter().filter_map(|f| f.rows).sum::<u64>(),
        removed = merged.removed,
        "staging rebuilt by the date in the case id"
    );
    Ok(Some(merged))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalise::{Normaliser, PiiKey};
    use crate::parquet::decode;
    use crate::stage::Partition;
    use serde_json::json;

    /// Staging of the hash layout (two buckets, one of them written before `transfers`) becomes
    /// today's: every case once, in its partition, nothing of the old files left.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hash_buckets_become_partitions_by_date() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), "t").unwrap();
        let enc = ParquetEncoder { row_group_rows: 5 };
        let mut n = Normaliser::new(PiiKey::new(b"k"), "r");
        let recs: Vec<_> = (0..40)
            .map(|i| json!({"MaHoSo": if i % 5 == 0 { format!("C{i}") } else { format!("X-24{:02}15-{i:06}", 1 + i % 12) },
                "MaDonVi":"X", "TrangThaiHoSo": 4, "NgayTiepNhan":"20240701080000", "NgayCapNhat":"20240701090000"}))
            .collect();
        n.add_records("raw/p", &recs);
        let cases = to_staging(n.finish().unwrap().cases).unwrap();
        let first = cases.slice(0, 25);
        let second = cases.slice(25, 15).drop("transfers").unwrap();
        for (path, df) in [
            ("cases/bucket=00/part-0.parquet", first),
            ("cases/bucket=07/part-0.parquet", second),
        ] {
            store
                .publish(path, bytes::Bytes::from(enc.encode(df).unwrap()))
                .await
                .unwrap();
        }
        let m = migrate(&store, &enc).await.unwrap().unwrap();
        assert_eq!(m.removed, 2);
        let mut ids = vec![];
        for (path, _) in store.list("cases").await.unwrap() {
            let p = Partition::from_path(&path).unwrap_or_else(|| panic!("{path}"));
            let df = decode(store.get(&path).await.unwrap().unwrap()).unwrap();
            for id in df
                .column("case_id")
                .unwrap()
                .str()
                .unwrap()
                .iter()
                .flatten()
            {
                assert_eq!(Partition::of(id), p);
                ids.push(id.to_string());
            }
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 40);
        assert!(migrate(&store, &enc).await.unwrap().is_none(), "once");
    }
}

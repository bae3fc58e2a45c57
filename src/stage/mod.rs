//! Stage 4: staging. The normalised records of a run meet the staging table `cases/` one
//! partition at a time ([`layout`]: by the date in the case id, so a night's changes touch the
//! newest few): the partition's key columns and the new records' decide which version of each
//! case is kept ([`upsert`]), then the kept rows are streamed, a row group at a time, from the
//! old file and the spill into the new file, which replaces the old by one write. Two partitions
//! are merged at once, one per core; each holds its keys and a row group, never a whole
//! partition. A replay rebuilds the
//! partitions from nothing and then removes the ones it did not write; staging in the layout
//! before this one is rebuilt once ([`migrate`]). The table's columns are in [`schema`].

pub mod layout;
pub mod migrate;
pub mod schema;
pub mod upsert;

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use polars::prelude::*;

use crate::error::Result;
use crate::normalise::Spill;
use crate::parquet::{blocking, ParquetEncoder, ParquetFile, RowGroupWriter};
use crate::progress;
use crate::store::{Store, WrittenFile};
pub use layout::Partition;
use schema::ORDER;

/// The columns that decide which version of a case is kept.
const KEYS: [&str; 3] = ["case_id", "updated_at", "source_run_id"];

/// What a merge wrote.
#[derive(Debug, Default)]
pub struct Merged {
    /// The partitions written, in path order.
    pub files: Vec<WrittenFile>,
    /// New records superseded by a later version of their case in the same run.
    pub duplicates: u64,
    /// Files a rebuild removed (partitions it did not write, files of an older layout).
    pub removed: u64,
}

/// Merges the spilled records into staging, a partition at a time. With `rebuild`, the staged
/// partitions are ignored, and once every partition is written every other file under `cases/`
/// is removed.
pub async fn merge(
    store: &Store,
    enc: &ParquetEncoder,
    spill: Arc<Spill>,
    rebuild: bool,
) -> Result<Merged> {
    let partitions = spill.partitions();
    let bar = progress::bar(Some(partitions.len() as u64), "partitions", "staging");
    let mut out = Merged::default();
    // Two partitions at a time, one per core: each holds its keys and a row group.
    let mut written = futures::stream::iter(partitions)
        .map(|p| merge_one(store, enc, spill.clone(), p, rebuild))
        .buffer_unordered(MERGING);
    while let Some((file, duplicates)) = written.try_next().await? {
        out.duplicates += duplicates;
        out.files.push(file);
        bar.inc(1);
    }
    bar.finish_and_clear();
    if rebuild {
        let written: BTreeSet<&str> = out.files.iter().map(|f| f.path.as_str()).collect();
        for (path, _) in store.list("cases").await? {
            if !written.contains(path.as_str()) {
                store.delete(&path).await?;
                out.removed += 1;
            }
        }
    }
    out.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Partitions merged at once.
const MERGING: usize = 2;

/// Rows of a staging row group, and of the slices a merge copies: every copy a row takes on its
/// way (decoded, taken, stacked, encoded) is held for a slice this size, twice (one per merge
/// at once). At 65,536 rows those copies of two merges took about 300 MiB at ten million
/// cases.
pub const GROUP_ROWS: usize = 16_384;

/// Room given a partition's new file at once, at most (a larger one grows as written).
const ROOM_MAX: usize = 256 << 20;

/// Merges partition `p` and writes its file; the file and the records superseded.
async fn merge_one(
    store: &Store,
    enc: &ParquetEncoder,
    spill: Arc<Spill>,
    p: Partition,
    rebuild: bool,
) -> Result<(WrittenFile, u64)> {
    let old = match rebuild {
        false => store.get(&p.path()).await?,
        true => None,
    };
    let path = p.path();
    let enc = enc.clone();
    let (bytes, rows, duplicates) = blocking(move || merged(old, &spill, &p, &enc)).await?;
    let file = WrittenFile {
        path,
        bytes: bytes.len() as u64,
        rows: Some(rows),
    };
    store.publish(&file.path, Bytes::from(bytes)).await?;
    Ok((file, duplicates))
}

/// One partition merged: the new file's bytes, its rows, and the new records superseded within
/// the run.
fn merged(
    old: Option<Bytes>,
    spill: &Spill,
    p: &Partition,
    enc: &ParquetEncoder,
) -> Result<(Vec<u8>, u64, u64)> {
    let unreadable = |e: crate::error::Error| {
        e.doing(format!(
            "{} is not readable Parquet: run `motcua replay --all` to rebuild staging from raw",
            p.path()
        ))
    };
    let old_bytes = old.as_ref().map_or(0, |b| b.len());
    let old = old.map(ParquetFile::open).transpose().map_err(unreadable)?;
    let new = spill.files(p)?;
    let old_keys = match &old {
        Some(f) => f
            .read(Some(&KEYS), (0, f.rows()))
            .map_err(unreadable)?
            .select(KEYS)?
            .lazy()
            .with_column(lit(-1i64).cast(DataType::Int64).alias(ORDER))
            .collect()?,
        None => DataFrame::empty_with_schema(&keys_schema()),
    };
    let old_rows = old_keys.height();
    // Each file's keys with a trust flag in place of the run id, so only ids, stamps, flags
    // and arrival orders are held for the whole partition.
    let mut keys = upsert::with_trust(old_keys)?;
    let with_order: Vec<&str> = KEYS.iter().copied().chain([ORDER]).collect();
    for f in &new {
        let read = f.read(Some(&with_order), (0, f.rows()))?;
        keys.vstack_mut_owned(
            upsert::with_trust(read.select(with_order.clone())?)?
                .select(keys.get_column_names_owned())?,
        )?;
    }
    let new_rows = keys.height() - old_rows;
    let (kept, new_cases) = upsert::latest_rows_counted(&keys, old_rows)?;
    drop(keys);
    let (mut keep_old, mut keep_new): (Vec<usize>, Vec<usize>) = (vec![], vec![]);
    for i in kept.into_no_null_iter().map(|i| i as usize) {
        match i < old_rows {
            true => keep_old.push(i),
            false => keep_new.push(i - old_rows),
        }
    }
    keep_old.sort_unstable();
    keep_new.sort_unstable();
    // Room for the file at once: the old file's size and half the spill's (plain LZ4 pages:
    // 1,461 MB of spill made 691 MB of staging at ten million cases), capped.
    let room = old_bytes + spill.bytes(p) as usize / 2;
    let mut w = enc.writer_of_groups(
        &schema::staging_polars_schema(),
        GROUP_ROWS,
        room.min(ROOM_MAX),
    )?;
    if let Some(f) = &old {
        copy_kept(&mut w, std::slice::from_ref(f), &keep_old).map_err(unreadable)?;
    }
    copy_kept(&mut w, &new, &keep_new)?;
    let rows = w.rows();
    Ok((w.finish()?, rows, (new_rows - new_cases) as u64))
}

/// Streams the rows numbered `keep` (ascending, counted across `files` in order) into `w`, a
/// row group at a time, in today's staging columns.
fn copy_kept(w: &mut RowGroupWriter<Vec<u8>>, files: &[ParquetFile], keep: &[usize]) -> Result<()> {
    let mut base = 0;
    let mut next = 0;
    for f in files {
        for (offset, len) in f.ranges(GROUP_ROWS) {
            let (from, to) = (base + offset, base + offset + len);
            let start = next;
            while next < keep.len() && keep[next] < to {
                next += 1;
            }
            let picked = &keep[start..next];
            if picked.is_empty() {
                continue;
            }
            let chunk = schema::to_staging(f.read(None, (offset, len))?)?;
            let chunk = match picked.len() == len {
                true => chunk,
                false => pick(&chunk, picked, from)?,
            };
            w.push(chunk)?;
        }
        base += f.rows();
    }
    Ok(())
}

/// The rows `rows` (ascending, numbered from `from`) of `chunk`. Kept rows come in long runs
/// (a replaced version here and there): each run is sliced, which copies nothing, and the
/// writer joins them. Rows scattered are gathered — polars gathers a list of hand-overs row by
/// row, each row a fresh allocation, so runs are worth preferring.
fn pick(chunk: &DataFrame, rows: &[usize], from: usize) -> Result<DataFrame> {
    let mut runs: Vec<(usize, usize)> = vec![];
    for r in rows.iter().map(|r| r - from) {
        match runs.last_mut() {
            Some((start, len)) if *start + *len == r => *len += 1,
            _ => runs.push((r, 1)),
        }
    }
    if runs.len() * 8 > rows.len() {
        let idx: Vec<IdxSize> = rows.iter().map(|i| (i - from) as IdxSize).collect();
        return Ok(chunk.take(&IdxCa::from_vec("rows".into(), idx))?);
    }
    let mut out = chunk.clear();
    for (start, len) in runs {
        out.vstack_mut(&chunk.slice(start as i64, len))?;
    }
    Ok(out)
}

/// The key columns and `_order`, no rows.
fn keys_schema() -> Schema {
    let all = schema::spill_schema();
    KEYS.iter()
        .chain([&ORDER])
        .filter_map(|k| all.get_field(k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Picking rows gives what gathering them gives, whether they come in runs (sliced) or
    /// scattered (gathered), lists included.
    #[test]
    fn picked_rows_are_the_rows_asked_for() {
        let n = 100usize;
        let lists: Vec<Series> = (0..n)
            .map(|i| Series::new("".into(), vec![i as i64; i % 3]))
            .collect();
        let df = df!(
            "id" => (0..n).map(|i| format!("case-{i}")).collect::<Vec<_>>(),
            "l" => lists,
        )
        .unwrap();
        let from = 1000;
        let runs: Vec<usize> = (0..n).filter(|i| i % 40 != 7).map(|i| i + from).collect();
        let scattered: Vec<usize> = (0..n).filter(|i| i % 2 == 0).map(|i| i + from).collect();
        for rows in [runs, scattered, vec![from + 5]] {
            let idx: Vec<IdxSize> = rows.iter().map(|i| (i - from) as IdxSize).collect();
            let want = df.take(&IdxCa::from_vec("rows".into(), idx)).unwrap();
            let got = pick(&df, &rows, from).unwrap();
            assert!(got.equals_missing(&want), "{got} {want}");
        }
    }
    use crate::normalise::{Normaliser, PiiKey};
    use crate::parquet::decode;
    use serde_json::json;

    fn spill_of(df: DataFrame) -> Arc<Spill> {
        let mut spill = Spill::new().unwrap();
        spill.add(df).unwrap();
        spill.seal().unwrap();
        Arc::new(spill)
    }

    /// A partition of one case with a hand-over goes through spill, merge and Parquet whole
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
        let merged = merge(&store, &enc, spill_of(n.finish().unwrap().cases), false)
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

    /// Cases `ids` with `status`, dated ids (`X-2407DD-…`, in July's buckets) and undated ones.
    fn run(status: i32, ids: std::ops::Range<u32>) -> DataFrame {
        let mut n = Normaliser::new(PiiKey::new(b"k"), "r");
        let recs: Vec<_> = ids
            .map(|i| {
                let id = match i % 4 {
                    0 => format!("C{i}"),
                    _ => format!("X-2407{:02}-{i:06}", 1 + i % 30),
                };
                json!({"MaHoSo": id, "MaDonVi":"X", "TrangThaiHoSo": status,
                "NgayTiepNhan":"20240701080000", "NgayKetThucXuLy":"20240702080000",
                "NgayCapNhat": format!("2024070{}090000", status - 3)})
            })
            .collect();
        n.add_records("raw/p", &recs);
        n.finish().unwrap().cases
    }

    async fn staged(store: &Store) -> DataFrame {
        let mut all = schema::empty_staging().unwrap();
        for (path, _) in store.list("cases").await.unwrap() {
            let df = decode(store.get(&path).await.unwrap().unwrap()).unwrap();
            let ids = df.column("case_id").unwrap().str().unwrap();
            let p = Partition::from_path(&path).unwrap();
            assert!(
                ids.iter().flatten().all(|id| Partition::of(id) == p),
                "{path}"
            );
            all.vstack_mut_owned(df).unwrap();
        }
        all
    }

    /// Two runs merged into staging, in row groups of seven rows so that every partition is
    /// streamed in several: each case once, in its partition, the later version kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn partitions_merge_run_after_run_a_row_group_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), "t").unwrap();
        let enc = ParquetEncoder { row_group_rows: 7 };
        let first = merge(&store, &enc, spill_of(run(4, 0..300)), false)
            .await
            .unwrap();
        assert_eq!(
            first.files.iter().map(|f| f.rows.unwrap()).sum::<u64>(),
            300
        );
        let second = merge(&store, &enc, spill_of(run(9, 200..400)), false)
            .await
            .unwrap();
        assert_eq!(second.duplicates, 0);
        let all = staged(&store).await;
        assert_eq!(all.height(), 400);
        assert_eq!(all.column("case_id").unwrap().n_unique().unwrap(), 400);
        let st = all.column("status").unwrap().i32().unwrap();
        assert_eq!(
            st.iter().flatten().filter(|s| *s == 9).count(),
            200,
            "the later version of 200–399 won"
        );
        // An older version arriving later changes nothing; a run's own duplicates are counted.
        let mut again = run(4, 250..260);
        again.vstack_mut_owned(run(4, 250..255)).unwrap();
        let n = again.height() as i64;
        again
            .with_column(Column::new(ORDER.into(), (1..=n).collect::<Vec<i64>>()))
            .unwrap();
        let third = merge(&store, &enc, spill_of(again), false).await.unwrap();
        assert_eq!(third.duplicates, 5);
        let all = staged(&store).await;
        let st = all.column("status").unwrap().i32().unwrap();
        assert_eq!(st.iter().flatten().filter(|s| *s == 9).count(), 200);
    }

    /// A merge rewrites only the partitions its records fall in; a rebuild writes its own and
    /// then removes every other file under `cases/`, an older layout's included.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_the_partitions_of_the_changes_are_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), "t").unwrap();
        let enc = ParquetEncoder::new().unwrap();
        merge(&store, &enc, spill_of(run(4, 0..400)), false)
            .await
            .unwrap();
        let before = store.list("cases").await.unwrap();
        assert_eq!(before.len(), 20, "16 hash buckets and July's four");
        // Days 1–8 of July only: ids 1, 2, 3, 5, … with 1 + i % 30 ≤ 8.
        let ids: Vec<u32> = (0..400)
            .filter(|i| i % 4 != 0 && i % 30 < 8)
            .take(10)
            .collect();
        let mut n = Normaliser::new(PiiKey::new(b"k"), "r2");
        let recs: Vec<_> = ids
            .iter()
            .map(|i| {
                json!({"MaHoSo": format!("X-2407{:02}-{i:06}", 1 + i % 30),
            "MaDonVi":"X", "TrangThaiHoSo": 9, "NgayTiepNhan":"20240701080000",
            "NgayKetThucXuLy":"20240702080000", "NgayCapNhat":"20240710090000"})
            })
            .collect();
        n.add_records("raw/p", &recs);
        let m = merge(&store, &enc, spill_of(n.finish().unwrap().cases), false)
            .await
            .unwrap();
        assert_eq!(
            m.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            ["cases/case_month=2024-07/bucket=0/part-0.parquet"]
        );
        store
            .publish(
                "cases/bucket=03/part-0.parquet",
                Bytes::from_static(b"old layout"),
            )
            .await
            .unwrap();
        let rebuilt = merge(&store, &enc, spill_of(run(4, 1..4)), true)
            .await
            .unwrap();
        assert_eq!(rebuilt.files.len(), 1);
        assert_eq!(rebuilt.removed, 20);
        assert_eq!(store.list("cases").await.unwrap().len(), 1);
    }

    /// A partition that is not Parquet names itself and the way out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreadable_partition_says_to_replay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), "t").unwrap();
        let enc = ParquetEncoder::new().unwrap();
        let p = Partition::of("C0");
        store
            .publish(&p.path(), Bytes::from_static(b"garbage"))
            .await
            .unwrap();
        let e = merge(&store, &enc, spill_of(run(4, 0..1)), false)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(&p.path()) && e.contains("replay --all"), "{e}");
    }
}

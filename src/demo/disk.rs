//! A drawn province kept on disk, so that a demo source can serve ten million records in a few
//! hundred megabytes: the province is drawn in parts ([`super::generator::parts`]), two at a
//! time; each part's records go to disk as drawn, then are copied in order into a sorted *run*
//! with a keys file; the runs' keys are merged, keeping in memory only where each record of the
//! served order lives (22 bytes a record). A page is then a few reads, one per run it touches.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use chrono::NaiveDate;
use serde_json::Value;

use super::generator::{self, Dataset};
use super::table::{Base, Row};
use crate::error::{Doing, Error, Result};
use crate::stage::layout::date_in_id;

/// Records the nights may move on: open (or processed, not yet returned) cases received from
/// this day on.
pub fn recent_from() -> NaiveDate {
    super::province::d(2026, 7, 1)
}

/// A record a night may move on: open or processed, and received lately.
fn is_candidate(v: &Value, key: &str) -> bool {
    let status = crate::wire::text(v.get("TrangThaiHoSo")).unwrap_or_default();
    matches!(status.as_str(), "2" | "4" | "5" | "6" | "9")
        && date_in_id(key.trim()).is_some_and(|d| d >= recent_from())
}

/// The province on disk.
pub struct DiskBase {
    _dir: tempfile::TempDir,
    runs: Vec<Mutex<File>>,
    updated: Vec<i64>,
    run: Vec<u16>,
    offset: Vec<u64>,
    len: Vec<u32>,
}

/// What drawing the province gave beside the base: its catalogs and the records a night may
/// move on (base positions).
pub struct Drawn {
    pub base: DiskBase,
    pub agencies: Vec<Value>,
    pub procedures: Vec<Value>,
    pub candidates: Vec<usize>,
}

/// One record of a run's keys file.
struct KeyEntry {
    updated: i64,
    key: String,
    offset: u64,
    len: u32,
    candidate: bool,
}

impl KeyEntry {
    fn write(&self, w: &mut impl Write) -> std::io::Result<()> {
        w.write_all(&self.updated.to_le_bytes())?;
        w.write_all(&self.offset.to_le_bytes())?;
        w.write_all(&self.len.to_le_bytes())?;
        w.write_all(&[self.candidate as u8])?;
        w.write_all(&(self.key.len() as u32).to_le_bytes())?;
        w.write_all(self.key.as_bytes())
    }

    fn read(r: &mut impl Read) -> std::io::Result<Option<KeyEntry>> {
        let mut head = [0u8; 25];
        match r.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let n = |a: usize, b: usize| -> [u8; 8] {
            let mut x = [0u8; 8];
            x[..b - a].copy_from_slice(&head[a..b]);
            x
        };
        let klen = u32::from_le_bytes([head[21], head[22], head[23], head[24]]) as usize;
        let mut key = vec![0u8; klen];
        r.read_exact(&mut key)?;
        Ok(Some(KeyEntry {
            updated: i64::from_le_bytes(n(0, 8)),
            offset: u64::from_le_bytes(n(8, 16)),
            len: u32::from_le_bytes([head[16], head[17], head[18], head[19]]),
            candidate: head[20] == 1,
            key: String::from_utf8(key).map_err(std::io::Error::other)?,
        }))
    }
}

/// Draws the province of `seed` at `scale` into a scratch folder, two parts at a time;
/// `progress` is told each part drawn.
pub fn draw(seed: u64, scale: f64, progress: &(dyn Fn(usize, usize) + Sync)) -> Result<Drawn> {
    let (parts, per_part) = generator::parts(scale);
    draw_parts(seed, parts, per_part, progress)
}

/// Draws `parts` parts of `per_part` each.
fn draw_parts(
    seed: u64,
    parts: usize,
    per_part: f64,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Drawn> {
    let dir = tempfile::Builder::new()
        .prefix("motcua-demo-")
        .tempdir()
        .doing(
            "creating a scratch folder for the demo province (set TMPDIR to a folder with room)",
        )?;
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let catalogs: Mutex<Option<(Vec<Value>, Vec<Value>)>> = Mutex::new(None);
    let failed: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let part = next.fetch_add(1, Ordering::Relaxed);
                if part >= parts || failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                    return;
                }
                match write_run(dir.path(), seed, per_part, part) {
                    Ok(Some(c)) => {
                        if let Ok(mut slot) = catalogs.lock() {
                            *slot = Some(c);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        if let Ok(mut f) = failed.lock() {
                            *f = Some(e);
                        }
                        return;
                    }
                }
                progress(done.fetch_add(1, Ordering::Relaxed) + 1, parts);
            });
        }
    });
    if let Some(e) = failed.into_inner().ok().flatten() {
        return Err(e);
    }
    let (agencies, procedures) = catalogs
        .into_inner()
        .ok()
        .flatten()
        .ok_or_else(|| Error::Internal("the demo province drew no part 0".into()))?;
    let (base, candidates) = merge(dir, parts)?;
    Ok(Drawn {
        base,
        agencies,
        procedures,
        candidates,
    })
}

fn run_path(dir: &Path, part: usize) -> PathBuf {
    dir.join(format!("run-{part:05}.jsonl"))
}

fn keys_path(dir: &Path, part: usize) -> PathBuf {
    dir.join(format!("run-{part:05}.keys"))
}

/// Draws part `part` and writes its run, sorted, and its keys; part 0 also gives the catalogs.
/// The records go to disk as they are drawn (memory holds their keys), then are copied into
/// the run in order.
fn write_run(
    dir: &Path,
    seed: u64,
    per_part: f64,
    part: usize,
) -> Result<Option<(Vec<Value>, Vec<Value>)>> {
    let room = |p: &Path| format!("writing {} (is the temp dir full?)", p.display());
    let drawn_path = dir.join(format!("drawn-{part:05}.jsonl"));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&drawn_path)
        .doing_with(|| room(&drawn_path))?;
    let mut drawn = BufWriter::new(file);
    let mut entries: Vec<KeyEntry> = vec![];
    let mut offset = 0u64;
    let mut failed = None;
    let Dataset {
        agencies,
        procedures,
        ..
    } = generator::generate_part(seed, per_part, part as u64, &mut |v| {
        let row = Row::of(&v);
        let candidate = is_candidate(&v, &row.key);
        if failed.is_none() {
            failed = drawn.write_all(row.json.as_bytes()).err();
        }
        entries.push(KeyEntry {
            updated: row.updated,
            key: row.key,
            offset,
            len: row.json.len() as u32,
            candidate,
        });
        offset += row.json.len() as u64;
    });
    if let Some(e) = failed {
        return Err(e).doing_with(|| room(&drawn_path));
    }
    let mut drawn = drawn
        .into_inner()
        .map_err(|e| e.into_error())
        .doing_with(|| room(&drawn_path))?;
    entries.sort_by(|a, b| (a.updated, &a.key).cmp(&(b.updated, &b.key)));
    sorted_run(dir, part, &mut drawn, &drawn_path, entries)?;
    drop(drawn);
    let _ = std::fs::remove_file(&drawn_path);
    Ok((part == 0).then_some((agencies, procedures)))
}

/// Writes part `part`'s records, read back from `drawn` in the order of `entries`, as its run,
/// with the run's keys file beside it.
fn sorted_run(
    dir: &Path,
    part: usize,
    drawn: &mut File,
    drawn_path: &Path,
    entries: Vec<KeyEntry>,
) -> Result<()> {
    let room = |p: &Path| format!("writing {} (is the temp dir full?)", p.display());
    let (rp, kp) = (run_path(dir, part), keys_path(dir, part));
    let mut run = BufWriter::new(File::create(&rp).doing_with(|| room(&rp))?);
    let mut keys = BufWriter::new(File::create(&kp).doing_with(|| room(&kp))?);
    let mut at = 0u64;
    let mut buf = vec![];
    for mut e in entries {
        buf.resize(e.len as usize, 0);
        drawn
            .seek(SeekFrom::Start(e.offset))
            .and_then(|_| drawn.read_exact(&mut buf))
            .doing_with(|| format!("reading back {}", drawn_path.display()))?;
        run.write_all(&buf).doing_with(|| room(&rp))?;
        e.offset = at;
        at += e.len as u64;
        e.write(&mut keys).doing_with(|| room(&kp))?;
    }
    run.flush().doing_with(|| room(&rp))?;
    keys.flush().doing_with(|| room(&kp))?;
    Ok(())
}

/// Merges the runs' keys into the served order; the keys files go.
fn merge(dir: tempfile::TempDir, parts: usize) -> Result<(DiskBase, Vec<usize>)> {
    let mut readers = vec![];
    let mut heap = BinaryHeap::new();
    for part in 0..parts {
        let kp = keys_path(dir.path(), part);
        let mut r =
            BufReader::new(File::open(&kp).doing_with(|| format!("opening {}", kp.display()))?);
        if let Some(e) = KeyEntry::read(&mut r).doing("reading a run's keys")? {
            heap.push(Reverse((e.updated, e.key.clone(), part, HeadEntry(e))));
        }
        readers.push(r);
    }
    let mut base = DiskBase {
        runs: vec![],
        updated: vec![],
        run: vec![],
        offset: vec![],
        len: vec![],
        _dir: dir,
    };
    let mut candidates = vec![];
    while let Some(Reverse((_, _, part, HeadEntry(e)))) = heap.pop() {
        if e.candidate {
            candidates.push(base.updated.len());
        }
        base.updated.push(e.updated);
        base.run.push(part as u16);
        base.offset.push(e.offset);
        base.len.push(e.len);
        if let Some(n) = KeyEntry::read(&mut readers[part]).doing("reading a run's keys")? {
            heap.push(Reverse((n.updated, n.key.clone(), part, HeadEntry(n))));
        }
    }
    for part in 0..parts {
        let _ = std::fs::remove_file(keys_path(base._dir.path(), part));
        let rp = run_path(base._dir.path(), part);
        base.runs.push(Mutex::new(
            File::open(&rp).doing_with(|| format!("opening {}", rp.display()))?,
        ));
    }
    Ok((base, candidates))
}

/// A run's head in the merge heap (ordered by the tuple before it, never by itself).
struct HeadEntry(KeyEntry);

impl PartialEq for HeadEntry {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for HeadEntry {}
impl PartialOrd for HeadEntry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for HeadEntry {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl DiskBase {
    /// Bytes `from..to` of run file `run` into `buf` (emptied first; not zeroed before the read).
    fn read_span_into(&self, run: usize, from: u64, to: u64, buf: &mut Vec<u8>) -> Result<()> {
        buf.clear();
        let mut f = self.runs[run]
            .lock()
            .map_err(|_| Error::Internal("a demo run file lock was poisoned".into()))?;
        f.seek(SeekFrom::Start(from))
            .and_then(|_| (&mut *f).take(to - from).read_to_end(buf))
            .doing("reading the demo province")?;
        if buf.len() as u64 != to - from {
            return Err(Error::Internal(
                "a demo run file is shorter than its keys".into(),
            ));
        }
        Ok(())
    }

    /// The span of each run file that records `from..to` lie in.
    fn spans(&self, from: usize, to: usize) -> std::collections::BTreeMap<usize, (u64, u64)> {
        // Within a range of the served order each run's records are contiguous in its file.
        let mut spans: std::collections::BTreeMap<usize, (u64, u64)> = Default::default();
        for i in from..to {
            let (r, o, l) = (self.run[i] as usize, self.offset[i], self.len[i] as u64);
            let s = spans.entry(r).or_insert((o, o + l));
            s.0 = s.0.min(o);
            s.1 = s.1.max(o + l);
        }
        spans
    }
}

/// A record that is not text where the keys say it lies.
fn not_utf8() -> Error {
    Error::Internal("a demo record is not UTF-8".into())
}

impl Base for DiskBase {
    fn len(&self) -> usize {
        self.updated.len()
    }

    fn updated(&self, i: usize) -> i64 {
        self.updated[i]
    }

    fn key(&self, i: usize) -> Result<String> {
        let json = self.read(i, i + 1)?.pop().unwrap_or_default();
        let v: Value = serde_json::from_str(&json)
            .map_err(|e| Error::Internal(format!("a demo record is not JSON: {e}")))?;
        Ok(crate::wire::text(v.get("MaHoSo")).unwrap_or_default())
    }

    fn read(&self, from: usize, to: usize) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(to.saturating_sub(from));
        self.each_record(from, to, |json| out.push(json.to_owned()))?;
        Ok(out)
    }

    fn write(&self, from: usize, to: usize, out: &mut String) -> Result<()> {
        self.each_record(from, to, |json| {
            out.push_str(json);
            out.push(',');
        })
    }
}

impl DiskBase {
    /// Hands the JSON of records `from..to` to `each`, in order: each run's span read into a
    /// buffer this thread keeps (not zeroed), its UTF-8 checked once, each record a slice of it
    /// (a string per record and a zeroed buffer per span were a third of the source's CPU in a
    /// pull). Damaged key files are an error, never a panic.
    fn each_record(&self, from: usize, to: usize, mut each: impl FnMut(&str)) -> Result<()> {
        thread_local! {
            static SPANS: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(vec![]) };
        }
        SPANS.with_borrow_mut(|bufs| {
            let spans = self.spans(from, to);
            bufs.resize_with(bufs.len().max(spans.len()), Vec::new);
            let mut texts = std::collections::BTreeMap::new();
            for ((r, (a, b)), buf) in spans.into_iter().zip(bufs.iter_mut()) {
                self.read_span_into(r, a, b, buf)?;
                let text = simdutf8::basic::from_utf8(buf).map_err(|_| not_utf8())?;
                texts.insert(r, (a, text));
            }
            for i in from..to {
                let (start, text) = texts
                    .get(&(self.run[i] as usize))
                    .ok_or_else(|| Error::Internal("a demo run was not read".into()))?;
                let at = (self.offset[i] - start) as usize;
                let json = text
                    .get(at..at + self.len[i] as usize)
                    .ok_or_else(not_utf8)?;
                each(json);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::table::{MemBase, Table};

    /// A province drawn in parts to disk serves exactly what the same parts serve from memory,
    /// in the same order.
    #[test]
    fn the_province_on_disk_serves_what_memory_would() {
        let (seed, parts, per_part) = (7, 3, 0.04);
        let drawn = draw_parts(seed, parts, per_part, &|_, _| {}).unwrap();
        let mut rows = vec![];
        for part in 0..parts {
            generator::generate_part(seed, per_part, part as u64, &mut |v| rows.push(Row::of(&v)));
        }
        let disk = Table::new(Box::new(drawn.base));
        let mem = Table::new(Box::new(MemBase::new(rows)));
        assert_eq!(disk.len(), mem.len());
        for (from, to) in [
            (0, 1000),
            (disk.len() / 2, disk.len() / 2 + 1000),
            (disk.len() - 10, disk.len()),
        ] {
            let served = disk.read(&disk.locate(from, to)).unwrap();
            assert_eq!(served, mem.read(&mem.locate(from, to)).unwrap());
            // Written at once, as a page's body is: the same records, each after its comma.
            let (mut written, mut in_memory) = (String::new(), String::new());
            disk.write(&disk.locate(from, to), &mut written).unwrap();
            mem.write(&mem.locate(from, to), &mut in_memory).unwrap();
            assert_eq!(
                written,
                served.iter().map(|r| format!("{r},")).collect::<String>()
            );
            assert_eq!(written, in_memory);
        }
        assert_eq!(
            disk.rank_of(Some(1_720_000_000_000_000)),
            mem.rank_of(Some(1_720_000_000_000_000))
        );
    }
}

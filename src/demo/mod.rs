//! The demo source: a case system served over HTTP on 127.0.0.1 exactly as `source-api.md`
//! describes, misbehaviour included, so that motcua can be run, tested and benchmarked without a
//! real province. It serves either the synthetic province of [`generator`] or a folder holding
//! `donvi.json`, `tthc.json` and `hoso.json` (each a response body, like the worked example).
//!
//! Misbehaviour ([`Chaos`]) is scheduled by request number, so a run is reproducible: 429 with
//! `Retry-After`, 502, 503, a connection dropped half-way through a body, HTTP 200 with
//! `error_code` "1", slow pages, and records updated while a client pages (the record just
//! before the requested page moves to the end of the order, which makes a page-number client
//! skip one).

pub mod disk;
pub mod generator;
mod http;
pub mod night;
pub mod province;
pub mod table;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Doing, Error, Result};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use serde_json::Value;
use tokio::net::TcpListener;
use tracing::info;

use crate::wire::{parse_instant, Endpoint};
pub use generator::{generate, Dataset};
pub use night::{NightReport, Nights};
use table::{MemBase, Row, Table};

/// Which misbehaviours to show, each every N-th request (0: never).
#[derive(Debug, Clone, Default)]
pub struct Chaos {
    pub rate_limit_every: u64,
    pub retry_after_secs: u64,
    pub unavailable_every: u64,
    pub bad_gateway_every: u64,
    pub drop_every: u64,
    pub busy_every: u64,
    pub slow_every: u64,
    pub slow_ms: u64,
    /// Update the record just before the requested page every N-th `/v1/hoso` request.
    pub update_every: u64,
}

impl Chaos {
    pub fn off() -> Self {
        Chaos::default()
    }

    /// The demo's default: every kind, a few times over a pull of the demo province.
    pub fn all() -> Self {
        Chaos {
            rate_limit_every: 89,
            retry_after_secs: 1,
            unavailable_every: 47,
            bad_gateway_every: 71,
            drop_every: 53,
            busy_every: 59,
            slow_every: 67,
            slow_ms: 300,
            update_every: 7,
        }
    }
}

fn hits(every: u64, n: u64) -> bool {
    every > 0 && n % every == every - 1
}

struct Shared {
    token: String,
    chaos: Chaos,
    agencies: Bytes,
    procedures: Bytes,
    table: Mutex<Table>,
    /// The nights of a drawn province (none for a dataset).
    nights: Option<Mutex<Nights>>,
    requests: AtomicU64,
    /// The province letter code the agency codes are served with, when not `H57`.
    agency_code: std::sync::OnceLock<[u8; 3]>,
}

/// The province code in the demo's agency codes (`000.00.15.H57`).
pub const AGENCY_CODE: &str = "H57";

/// A running demo source.
pub struct DemoSource {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl DemoSource {
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.shared.table.lock().expect("table lock")
    }

    /// Serves the province as another one's: every agency code (and so every case id) ends in
    /// `.<code>` instead of `.H57`; `code` is a letter and two digits, e.g. `H01`.
    pub fn with_agency_code(self, code: &str) -> Result<DemoSource> {
        let bytes = <[u8; 3]>::try_from(code.as_bytes())
            .ok()
            .filter(|b| b[0].is_ascii_uppercase() && b[1..].iter().all(u8::is_ascii_digit))
            .ok_or_else(|| {
                Error::Usage(format!(
                    "agency code {code:?}: use a capital letter and two digits, e.g. H01"
                ))
            })?;
        if code != AGENCY_CODE {
            let _ = self.shared.agency_code.set(bytes);
        }
        Ok(self)
    }

    /// Records updated while clients paged so far.
    pub fn updates(&self) -> u64 {
        self.table().updates
    }

    /// Requests answered so far (misbehaving answers included).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Every case record currently served, in table order (for tests).
    pub fn records(&self) -> Vec<Value> {
        self.table()
            .all()
            .expect("served records")
            .iter()
            .map(|r| serde_json::from_str(r).expect("served JSON"))
            .collect()
    }

    /// Changes a served record (as the case system would), giving it a new `NgayCapNhat`.
    pub fn update_record(&self, case_key: &str, change: impl FnOnce(&mut Value)) -> bool {
        let mut t = self.table();
        match t.find_last(case_key).expect("served records") {
            Some(at) => http::bump(&mut t, at, change).is_ok(),
            None => false,
        }
    }

    /// Changes a served record and stamps it `NgayCapNhat = stamp` as given — a desk's typo or
    /// a server clock gone wrong, e.g. `20991231000000`. The demo's own clock does not move
    /// into the future with it.
    pub fn restamp(&self, case_key: &str, stamp: &str, change: impl FnOnce(&mut Value)) -> bool {
        let mut t = self.table();
        let Some(at) = t.find_last(case_key).expect("served records") else {
            return false;
        };
        let json = t.remove(at).expect("served record");
        let mut v: Value = serde_json::from_str(&json).expect("served JSON");
        change(&mut v);
        v["NgayCapNhat"] = Value::String(stamp.to_string());
        let updated = parse_instant(stamp).unwrap_or(i64::MIN);
        if updated <= chrono::Utc::now().timestamp_micros() {
            t.max_updated = t.max_updated.max(updated);
        }
        t.insert(Row::of(&v)).expect("served record");
        t.updates += 1;
        true
    }

    /// The next night of a drawn province (see [`Nights`]).
    pub fn night(&self, changes: usize, corrections: usize) -> Result<NightReport> {
        let nights = self.shared.nights.as_ref().ok_or_else(|| {
            Error::Usage(
                "this source serves a dataset, not a drawn province: it has no nights".into(),
            )
        })?;
        let mut nights = nights.lock().expect("nights lock");
        nights.next(&mut self.table(), changes, corrections)
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

fn envelope(data: &[Value]) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&serde_json::json!({"error_code": "0", "message": "", "data": data}))
            .expect("JSON"),
    )
}

/// Starts serving `data` (held in memory) on `addr` (port 0 picks a free one).
pub async fn start(
    data: Dataset,
    token: &str,
    chaos: Chaos,
    addr: SocketAddr,
) -> Result<DemoSource> {
    let rows = data.cases.iter().map(Row::of).collect();
    let table = Table::new(Box::new(MemBase::new(rows)));
    let catalogs = (envelope(&data.agencies), envelope(&data.procedures));
    serve(table, None, catalogs, token, chaos, addr).await
}

/// Draws the province of `seed` at `scale` to disk (see [`disk`]) and starts serving it, with
/// its nights, on `addr`.
pub async fn start_province(
    seed: u64,
    scale: f64,
    token: &str,
    chaos: Chaos,
    addr: SocketAddr,
) -> Result<DemoSource> {
    let drawn = tokio::task::spawn_blocking(move || {
        disk::draw(seed, scale, &|done, parts| {
            if parts > 1 {
                info!(done, parts, "drawing the demo province");
            }
        })
    })
    .await
    .map_err(|_| Error::Internal("drawing the demo province panicked".into()))??;
    let nights = Nights::new(seed, scale, drawn.candidates);
    let catalogs = (envelope(&drawn.agencies), envelope(&drawn.procedures));
    let table = Table::new(Box::new(drawn.base));
    serve(table, Some(nights), catalogs, token, chaos, addr).await
}

async fn serve(
    table: Table,
    nights: Option<Nights>,
    (agencies, procedures): (Bytes, Bytes),
    token: &str,
    chaos: Chaos,
    addr: SocketAddr,
) -> Result<DemoSource> {
    let shared = Arc::new(Shared {
        token: token.to_string(),
        chaos,
        agencies,
        procedures,
        table: Mutex::new(table),
        nights: nights.map(Mutex::new),
        requests: AtomicU64::new(0),
        agency_code: std::sync::OnceLock::new(),
    });
    let app = Router::new()
        .route("/v1/donvi", get(http::donvi))
        .route("/v1/tthc", get(http::tthc))
        .route("/v1/hoso", get(http::hoso))
        .route("/demo/night", post(http::night))
        .with_state(shared.clone());
    let listener = TcpListener::bind(addr)
        .await
        .doing_with(|| format!("cannot listen on {addr}"))?;
    let addr = listener
        .local_addr()
        .doing("reading the listening address")?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(DemoSource { addr, shared, task })
}

/// Reads a folder holding `donvi.json`, `tthc.json` and `hoso.json` response bodies.
pub fn load_dataset(dir: &std::path::Path) -> Result<Dataset> {
    let read = |name: &str| -> Result<Vec<Value>> {
        let path = dir.join(name);
        let body = std::fs::read(&path)
            .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| Error::Usage(format!("{} is not JSON: {e}", path.display())))?;
        Ok(v.get("data")
            .and_then(|d| d.as_array())
            .cloned()
            .unwrap_or_default())
    };
    Ok(Dataset {
        agencies: read("donvi.json")?,
        procedures: read("tthc.json")?,
        cases: read("hoso.json")?,
    })
}

/// The body of a `/v1/hoso` page holding `records` (JSON texts).
fn page_body(records: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum::<usize>() + 64);
    out.extend_from_slice(br#"{"error_code":"0","message":"","data":["#);
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(r.as_bytes());
    }
    out.extend_from_slice(b"]}");
    out
}

/// `motcua demo-source --write-raw`: writes the province of `seed` at `scale` straight into the
/// raw layer of one run under `output` (pages of 1,000 records, as a pull lands them), without
/// serving it — the same province a demo source of that seed and scale serves, drawn in the
/// same parts, two at a time. Returns the run id and the number of case records written.
pub async fn write_raw(seed: u64, scale: f64, output: &str) -> Result<(String, u64)> {
    use futures::StreamExt;
    let run_id = crate::run_id::new();
    let store = crate::store::Store::open(output, &run_id)?;
    let raw = crate::raw::RawLog::new(store, &run_id);
    let (parts, per_part) = generator::parts(scale);
    let mut drawn = futures::stream::iter(0..parts as u64)
        .map(|part| {
            tokio::task::spawn_blocking(move || {
                let mut cases = vec![];
                let data = generator::generate_part(seed, per_part, part, &mut |v| {
                    cases.push(v.to_string())
                });
                (data, cases)
            })
        })
        .buffered(2);
    let (mut records, mut page) = (0u64, 0u64);
    while let Some(drawn) = drawn.next().await {
        let (data, cases) =
            drawn.map_err(|_| Error::Internal("a drawing thread panicked".into()))?;
        if records == 0 {
            raw.land(Endpoint::Agencies, &[], envelope(&data.agencies))
                .await?;
            raw.land(Endpoint::Catalog, &[], envelope(&data.procedures))
                .await?;
        }
        for chunk in cases.chunks(1000) {
            page += 1;
            let body = page_body(chunk);
            raw.land(
                Endpoint::Cases,
                &[("page", page.to_string())],
                Bytes::from(body),
            )
            .await?;
            records += chunk.len() as u64;
        }
        info!(records, "raw pages written");
    }
    raw.settle().await?;
    Ok((run_id, records))
}

/// `motcua demo-source`: serves `src` until stopped; writes its URL to `ready_file` once
/// listening.
pub async fn run(src: DemoSource, ready_file: Option<&std::path::Path>) -> Result<()> {
    let cases = src.shared.table.lock().map(|t| t.len()).unwrap_or(0);
    info!(url = %src.url(), cases, "demo source listening");
    println!("{}", src.url());
    // SIGINT or SIGTERM (`make run` and the tests stop it so): the server stops and the
    // province drawn to the temp dir is removed as the source drops.
    let stopped = crate::pipeline::shutdown_signal();
    if let Some(f) = ready_file {
        let tmp = f.with_extension("tmp");
        std::fs::write(&tmp, src.url()).doing("writing the ready file")?;
        std::fs::rename(&tmp, f).doing("writing the ready file")?;
    }
    stopped.await;
    src.stop();
    Ok(())
}

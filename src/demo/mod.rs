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

pub mod generator;
pub mod province;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Doing, Error, Result};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use serde_json::Value;
use tokio::net::TcpListener;
use tracing::info;

use crate::wire::{instant, parse_instant, source_timestamp, text, Endpoint};
pub use generator::{generate, Dataset};

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

struct Row {
    /// Sort key: parsed `NgayCapNhat`, absent first.
    updated: i64,
    key: String,
    json: String,
}

struct Table {
    /// In `(updated, key)` order, as the source serves them.
    rows: Vec<Row>,
    /// The demo's clock: the latest `NgayCapNhat` not after the wall clock (a record stamped in
    /// the future by a clock error does not move it).
    max_updated: i64,
    updates: u64,
}

impl Table {
    /// Puts `row` where the order wants it.
    fn insert(&mut self, row: Row) {
        let at = self
            .rows
            .partition_point(|r| (r.updated, &r.key) <= (row.updated, &row.key));
        self.rows.insert(at, row);
    }
}

struct Shared {
    token: String,
    chaos: Chaos,
    agencies: Bytes,
    procedures: Bytes,
    table: Mutex<Table>,
    requests: AtomicU64,
}

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

    /// Records updated while clients paged so far.
    pub fn updates(&self) -> u64 {
        self.shared.table.lock().expect("table lock").updates
    }

    /// Requests answered so far (misbehaving answers included).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Every case record currently served, in table order (for tests).
    pub fn records(&self) -> Vec<Value> {
        let t = self.shared.table.lock().expect("table lock");
        t.rows
            .iter()
            .map(|r| serde_json::from_str(&r.json).expect("served JSON"))
            .collect()
    }

    /// Changes a served record (as the case system would), giving it a new `NgayCapNhat`.
    pub fn update_record(&self, case_key: &str, change: impl FnOnce(&mut Value)) -> bool {
        let mut t = self.shared.table.lock().expect("table lock");
        let Some(i) = t.rows.iter().rposition(|r| r.key == case_key) else {
            return false;
        };
        bump(&mut t, i, change);
        true
    }

    /// Changes a served record and stamps it `NgayCapNhat = stamp` as given — a desk's typo or
    /// a server clock gone wrong, e.g. `20991231000000`. The demo's own clock does not move
    /// into the future with it.
    pub fn restamp(&self, case_key: &str, stamp: &str, change: impl FnOnce(&mut Value)) -> bool {
        let mut t = self.shared.table.lock().expect("table lock");
        let Some(i) = t.rows.iter().rposition(|r| r.key == case_key) else {
            return false;
        };
        let row = t.rows.remove(i);
        let mut v: Value = serde_json::from_str(&row.json).expect("served JSON");
        change(&mut v);
        v["NgayCapNhat"] = Value::String(stamp.to_string());
        let updated = parse_instant(stamp).unwrap_or(i64::MIN);
        if updated <= chrono::Utc::now().timestamp_micros() {
            t.max_updated = t.max_updated.max(updated);
        }
        t.insert(Row {
            updated,
            key: row.key,
            json: v.to_string(),
        });
        t.updates += 1;
        true
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

fn sort_key(v: &Value) -> (i64, String) {
    let updated = instant(v.get("NgayCapNhat"))
        .ok()
        .flatten()
        .unwrap_or(i64::MIN);
    (updated, text(v.get("MaHoSo")).unwrap_or_default())
}

/// Moves row `i` to the end of the order (before any record stamped in the future) with a new
/// `NgayCapNhat`, one second after the demo's clock.
fn bump(t: &mut Table, i: usize, change: impl FnOnce(&mut Value)) {
    let row = t.rows.remove(i);
    let mut v: Value = serde_json::from_str(&row.json).expect("served JSON");
    change(&mut v);
    t.max_updated += 1_000_000;
    v["NgayCapNhat"] = Value::String(source_timestamp(t.max_updated));
    let updated = t.max_updated;
    t.insert(Row {
        updated,
        key: row.key,
        json: v.to_string(),
    });
    t.updates += 1;
}

/// Starts serving `data` on `addr` (port 0 picks a free one).
pub async fn start(
    data: Dataset,
    token: &str,
    chaos: Chaos,
    addr: SocketAddr,
) -> Result<DemoSource> {
    let mut rows: Vec<(i64, String, usize, String)> = data
        .cases
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let (u, k) = sort_key(v);
            (u, k, i, v.to_string())
        })
        .collect();
    rows.sort();
    let now = chrono::Utc::now().timestamp_micros();
    let max_updated = rows
        .iter()
        .map(|r| r.0)
        .filter(|u| *u <= now)
        .max()
        .unwrap_or(0)
        .max(0);
    let table = Table {
        rows: rows
            .into_iter()
            .map(|(updated, key, _, json)| Row { updated, key, json })
            .collect(),
        max_updated,
        updates: 0,
    };
    let shared = Arc::new(Shared {
        token: token.to_string(),
        chaos,
        agencies: envelope(&data.agencies),
        procedures: envelope(&data.procedures),
        table: Mutex::new(table),
        requests: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/v1/donvi", get(donvi))
        .route("/v1/tthc", get(tthc))
        .route("/v1/hoso", get(hoso))
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

fn json_response(status: StatusCode, body: Bytes) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::from(body))
        .expect("response")
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"error_code": code, "message": message}).to_string();
    json_response(status, Bytes::from(body))
}

/// Authentication, then the misbehaviour scheduled for this request, if any.
async fn gate(s: &Shared, headers: &HeaderMap) -> Result<u64, Response> {
    let n = s.requests.fetch_add(1, Ordering::Relaxed);
    let ok = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == s.token);
    if !ok {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "401",
            "missing or invalid token",
        ));
    }
    let c = &s.chaos;
    if hits(c.rate_limit_every, n) {
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "429", "too many requests");
        r.headers_mut().insert(
            header::RETRY_AFTER,
            c.retry_after_secs.to_string().parse().expect("header"),
        );
        return Err(r);
    }
    if hits(c.unavailable_every, n) {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "503",
            "service unavailable",
        ));
    }
    if hits(c.bad_gateway_every, n) {
        return Err(json_response(
            StatusCode::BAD_GATEWAY,
            Bytes::from_static(b"<html>502 Bad Gateway</html>"),
        ));
    }
    if hits(c.busy_every, n) {
        return Err(error(
            StatusCode::OK,
            "1",
            "Hệ thống đang bận, vui lòng thử lại sau",
        ));
    }
    if hits(c.slow_every, n) {
        tokio::time::sleep(Duration::from_millis(c.slow_ms)).await;
    }
    Ok(n)
}

/// Sends half of `body`, then drops the connection.
fn dropped(body: Bytes) -> Response {
    let half = body.slice(0..body.len() / 2);
    let parts: Vec<Result<Bytes, std::io::Error>> =
        vec![Ok(half), Err(std::io::Error::other("connection dropped"))];
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from_stream(futures::stream::iter(parts)))
        .expect("response")
}

fn answer(s: &Shared, n: u64, body: Bytes) -> Response {
    if hits(s.chaos.drop_every, n) {
        return dropped(body);
    }
    json_response(StatusCode::OK, body)
}

async fn donvi(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match gate(&s, &headers).await {
        Ok(n) => answer(&s, n, s.agencies.clone()),
        Err(r) => r,
    }
}

async fn tthc(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match gate(&s, &headers).await {
        Ok(n) => answer(&s, n, s.procedures.clone()),
        Err(r) => r,
    }
}

#[derive(serde::Deserialize)]
struct HosoQuery {
    updated_from: Option<String>,
    updated_to: Option<String>,
    page: Option<String>,
    page_size: Option<String>,
}

/// A `/v1/hoso` request, read: the window, the page and its size.
struct PageRequest {
    from: Option<i64>,
    to: Option<i64>,
    page: u64,
    size: u64,
}

fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "400", message)
}

impl PageRequest {
    /// Reads the query as the contract says, or answers 400 naming what is wrong.
    fn read(q: &HosoQuery) -> Result<PageRequest, Box<Response>> {
        let bound = |v: &Option<String>, name: &str| -> Result<Option<i64>, Box<Response>> {
            match v.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => parse_instant(v)
                    .filter(|_| v.len() == 14)
                    .map(Some)
                    .ok_or_else(|| Box::new(bad_request(&format!("{name} is not yyyyMMddHHmmss")))),
            }
        };
        let page = match q.page.as_deref().unwrap_or("1").parse() {
            Ok(p) if p >= 1 => p,
            _ => return Err(Box::new(bad_request("page must be a whole number from 1"))),
        };
        let size = match q.page_size.as_deref().unwrap_or("100").parse() {
            Ok(p) if (1..=1000).contains(&p) => p,
            _ => return Err(Box::new(bad_request("page_size must be 1 to 1000"))),
        };
        Ok(PageRequest {
            from: bound(&q.updated_from, "updated_from")?,
            to: bound(&q.updated_to, "updated_to")?,
            page,
            size,
        })
    }

    /// The page's body; with `update_passed`, the record just before the page is updated
    /// (as a live case system does while a client pages).
    fn body(&self, t: &mut Table, update_passed: bool) -> Bytes {
        let start = self
            .from
            .map_or(0, |f| t.rows.partition_point(|r| r.updated < f));
        let end = self
            .to
            .map_or(t.rows.len(), |to| {
                t.rows.partition_point(|r| r.updated < to)
            })
            .max(start);
        let first = (start as u64 + (self.page - 1) * self.size).min(end as u64) as usize;
        let last = (first as u64 + self.size).min(end as u64) as usize;
        let mut out = String::with_capacity((last - first) * 1400 + 128);
        out.push_str(&format!(
            r#"{{"error_code":"0","message":"","total":{},"page":{},"page_size":{},"data":["#,
            end - start,
            self.page,
            self.size
        ));
        for (i, r) in t.rows[first..last].iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&r.json);
        }
        out.push_str("]}");
        // A record the client has already passed is updated: it moves to the end of the order.
        if update_passed && first > 0 {
            bump(t, first - 1, |_| {});
        }
        Bytes::from(out)
    }
}

async fn hoso(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<HosoQuery>,
) -> Response {
    let n = match gate(&s, &headers).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let request = match PageRequest::read(&q) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let body = {
        let mut t = s.table.lock().expect("table lock");
        request.body(&mut t, hits(s.chaos.update_every, n))
    };
    answer(&s, n, body)
}

/// The body of a `/v1/hoso` page holding `records`.
fn page_body(records: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.len() * 1400 + 64);
    out.extend_from_slice(br#"{"error_code":"0","message":"","data":["#);
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, r).expect("JSON");
    }
    out.extend_from_slice(b"]}");
    out
}

/// `motcua demo-source --write-raw`: writes the province of `seed` at `scale` straight into the
/// raw layer of one run under `output` (pages of 1,000 records, as a pull lands them), without
/// serving it. The province is drawn in parts of at most `scale` 1, two at a time, so memory
/// holds two parts however large the province: the benchmark's way to ten million records,
/// which a demo source, holding its province in memory, would not fit. Returns the run id and
/// the number of case records written.
pub async fn write_raw(seed: u64, scale: f64, output: &str) -> Result<(String, u64)> {
    use futures::StreamExt;
    let run_id = crate::run_id::new();
    let store = crate::store::Store::open(output, &run_id)?;
    let raw = crate::raw::RawLog::new(store, &run_id);
    let parts = scale.ceil().max(1.0) as u64;
    let per_part = scale / parts as f64;
    let mut drawn = futures::stream::iter(0..parts)
        .map(|part| {
            tokio::task::spawn_blocking(move || generator::generate_chunk(seed, per_part, part))
        })
        .buffered(2);
    let (mut records, mut page) = (0u64, 0u64);
    while let Some(data) = drawn.next().await {
        let data = data.map_err(|_| Error::Internal("a drawing thread panicked".into()))?;
        if records == 0 {
            raw.land(Endpoint::Agencies, &[], envelope(&data.agencies))
                .await?;
            raw.land(Endpoint::Catalog, &[], envelope(&data.procedures))
                .await?;
        }
        for chunk in data.cases.chunks(1000) {
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

/// `motcua demo-source`: serves until stopped; writes its URL to `ready_file` once listening.
pub async fn run(
    data: Dataset,
    token: &str,
    chaos: Chaos,
    port: u16,
    ready_file: Option<&std::path::Path>,
) -> Result<()> {
    let cases = data.cases.len();
    let src = start(data, token, chaos, SocketAddr::from(([127, 0, 0, 1], port))).await?;
    info!(url = %src.url(), cases, "demo source listening");
    println!("{}", src.url());
    if let Some(f) = ready_file {
        let tmp = f.with_extension("tmp");
        std::fs::write(&tmp, src.url()).doing("writing the ready file")?;
        std::fs::rename(&tmp, f).doing("writing the ready file")?;
    }
    tokio::signal::ctrl_c().await.ok();
    Ok(())
}

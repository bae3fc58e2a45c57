//! The demo source's HTTP side: authentication, scheduled misbehaviour, the three endpoints of
//! `source-api.md`, and `POST /demo/night`, which moves a drawn province on by one night.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;

use super::table::{At, Row, Table};
use super::{hits, Shared};
use crate::wire::{parse_instant, source_timestamp};

pub(super) fn json_response(status: StatusCode, body: Bytes) -> Response {
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

fn authorised(s: &Shared, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == s.token)
}

/// Authentication, then the misbehaviour scheduled for this request, if any.
async fn gate(s: &Shared, headers: &HeaderMap) -> Result<u64, Response> {
    let n = s.requests.fetch_add(1, Ordering::Relaxed);
    if !authorised(s, headers) {
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

/// `body` with the agency codes of another province (`DemoSource::with_agency_code`).
fn recoded(s: &Shared, body: Bytes) -> Bytes {
    let Some(code) = s.agency_code.get() else {
        return body;
    };
    let from = format!(".{}", super::AGENCY_CODE);
    let mut out = body.to_vec();
    let mut at = 0;
    while let Some(i) = memchr::memmem::find(&out[at..], from.as_bytes()) {
        out[at + i + 1..at + i + 4].copy_from_slice(code);
        at += i + 4;
    }
    Bytes::from(out)
}

fn answer(s: &Shared, n: u64, body: Bytes) -> Response {
    let body = recoded(s, body);
    if hits(s.chaos.drop_every, n) {
        return dropped(body);
    }
    json_response(StatusCode::OK, body)
}

pub(super) async fn donvi(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match gate(&s, &headers).await {
        Ok(n) => answer(&s, n, s.agencies.clone()),
        Err(r) => r,
    }
}

pub(super) async fn tthc(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match gate(&s, &headers).await {
        Ok(n) => answer(&s, n, s.procedures.clone()),
        Err(r) => r,
    }
}

#[derive(serde::Deserialize)]
pub(super) struct HosoQuery {
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
    fn body(&self, t: &mut Table, update_passed: bool) -> crate::error::Result<Bytes> {
        let start = t.rank_of(self.from.or(Some(i64::MIN)));
        let end = t.rank_of(self.to).max(start);
        let first = (start as u64 + (self.page - 1) * self.size).min(end as u64) as usize;
        let last = (first as u64 + self.size).min(end as u64) as usize;
        let mut out = String::with_capacity((last - first) * RECORD_ROOM + 128);
        out.push_str(&format!(
            r#"{{"error_code":"0","message":"","total":{},"page":{},"page_size":{},"data":["#,
            end - start,
            self.page,
            self.size
        ));
        let opened = out.len();
        t.write(&t.locate(first, last), &mut out)?;
        // Each record was followed by a comma; the last one's closes the array instead.
        if out.len() > opened {
            out.pop();
        }
        out.push_str("]}");
        // A record the client has already passed is updated: it moves to the end of the order.
        if update_passed && first > 0 {
            if let Some(at) = t.locate(first - 1, first).pop() {
                bump(t, at, |_| {})?;
            }
        }
        Ok(Bytes::from(out))
    }
}

/// Bytes a page's body is made room for per record at first (a demo record is about 1 KB).
const RECORD_ROOM: usize = 1100;

pub(super) async fn hoso(
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
    let body = match s.table.lock() {
        Ok(mut t) => request.body(&mut t, hits(s.chaos.update_every, n)),
        Err(_) => Err(crate::error::Error::Internal(
            "the demo table lock was poisoned".into(),
        )),
    };
    match body {
        Ok(body) => answer(&s, n, body),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "500", &e.to_string()),
    }
}

#[derive(serde::Deserialize)]
pub(super) struct NightQuery {
    changes: Option<usize>,
    corrections: Option<usize>,
}

/// `POST /demo/night?changes=20000&corrections=0`: the next night of a drawn province.
pub(super) async fn night(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<NightQuery>,
) -> Response {
    if !authorised(&s, &headers) {
        return error(StatusCode::UNAUTHORIZED, "401", "missing or invalid token");
    }
    let s2 = s.clone();
    let done = tokio::task::spawn_blocking(move || {
        let Some(nights) = &s2.nights else {
            return Err(
                "this source serves a dataset, not a drawn province: it has no nights".to_string(),
            );
        };
        let mut nights = nights
            .lock()
            .map_err(|_| "the nights lock was poisoned".to_string())?;
        let mut t = s2
            .table
            .lock()
            .map_err(|_| "the demo table lock was poisoned".to_string())?;
        nights
            .next(
                &mut t,
                q.changes.unwrap_or(20_000),
                q.corrections.unwrap_or(0),
            )
            .map_err(|e| e.to_string())
    })
    .await;
    match done {
        Ok(Ok(report)) => json_response(
            StatusCode::OK,
            Bytes::from(serde_json::to_vec(&report).unwrap_or_default()),
        ),
        Ok(Err(e)) => error(StatusCode::NOT_FOUND, "404", &e),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "500",
            "the night panicked",
        ),
    }
}

/// Moves the record at `at` to the end of the order (before any record stamped in the future)
/// with a new `NgayCapNhat`, one second after the demo's clock.
pub(super) fn bump(
    t: &mut Table,
    at: At,
    change: impl FnOnce(&mut serde_json::Value),
) -> crate::error::Result<()> {
    let json = t.remove(at)?;
    let mut v: serde_json::Value = serde_json::from_str(&json)
        .map_err(|e| crate::error::Error::Internal(format!("a served record is not JSON: {e}")))?;
    change(&mut v);
    t.max_updated += 1_000_000;
    v["NgayCapNhat"] = serde_json::Value::String(source_timestamp(t.max_updated));
    t.insert(Row::of(&v))?;
    t.updates += 1;
    Ok(())
}

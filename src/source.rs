//! Stage 1: pull from the case system (`../shared/spec/source-api.md`).
//!
//! Agencies (`/v1/donvi`), the procedure catalog (`/v1/tthc`) and case files (`/v1/hoso`) over
//! HTTP with a bearer token. Every response body is landed in the raw layer ([`crate::raw`])
//! before anything parses it. Misbehaving servers are survived: 429 (honouring `Retry-After`),
//! 5xx, dropped connections, slow pages, bodies that are not JSON (a torn body, an HTML error
//! page) and `error_code` "1" are retried with capped, jittered exponential backoff; 401, 400,
//! another `error_code`, a JSON body that breaks the envelope (no `error_code`, a `data` that is
//! not an array) and a body over the size limit fail at once. What each answer calls for is
//! decided by [`classify_status`] and [`classify_body`], tested on their own.
//!
//! Cases are paged **by cursor**, not by page number: each request asks again from the last
//! `NgayCapNhat` seen (inclusive), so a record updated while we page (which moves to the end of
//! the order) shifts nothing we have not yet read. When more than a page of records share one
//! second, that second is read as a closed window by page number, pass after pass, until a pass
//! brings nothing new.
//!
//! A pull reads two windows ([`Window`]): everything changed from the cursor up to the pull's
//! fixed upper bound (`updated_to`), which alone moves the cursor, then the **tail** past the
//! bound — records stamped after the run started, or in the future by a clock error at the
//! source — which are pulled and counted but never move the cursor.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::normalise::{scalar_instant, scalar_text, source_timestamp, text, Scalar};
use crate::raw::RawLog;

/// How to reach the source and how patient to be with it.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub url: url::Url,
    pub page_size: u32,
    /// Whole-request timeout (connect, send, read the body).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// First backoff; doubles per attempt up to `backoff_max`, with jitter.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// A `Retry-After` longer than this is cut to it.
    pub retry_after_max: Duration,
    /// A response body larger than this fails the request (it is never buffered whole).
    pub max_body_bytes: u64,
}

/// The default limit of a response body: 256 MiB (a page of 1,000 records is about 1.4 MB).
pub const MAX_BODY_BYTES: u64 = 256 << 20;

impl SourceConfig {
    pub fn new(url: url::Url) -> Self {
        SourceConfig {
            url,
            page_size: 1000,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_attempts: 6,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            retry_after_max: Duration::from_secs(120),
            max_body_bytes: MAX_BODY_BYTES,
        }
    }
}

/// Why a pull failed. Each message says what happened and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    #[error("the source refused the token (HTTP {status} on {request}): set MOTCUA_SOURCE_TOKEN or MOTCUA_SOURCE_TOKEN_FILE to a token the case system accepts")]
    Unauthorized { status: u16, request: String },
    #[error("the source rejected {request} as a bad request (HTTP 400: {message}): check source.url and source.page_size (1 to 1000) in the pipeline file")]
    BadRequest { request: String, message: String },
    #[error("the source answered {request} with error_code {code:?} ({message}): this is not a transient error; ask the case system's operators")]
    Application {
        request: String,
        code: String,
        message: String,
    },
    #[error("the source answered {request} with a body that breaks the contract of source-api.md ({problem}); nothing was staged or published: report it to the case system's operators")]
    Contract { request: String, problem: String },
    #[error("the source answered {request} with a body larger than {limit} bytes; nothing was staged or published: raise source.max_body_mib in the pipeline file, or lower source.page_size")]
    TooLarge { request: String, limit: u64 },
    #[error(
        "the source answered {request} with HTTP {status}: check source.url in the pipeline file"
    )]
    Http { request: String, status: u16 },
    #[error("the source did not answer {request} after {attempts} attempts over {secs:.0} s (last: {last}): check that the case system at {base} is up and reachable, then run again")]
    Exhausted {
        request: String,
        attempts: u32,
        secs: f64,
        last: String,
        base: String,
    },
    #[error("records at {at} kept changing over 10 passes of {request}; run again later")]
    Unsettled { request: String, at: String },
    #[error("a full page of {request} has no readable NgayCapNhat, so the pull cannot advance: the source breaks its contract; report it to its operators")]
    NoCursor { request: String },
    #[error(
        "the source token has characters an HTTP header cannot carry: check MOTCUA_SOURCE_TOKEN"
    )]
    BadToken,
    #[error("the source URL cannot be used: {0}; check source.url in the pipeline file")]
    BadUrl(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("cannot land a raw response of {request}: {message}")]
    Landing { request: String, message: String },
}

/// The envelope every response body has, with its `data` as JSON trees (see [`Response`] for
/// a body read without them).
#[derive(Debug, Deserialize)]
pub struct Envelope {
    #[serde(default)]
    pub error_code: Option<Value>,
    #[serde(default)]
    pub message: Option<Value>,
    #[serde(default)]
    pub total: Option<Value>,
    #[serde(default)]
    pub data: Option<Vec<Value>>,
}

impl Envelope {
    pub fn total(&self) -> Option<u64> {
        text(self.total.as_ref()).and_then(|t| t.parse().ok())
    }
}

/// Whether a JSON value is an array, read without keeping it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    Array,
    Other(&'static str),
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Shape;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Shape, A::Error> {
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Shape::Array)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Shape, A::Error> {
                while a
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Shape::Other("an object"))
            }
            fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
                Ok(Shape::Other("a string"))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
                Ok(Shape::Other("a boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
                Ok(Shape::Other("a number"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
                Ok(Shape::Other("a number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
                Ok(Shape::Other("a number"))
            }
        }
        d.deserialize_any(V)
    }
}

/// The envelope of a body, its `data` checked for shape but not kept.
#[derive(Debug, Deserialize)]
struct Head<'a> {
    #[serde(default, borrow)]
    error_code: Option<Scalar<'a>>,
    #[serde(default, borrow)]
    message: Option<Scalar<'a>>,
    #[serde(default)]
    total: Option<Value>,
    #[serde(default)]
    data: Option<Shape>,
}

/// What a body of HTTP 200 calls for.
#[derive(Debug, PartialEq)]
pub enum BodyVerdict {
    /// The envelope with `error_code` "0" and a `data` array; its `total` when given.
    Usable { total: Option<u64> },
    /// Not JSON (a torn body, an HTML error page) or `error_code` "1" (busy): try again.
    Retry(String),
    /// An `error_code` other than "0" and "1".
    Application { code: String, message: String },
    /// JSON, but not the envelope of `source-api.md`: a retry would get the same.
    Contract(String),
}

/// Decides what a body of HTTP 200 calls for (see [`BodyVerdict`]).
pub fn classify_body(body: &[u8]) -> BodyVerdict {
    // serde would read a JSON array as the envelope's fields in order: only an object is one.
    let object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if !object && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        return BodyVerdict::Contract("not the JSON envelope: JSON, but not an object".into());
    }
    let head: Head = match serde_json::from_slice(body) {
        Ok(h) => h,
        Err(e) if e.is_data() => {
            return BodyVerdict::Contract(format!("not the JSON envelope: {e}"));
        }
        Err(e) => {
            let shown: String = String::from_utf8_lossy(&body[..body.len().min(60)])
                .chars()
                .filter(|c| !c.is_control())
                .collect();
            return BodyVerdict::Retry(format!(
                "a body that is not JSON ({e}; it starts {shown:?})"
            ));
        }
    };
    let message = scalar_text(head.message).unwrap_or_default();
    match scalar_text(head.error_code).as_deref() {
        None => BodyVerdict::Contract("the envelope has no error_code".into()),
        Some("1") => BodyVerdict::Retry(format!("error_code \"1\" ({message})")),
        Some("0") => match head.data {
            Some(Shape::Array) => BodyVerdict::Usable {
                total: text(head.total.as_ref()).and_then(|t| t.parse().ok()),
            },
            Some(Shape::Other(what)) => {
                BodyVerdict::Contract(format!("its data is {what}, not an array"))
            }
            None => BodyVerdict::Contract("error_code \"0\" but no data array".into()),
        },
        Some(code) => BodyVerdict::Application {
            code: code.to_string(),
            message,
        },
    }
}

/// What an HTTP status calls for.
#[derive(Debug, PartialEq)]
pub enum StatusVerdict {
    /// 200: read the body.
    Read,
    /// 429 (after `wait` when it sent `Retry-After`), 5xx: try again.
    Retry { why: String, wait: Option<Duration> },
    /// 401, 403: the token.
    Unauthorized,
    /// 400: read the message and fail.
    BadRequest,
    /// Anything else: fail.
    Fail,
}

/// Decides what an HTTP status (and its `Retry-After`, cut to `retry_after_max`) calls for.
pub fn classify_status(
    status: StatusCode,
    headers: &HeaderMap,
    retry_after_max: Duration,
) -> StatusVerdict {
    match status {
        StatusCode::OK => StatusVerdict::Read,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => StatusVerdict::Unauthorized,
        StatusCode::BAD_REQUEST => StatusVerdict::BadRequest,
        StatusCode::TOO_MANY_REQUESTS => {
            let secs = headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0);
            StatusVerdict::Retry {
                why: format!("HTTP 429, Retry-After {secs:?}"),
                wait: secs.map(|s| Duration::from_secs_f64(s.min(1e6)).min(retry_after_max)),
            }
        }
        s if s.is_server_error() => StatusVerdict::Retry {
            why: format!("HTTP {}", s.as_u16()),
            wait: None,
        },
        _ => StatusVerdict::Fail,
    }
}

/// Capped exponential backoff with jitter: attempt n waits between half and all of
/// `base × 2ⁿ`, never more than `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait after failed attempt `attempt` (1-based), drawn with `rng`.
    pub fn wait(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let cap = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max)
            .as_millis() as u64;
        Duration::from_millis(rng.random_range(cap / 2..=cap))
    }
}

/// A successful response: where its body lands, the body, and its `total`.
pub struct Response {
    pub raw_path: String,
    pub body: Bytes,
    pub total: Option<u64>,
}

impl Response {
    /// The `data` records as JSON trees.
    pub fn records(&self) -> Vec<Value> {
        records_of(&self.body)
    }
}

/// The `data` records of a body as JSON trees (none when it is not the envelope).
pub fn records_of(body: &[u8]) -> Vec<Value> {
    serde_json::from_slice::<Envelope>(body)
        .ok()
        .and_then(|e| e.data)
        .unwrap_or_default()
}

/// One page of `/v1/hoso` as received: the path its body lands at, and the body.
#[derive(Clone)]
pub struct Page {
    pub raw_path: String,
    pub body: Bytes,
}

impl Page {
    /// The page's records as JSON trees.
    pub fn records(&self) -> Vec<Value> {
        records_of(&self.body)
    }
}

/// What the pull needs of a page: how many records, the greatest readable `NgayCapNhat`
/// (to page on), the greatest before `bound` (the cursor), and the records stamped at or after
/// `bound` (key and stamp).
#[derive(Debug, Default, PartialEq)]
pub struct Stamps {
    pub records: usize,
    pub last: Option<i64>,
    pub last_before_bound: Option<i64>,
    pub beyond: Vec<(String, i64)>,
}

impl Stamps {
    fn add(&mut self, key: Option<String>, stamp: Option<i64>, bound: Option<i64>) {
        self.records += 1;
        let Some(t) = stamp else { return };
        self.last = self.last.max(Some(t));
        if bound.is_some_and(|b| t >= b) {
            self.beyond.push((key.unwrap_or_default(), t));
        } else {
            self.last_before_bound = self.last_before_bound.max(Some(t));
        }
    }
}

/// The [`Stamps`] of a body. Read typed, skipping every other field; as JSON trees if a record
/// is odd.
pub fn stamps(body: &[u8], bound: Option<i64>) -> Stamps {
    #[derive(Deserialize)]
    struct Typed<'a> {
        #[serde(default, borrow)]
        data: Option<Vec<Stamp<'a>>>,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Stamp<'a> {
        #[serde(rename = "MaHoSo", borrow)]
        key: Option<Scalar<'a>>,
        #[serde(rename = "NgayCapNhat", borrow)]
        updated: Option<Scalar<'a>>,
    }
    let mut out = Stamps::default();
    match serde_json::from_slice::<Typed>(body) {
        Ok(p) => {
            for s in p.data.unwrap_or_default() {
                let t = scalar_instant(s.updated).ok().flatten();
                let beyond = bound.is_some_and(|b| t.is_some_and(|t| t >= b));
                out.add(beyond.then(|| scalar_text(s.key)).flatten(), t, bound);
            }
        }
        Err(_) => {
            for d in records_of(body) {
                let t = crate::normalise::instant(d.get("NgayCapNhat"))
                    .ok()
                    .flatten();
                out.add(text(d.get("MaHoSo")), t, bound);
            }
        }
    }
    out
}

/// A window of `NgayCapNhat` to pull: from `from` (inclusive; everything when `None`) to `to`
/// (exclusive; no end when `None`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

/// Counts of one pull, for the run record.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PullStats {
    pub requests: u64,
    pub retries: u64,
    pub pages: u64,
    pub records: u64,
    pub bytes: u64,
    /// Greatest `NgayCapNhat` pulled before the bound, as `yyyyMMddHHmmss` local time.
    pub cursor_after: Option<String>,
    #[serde(skip)]
    pub cursor_after_micros: Option<i64>,
    pub same_second_windows: u64,
    /// Distinct records (key, stamp) pulled with a stamp at or after the bound.
    #[serde(skip)]
    pub beyond_bound: HashSet<(String, i64)>,
}

/// The case-system client.
pub struct Source {
    cfg: SourceConfig,
    http: reqwest::Client,
    backoff: Backoff,
    /// The pull's upper bound: no stamp at or after it moves the cursor.
    bound: Option<i64>,
    pub stats: PullStats,
    /// Progress of the case pull (hidden unless on a terminal).
    pub progress: indicatif::ProgressBar,
}

/// An attempt that did not succeed but may on a retry: why, and how long the server asked to
/// wait.
struct Transient {
    why: String,
    wait: Option<Duration>,
}

impl Source {
    /// `token` goes into the `Authorization` header, marked sensitive so that it is never printed.
    pub fn new(cfg: SourceConfig, token: &str) -> Result<Self, SourceError> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| SourceError::BadToken)?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.connect_timeout)
            .user_agent(concat!("motcua/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SourceError::Client(e.to_string()))?;
        Ok(Source {
            backoff: Backoff {
                base: cfg.backoff_base,
                max: cfg.backoff_max,
            },
            cfg,
            http,
            bound: None,
            stats: PullStats::default(),
            progress: indicatif::ProgressBar::hidden(),
        })
    }

    /// Sets the pull's upper bound: stamps at or after it never move `cursor_after`.
    pub fn set_bound(&mut self, bound: i64) {
        self.bound = Some(bound);
    }

    /// GETs `endpoint` with `query`, retrying what a retry can cure; lands the body in `raw`
    /// before parsing it.
    pub async fn fetch(
        &mut self,
        raw: &RawLog,
        endpoint: &str,
        query: &[(&str, String)],
    ) -> Result<Response, SourceError> {
        let request = describe(endpoint, query);
        let url = self
            .cfg
            .url
            .join(endpoint.trim_start_matches('/'))
            .map_err(|e| SourceError::BadUrl(e.to_string()))?;
        let started = Instant::now();
        let mut last = String::new();
        for attempt in 1..=self.cfg.max_attempts {
            if attempt > 1 {
                self.stats.retries += 1;
            }
            self.stats.requests += 1;
            let t = match self.attempt(raw, &url, endpoint, query, &request).await? {
                Ok(r) => return Ok(r),
                Err(t) => t,
            };
            last = t.why;
            if attempt == self.cfg.max_attempts {
                break;
            }
            let pause = t
                .wait
                .unwrap_or_else(|| self.backoff.wait(attempt, &mut rand::rng()));
            warn!(request = %request, attempt, error = %last, wait_ms = pause.as_millis() as u64, "source request failed; retrying");
            tokio::time::sleep(pause).await;
        }
        Err(SourceError::Exhausted {
            request,
            attempts: self.cfg.max_attempts,
            secs: started.elapsed().as_secs_f64(),
            last,
            base: self.cfg.url.to_string(),
        })
    }

    /// One attempt: send, classify the status, read and land the body, classify the body.
    async fn attempt(
        &mut self,
        raw: &RawLog,
        url: &url::Url,
        endpoint: &str,
        query: &[(&str, String)],
        request: &str,
    ) -> Result<Result<Response, Transient>, SourceError> {
        let transient = |why: String| Ok(Err(Transient { why, wait: None }));
        let resp = match self.http.get(url.clone()).query(query).send().await {
            Err(e) => return transient(without_url(&e)),
            Ok(r) => r,
        };
        let status = resp.status();
        let request = request.to_string();
        match classify_status(status, resp.headers(), self.cfg.retry_after_max) {
            StatusVerdict::Read => {}
            StatusVerdict::Retry { why, wait } => return Ok(Err(Transient { why, wait })),
            StatusVerdict::Unauthorized => {
                return Err(SourceError::Unauthorized {
                    status: status.as_u16(),
                    request,
                })
            }
            StatusVerdict::BadRequest => {
                let body = read_body(resp, 64 << 10).await.unwrap_or_default();
                let message = serde_json::from_slice::<Envelope>(&body)
                    .ok()
                    .and_then(|e| text(e.message.as_ref()))
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
                return Err(SourceError::BadRequest { request, message });
            }
            StatusVerdict::Fail => {
                return Err(SourceError::Http {
                    request,
                    status: status.as_u16(),
                })
            }
        }
        let body = match read_body(resp, self.cfg.max_body_bytes).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => {
                return Err(SourceError::TooLarge {
                    request,
                    limit: self.cfg.max_body_bytes,
                })
            }
            Err(BodyError::Read(e)) => {
                return transient(format!("connection dropped while reading the body: {e}"))
            }
        };
        let raw_path = raw
            .land_soon(endpoint, query, body.clone())
            .await
            .map_err(|e| SourceError::Landing {
                request: request.clone(),
                message: format!("{e:#}"),
            })?;
        self.stats.bytes += body.len() as u64;
        match classify_body(&body) {
            BodyVerdict::Usable { total } => Ok(Ok(Response {
                raw_path,
                body,
                total,
            })),
            BodyVerdict::Retry(why) => transient(why),
            BodyVerdict::Application { code, message } => Err(SourceError::Application {
                request,
                code,
                message,
            }),
            BodyVerdict::Contract(problem) => Err(SourceError::Contract { request, problem }),
        }
    }

    /// `/v1/donvi` or `/v1/tthc`: the whole list in one response.
    pub async fn list(&mut self, raw: &RawLog, endpoint: &str) -> Result<Vec<Value>, SourceError> {
        let r = self.fetch(raw, endpoint, &[]).await?;
        Ok(r.records())
    }

    /// Pulls every case record of `window`, handing each page's records and raw path to
    /// `on_page` in arrival order.
    pub async fn pull_cases(
        &mut self,
        raw: &RawLog,
        window: Window,
        mut on_page: impl FnMut(Page),
    ) -> Result<(), SourceError> {
        let size = self.cfg.page_size;
        let mut from = window.from;
        let started = Instant::now();
        let first_page = self.stats.pages;
        loop {
            if let (Some(f), Some(t)) = (from, window.to) {
                if f >= t {
                    return Ok(());
                }
            }
            let query = cases_query(from, window.to, 1, size);
            let r = self.fetch(raw, "/v1/hoso", &query).await?;
            if self.stats.pages == first_page {
                if let Some(total) = r.total {
                    let before = self.progress.length().unwrap_or(0);
                    self.progress.set_length(before + total);
                }
            }
            let s = stamps(&r.body, self.bound);
            let (n, last) = (s.records, s.last);
            self.take(r, s, &mut on_page);
            if self.stats.pages.is_multiple_of(50) {
                let rate = self.stats.records as f64 / started.elapsed().as_secs_f64().max(1e-3);
                info!(
                    pages = self.stats.pages,
                    records = self.stats.records,
                    per_second = rate as u64,
                    "pulling cases"
                );
            }
            if (n as u32) < size {
                return Ok(());
            }
            // The next cursor: the greatest readable NgayCapNhat of this page.
            match (last, from) {
                (None, _) => {
                    return Err(SourceError::NoCursor {
                        request: describe("/v1/hoso", &query),
                    })
                }
                (Some(l), Some(f)) if l <= f => {
                    // A page full of one second: read that second as a window, then go past it.
                    self.read_second(raw, f, window.to, &mut on_page).await?;
                    from = Some(f + 1_000_000);
                }
                (Some(l), _) => from = Some(l),
            }
        }
    }

    /// Counts a page and hands it on.
    fn take(&mut self, r: Response, s: Stamps, on_page: &mut impl FnMut(Page)) {
        self.stats.pages += 1;
        self.stats.records += s.records as u64;
        self.progress.inc(s.records as u64);
        if let Some(t) = s.last_before_bound {
            if self.stats.cursor_after_micros.is_none_or(|c| t > c) {
                self.stats.cursor_after_micros = Some(t);
                self.stats.cursor_after = Some(source_timestamp(t));
            }
        }
        self.stats.beyond_bound.extend(s.beyond);
        on_page(Page {
            raw_path: r.raw_path,
            body: r.body,
        });
    }

    /// Reads every record whose `NgayCapNhat` falls in the second starting at `at` (and before
    /// `to`), by page number, repeating passes until one brings no record not seen before (a
    /// record updated during a pass leaves the window and is read later, past it).
    async fn read_second(
        &mut self,
        raw: &RawLog,
        at: i64,
        to: Option<i64>,
        on_page: &mut impl FnMut(Page),
    ) -> Result<(), SourceError> {
        self.stats.same_second_windows += 1;
        let size = self.cfg.page_size;
        let end = to.map_or(at + 1_000_000, |t| t.min(at + 1_000_000));
        let mut seen: HashSet<String> = HashSet::new();
        for pass in 1..=10 {
            let mut fresh = 0usize;
            let mut page = 1u64;
            loop {
                let query = cases_query(Some(at), Some(end), page, size);
                let r = self.fetch(raw, "/v1/hoso", &query).await?;
                let data = r.records();
                for d in &data {
                    if seen.insert(d.to_string()) {
                        fresh += 1;
                    }
                }
                let s = stamps(&r.body, self.bound);
                self.take(r, s, on_page);
                if (data.len() as u32) < size {
                    break;
                }
                page += 1;
            }
            debug!(pass, fresh, "same-second window pass");
            if pass > 1 && fresh == 0 {
                return Ok(());
            }
        }
        Err(SourceError::Unsettled {
            request: describe("/v1/hoso", &cases_query(Some(at), Some(end), 1, size)),
            at: source_timestamp(at),
        })
    }
}

/// The query of a `/v1/hoso` page.
fn cases_query(
    from: Option<i64>,
    to: Option<i64>,
    page: u64,
    size: u32,
) -> Vec<(&'static str, String)> {
    let mut q = vec![];
    if let Some(f) = from {
        q.push(("updated_from", source_timestamp(f)));
    }
    if let Some(t) = to {
        q.push(("updated_to", source_timestamp(t)));
    }
    q.push(("page", page.to_string()));
    q.push(("page_size", size.to_string()));
    q
}

enum BodyError {
    TooLarge,
    Read(String),
}

/// Reads a body chunk by chunk, failing as soon as it passes `limit` bytes (or announces more).
async fn read_body(mut resp: reqwest::Response, limit: u64) -> Result<Bytes, BodyError> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let mut buf = BytesMut::with_capacity(resp.content_length().unwrap_or(0) as usize);
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if (buf.len() + c.len()) as u64 > limit {
                    return Err(BodyError::TooLarge);
                }
                buf.extend_from_slice(&c);
            }
            Ok(None) => return Ok(buf.freeze()),
            Err(e) => return Err(BodyError::Read(without_url(&e))),
        }
    }
}

/// `"/v1/hoso?updated_from=…&page=1"` for messages and logs (never holds the token).
pub fn describe(endpoint: &str, query: &[(&str, String)]) -> String {
    if query.is_empty() {
        return endpoint.to_string();
    }
    let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{endpoint}?{}", q.join("&"))
}

fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s
            .replace(&format!(" ({u})"), "")
            .replace(u.as_str(), "<source>");
    }
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn bodies_are_classified() {
        let usable = |b: &str| classify_body(b.as_bytes());
        assert_eq!(
            usable(r#"{"error_code":"0","message":"","total":"2","data":[{},{}]}"#),
            BodyVerdict::Usable { total: Some(2) }
        );
        assert_eq!(
            usable(r#"{"error_code":0,"data":[]}"#),
            BodyVerdict::Usable { total: None }
        );
        // Retried: a torn body, an HTML error page served with 200, "system busy".
        for b in [
            r#"{"error_code":"0","data":[{"MaHoSo":"#,
            "<html><body>502 Bad Gateway</body></html>",
            "",
        ] {
            assert!(matches!(usable(b), BodyVerdict::Retry(_)), "{b}");
        }
        assert!(
            matches!(usable(r#"{"error_code":"1","message":"bận"}"#), BodyVerdict::Retry(m) if m.contains("bận"))
        );
        // Failed at once: not the envelope.
        for (b, says) in [
            (r#"{"message":"","data":[]}"#, "no error_code"),
            (r#"{"error_code":null,"data":[]}"#, "no error_code"),
            (
                r#"{"error_code":"0","data":{"MaHoSo":"A"}}"#,
                "an object, not an array",
            ),
            (
                r#"{"error_code":"0","data":"[]"}"#,
                "a string, not an array",
            ),
            (r#"{"error_code":"0","data":null}"#, "no data array"),
            (r#"{"error_code":"0"}"#, "no data array"),
            (r#"[{"error_code":"0"}]"#, "not the JSON envelope"),
            (
                r#"{"error_code":"0","data":[],"data":[]}"#,
                "not the JSON envelope",
            ),
        ] {
            match usable(b) {
                BodyVerdict::Contract(p) => assert!(p.contains(says), "{b}: {p}"),
                other => panic!("{b}: {other:?}"),
            }
        }
        assert_eq!(
            usable(r#"{"error_code":"99","message":"no such endpoint"}"#),
            BodyVerdict::Application {
                code: "99".into(),
                message: "no such endpoint".into()
            }
        );
    }

    #[test]
    fn statuses_are_classified() {
        let max = Duration::from_secs(120);
        let none = HeaderMap::new();
        assert_eq!(
            classify_status(StatusCode::OK, &none, max),
            StatusVerdict::Read
        );
        assert_eq!(
            classify_status(StatusCode::UNAUTHORIZED, &none, max),
            StatusVerdict::Unauthorized
        );
        assert_eq!(
            classify_status(StatusCode::FORBIDDEN, &none, max),
            StatusVerdict::Unauthorized
        );
        assert_eq!(
            classify_status(StatusCode::BAD_REQUEST, &none, max),
            StatusVerdict::BadRequest
        );
        assert_eq!(
            classify_status(StatusCode::NOT_FOUND, &none, max),
            StatusVerdict::Fail
        );
        for s in [500, 502, 503, 504] {
            assert!(matches!(
                classify_status(StatusCode::from_u16(s).unwrap(), &none, max),
                StatusVerdict::Retry { wait: None, .. }
            ));
        }
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert!(matches!(
            classify_status(StatusCode::TOO_MANY_REQUESTS, &h, max),
            StatusVerdict::Retry { wait: Some(w), .. } if w == Duration::from_secs(3)
        ));
        h.insert(RETRY_AFTER, HeaderValue::from_static("86400"));
        assert!(matches!(
            classify_status(StatusCode::TOO_MANY_REQUESTS, &h, max),
            StatusVerdict::Retry { wait: Some(w), .. } if w == max
        ));
        for odd in ["-1", "soon", "NaN", "1e400"] {
            h.insert(RETRY_AFTER, HeaderValue::from_static(odd));
            assert!(
                matches!(
                    classify_status(StatusCode::TOO_MANY_REQUESTS, &h, max),
                    StatusVerdict::Retry { wait: None, .. }
                ),
                "{odd}"
            );
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for attempt in 1..40 {
            let cap = (100u64 << attempt.min(16)).min(2000);
            for _ in 0..50 {
                let w = b.wait(attempt, &mut rng).as_millis() as u64;
                assert!(w >= cap / 2 && w <= cap, "attempt {attempt}: {w} ms");
            }
        }
        let zero = Backoff {
            base: Duration::ZERO,
            max: Duration::ZERO,
        };
        assert_eq!(zero.wait(3, &mut rng), Duration::ZERO);
    }

    #[test]
    fn stamps_split_at_the_bound() {
        let body = br#"{"error_code":"0","data":[
            {"MaHoSo":"A","NgayCapNhat":"20240701080000"},
            {"MaHoSo":"B","NgayCapNhat":"20991231000000"},
            {"MaHoSo":"C","NgayCapNhat":"bad"},
            {"MaHoSo":"D","NgayCapNhat":"01/08/2024 08:00:00"}]}"#;
        let bound = crate::normalise::parse_instant("20261128000000");
        let s = stamps(body, bound);
        assert_eq!(s.records, 4);
        assert_eq!(s.last, crate::normalise::parse_instant("20991231000000"));
        assert_eq!(
            s.last_before_bound,
            crate::normalise::parse_instant("20240801080000")
        );
        assert_eq!(
            s.beyond,
            vec![(
                "B".to_string(),
                crate::normalise::parse_instant("20991231000000").unwrap()
            )]
        );
        // Without a bound, every stamp may move the cursor.
        assert_eq!(stamps(body, None).last_before_bound, s.last);
    }
}

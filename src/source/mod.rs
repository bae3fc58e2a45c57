//! Stage 1: pull from the case system (`../shared/spec/source-api.md`).
//!
//! Agencies (`/v1/donvi`), the procedure catalog (`/v1/tthc`) and case files (`/v1/hoso`) over
//! HTTP with a bearer token. Every response body is landed in the raw layer ([`crate::raw`])
//! before anything parses it. Misbehaving servers are survived: 429 (honouring `Retry-After`),
//! 5xx, dropped connections, slow pages, bodies that are not JSON (a torn body, an HTML error
//! page) and `error_code` "1" are retried with capped, jittered exponential backoff; 401, 400,
//! another `error_code`, a JSON body that breaks the envelope (no `error_code`, a `data` that is
//! not an array) and a body over the size limit fail at once. What each answer calls for is
//! decided in [`retry`] and [`crate::wire::classify_body`], tested on their own.
//!
//! Cases are paged **by cursor** ([`paging`]), not by page number: each request asks again from
//! the last `NgayCapNhat` seen (inclusive), so a record updated while we page (which moves to
//! the end of the order) shifts nothing we have not yet read.
//!
//! A pull reads two windows ([`Window`]): everything changed from the cursor up to the pull's
//! fixed upper bound (`updated_to`), which alone moves the cursor, then the **tail** past the
//! bound — records stamped after the run started, or in the future by a clock error at the
//! source — which are pulled and counted but never move the cursor.

pub mod paging;
pub mod retry;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde_json::Value;
use tracing::warn;

pub use paging::{judge_page, stamps, Stamp, Stamps, Window};
pub use retry::{classify_status, Backoff, StatusVerdict};

pub use crate::error::SourceError;
use crate::raw::RawLog;
use crate::wire::{classify_reading, records_of, BodyVerdict, Endpoint, Envelope};

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

/// A successful response: where its body landed in `raw/`, the body, its `total`, and the
/// stamps of its records (read with the envelope, in the same pass).
pub struct Response {
    pub raw_path: String,
    pub body: Bytes,
    pub total: Option<u64>,
    pub stamps: Stamps,
}

impl Response {
    /// The `data` records as JSON trees.
    pub fn records(&self) -> Vec<Value> {
        records_of(&self.body)
    }
}

/// A `/v1/hoso` body handed to another thread to be judged and read there, once: the pull's
/// judging thread reads a body for its verdict, the stamps the pull pages on, and its
/// records in one pass (see [`Source::judge_cases_by`]).
pub struct Judging {
    pub raw_path: String,
    pub body: Bytes,
    /// The pull's upper bound (see [`Stamps`]).
    pub bound: Option<i64>,
    /// The body's verdict and, when usable, its stamps: sent back as soon as they are read,
    /// before the records are normalised. A body judged usable has been taken by the reader.
    pub reply: tokio::sync::oneshot::Sender<(BodyVerdict, Stamps)>,
}

/// Where case bodies go to be judged (see [`Judging`]): held weakly, so that the reader alone
/// decides when its inbox closes (a reader stopped part way waits for no one).
pub type Judge = std::sync::Weak<std::sync::mpsc::SyncSender<Judging>>;

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
    /// Where case bodies are judged, when not here.
    judge: Option<Judge>,
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

impl Transient {
    fn new(why: String) -> Self {
        Transient { why, wait: None }
    }
}

impl Source {
    /// `token` goes into the `Authorization` header, marked sensitive so that it is never printed.
    pub fn new(cfg: SourceConfig, token: &str) -> Result<Self, SourceError> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| SourceError::BadToken)?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        crate::tls::install();
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
            judge: None,
            stats: PullStats::default(),
            progress: indicatif::ProgressBar::hidden(),
        })
    }

    /// Sets the pull's upper bound: stamps at or after it never move `cursor_after`.
    pub fn set_bound(&mut self, bound: i64) {
        self.bound = Some(bound);
    }

    /// From now on, `/v1/hoso` bodies are judged by `judge`, which reads each once and keeps
    /// those it finds usable; the pages handed on by [`Source::pull_cases`] are then only for
    /// counting.
    pub fn judge_cases_by(&mut self, judge: Judge) {
        self.judge = Some(judge);
    }

    /// GETs `endpoint` with `query`, retrying what a retry can cure; lands the body in `raw`
    /// before parsing it.
    pub async fn fetch(
        &mut self,
        raw: &RawLog,
        endpoint: Endpoint,
        query: &[(&str, String)],
    ) -> Result<Response, SourceError> {
        let request = describe(endpoint, query);
        let url = self
            .cfg
            .url
            .join(endpoint.path().trim_start_matches('/'))
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

    /// One attempt: send, decide on the status, read and land the body, decide on the body.
    async fn attempt(
        &mut self,
        raw: &RawLog,
        url: &url::Url,
        endpoint: Endpoint,
        query: &[(&str, String)],
        request: &str,
    ) -> Result<Result<Response, Transient>, SourceError> {
        let resp = match self.http.get(url.clone()).query(query).send().await {
            Err(e) => return Ok(Err(Transient::new(without_url(&e)))),
            Ok(r) => r,
        };
        if let Err(t) = self.check_status(resp.status(), resp.headers(), request) {
            return match t {
                Refusal::Retry(t) => Ok(Err(t)),
                Refusal::BadRequest => Err(bad_request(resp, request).await),
                Refusal::Fail(e) => Err(e),
            };
        }
        let body = match read_body(resp, self.cfg.max_body_bytes).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => {
                return Err(SourceError::TooLarge {
                    request: request.into(),
                    limit: self.cfg.max_body_bytes,
                })
            }
            Err(BodyError::Read(e)) => {
                let why = format!("connection dropped while reading the body: {e}");
                return Ok(Err(Transient::new(why)));
            }
        };
        let raw_path =
            raw.land(endpoint, query, body.clone())
                .await
                .map_err(|e| SourceError::Landing {
                    request: request.into(),
                    message: e.to_string(),
                })?;
        self.stats.bytes += body.len() as u64;
        match (&self.judge, endpoint) {
            (Some(judge), Endpoint::Cases) => {
                let (reply, judged) = tokio::sync::oneshot::channel();
                let page = Judging {
                    raw_path: raw_path.clone(),
                    body: body.clone(),
                    bound: self.bound,
                    reply,
                };
                // The inbox is held only for the send, never across the wait.
                let sent = judge
                    .upgrade()
                    .is_some_and(|inbox| inbox.send(page).is_ok());
                let judged = if sent { judged.await.ok() } else { None };
                let Some((verdict, stamps)) = judged else {
                    return Err(SourceError::ReaderStopped {
                        request: request.into(),
                    });
                };
                Self::answer(raw_path, body, request, verdict, stamps)
            }
            _ => Self::check_body(raw_path, body, request, self.bound),
        }
    }

    /// What the status calls for, as [`retry::classify_status`] decides.
    fn check_status(
        &self,
        status: reqwest::StatusCode,
        headers: &HeaderMap,
        request: &str,
    ) -> Result<(), Refusal> {
        match classify_status(status, headers, self.cfg.retry_after_max) {
            StatusVerdict::Read => Ok(()),
            StatusVerdict::Retry { why, wait } => Err(Refusal::Retry(Transient { why, wait })),
            StatusVerdict::Unauthorized => Err(Refusal::Fail(SourceError::Unauthorized {
                status: status.as_u16(),
                request: request.into(),
            })),
            StatusVerdict::BadRequest => Err(Refusal::BadRequest),
            StatusVerdict::Fail => Err(Refusal::Fail(SourceError::Http {
                request: request.into(),
                status: status.as_u16(),
            })),
        }
    }

    /// What the body calls for, as [`crate::wire::classify_body`] decides; the stamps of its
    /// records are read in the same pass (apart from `bound`, see [`Stamps`]).
    fn check_body(
        raw_path: String,
        body: Bytes,
        request: &str,
        bound: Option<i64>,
    ) -> Result<Result<Response, Transient>, SourceError> {
        let (verdict, data) = classify_reading::<Vec<Stamp>>(&body);
        let stamps = match (&verdict, data) {
            (BodyVerdict::Usable { .. }, Some(records)) => Stamps::of(records, bound),
            // An odd record: read as JSON trees.
            (BodyVerdict::Usable { .. }, None) => stamps(&body, bound),
            _ => Stamps::default(),
        };
        Self::answer(raw_path, body, request, verdict, stamps)
    }

    /// What a body's verdict calls for: the response, a retry, or a failure.
    fn answer(
        raw_path: String,
        body: Bytes,
        request: &str,
        verdict: BodyVerdict,
        stamps: Stamps,
    ) -> Result<Result<Response, Transient>, SourceError> {
        let request = request.to_string();
        match verdict {
            BodyVerdict::Usable { total } => Ok(Ok(Response {
                raw_path,
                body,
                total,
                stamps,
            })),
            BodyVerdict::Retry(why) => Ok(Err(Transient::new(why))),
            BodyVerdict::Application { code, message } => Err(SourceError::Application {
                request,
                code,
                message,
            }),
            BodyVerdict::Contract(problem) => Err(SourceError::Contract { request, problem }),
        }
    }

    /// `/v1/donvi` or `/v1/tthc`: the whole list in one response.
    pub async fn list(
        &mut self,
        raw: &RawLog,
        endpoint: Endpoint,
    ) -> Result<Vec<Value>, SourceError> {
        let r = self.fetch(raw, endpoint, &[]).await?;
        Ok(r.records())
    }
}

/// A status that is not 200.
enum Refusal {
    Retry(Transient),
    BadRequest,
    Fail(SourceError),
}

/// The error of a 400, with the message its body gives.
async fn bad_request(resp: reqwest::Response, request: &str) -> SourceError {
    let body = read_body(resp, 64 << 10).await.unwrap_or_default();
    let message = serde_json::from_slice::<Envelope<serde::de::IgnoredAny>>(&body)
        .ok()
        .and_then(|e| crate::wire::scalar_text(e.message))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
    SourceError::BadRequest {
        request: request.into(),
        message,
    }
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
pub fn describe(endpoint: Endpoint, query: &[(&str, String)]) -> String {
    if query.is_empty() {
        return endpoint.path().to_string();
    }
    let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}?{}", endpoint.path(), q.join("&"))
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

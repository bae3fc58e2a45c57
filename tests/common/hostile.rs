//! A source that breaks the contract in ways the demo source does not: each request is
//! answered by a function of its path, its query and how many requests that path has had.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;

type Answer = dyn Fn(&str, &str, u64) -> Response + Send + Sync;

struct Shared {
    answer: Box<Answer>,
    counts: Mutex<HashMap<String, u64>>,
    requests: AtomicU64,
}

/// A running hostile source, stopped on drop.
pub struct Hostile {
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Hostile {
    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `answer(path, query, n)` on a free port of 127.0.0.1, where `n` counts the requests
/// to `path` from 0.
pub async fn serve(
    answer: impl Fn(&str, &str, u64) -> Response + Send + Sync + 'static,
) -> Hostile {
    let shared = Arc::new(Shared {
        answer: Box::new(answer),
        counts: Mutex::new(HashMap::new()),
        requests: AtomicU64::new(0),
    });
    async fn handle(State(s): State<Arc<Shared>>, uri: Uri) -> Response {
        s.requests.fetch_add(1, Ordering::Relaxed);
        let n = {
            let mut c = s.counts.lock().unwrap();
            let n = c.entry(uri.path().to_string()).or_default();
            *n += 1;
            *n - 1
        };
        (s.answer)(uri.path(), uri.query().unwrap_or(""), n)
    }
    let app = Router::new().fallback(handle).with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Hostile { url, shared, task }
}

/// HTTP 200 with `body` as JSON.
pub fn json(body: impl Into<Bytes>) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.into()))
        .unwrap()
}

/// HTTP 200 with an HTML error page, as a proxy in front of a case system serves one.
pub fn html_page() -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/html")
        .body(Body::from(
            "<html><body><h1>Hệ thống đang bảo trì</h1></body></html>",
        ))
        .unwrap()
}

/// HTTP 200 with a JSON body that never ends (no `Content-Length`, chunk after chunk).
pub fn endless() -> Response {
    let head = futures::stream::once(async {
        Ok::<_, std::io::Error>(Bytes::from_static(br#"{"error_code":"0","data":["#))
    });
    let chunk = Bytes::from(format!("\"{}\",", "x".repeat(64 * 1024 - 4)));
    let rest = futures::stream::repeat_with(move || Ok(chunk.clone()));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(futures::StreamExt::chain(head, rest)))
        .unwrap()
}

/// The worked example's body `name` (`donvi.json`, `tthc.json`, `hoso.json`).
pub fn example(name: &str) -> Bytes {
    Bytes::from(std::fs::read(super::example_dir().join(name)).unwrap())
}

//! Nothing lost: the pull survives each misbehaviour of `source-api.md` with every record the
//! source holds accounted for, including records updated while the client pages.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::hostile;
use common::*;
use motcua::demo::{self, Chaos, DemoSource};
use motcua::raw::RawLog;
use motcua::source::{Source, SourceConfig, SourceError, Window};
use motcua::store::Store;
use motcua::wire::text;
use serde_json::Value;

/// A small demo province: about 3,300 records.
const SCALE: f64 = 0.02;

async fn source_with(chaos: Chaos) -> DemoSource {
    demo_source(7, SCALE, chaos).await
}

fn config(url: &str) -> SourceConfig {
    let mut c = SourceConfig::new(url::Url::parse(url).unwrap());
    c.page_size = 100;
    c.backoff_base = Duration::from_millis(10);
    c.backoff_max = Duration::from_millis(100);
    c
}

/// A served record's identity: its trimmed key and `NgayCapNhat` as served.
fn identity(v: &Value) -> (String, String) {
    (
        text(v.get("MaHoSo")).unwrap_or_default(),
        v.get("NgayCapNhat")
            .map(|u| u.to_string())
            .unwrap_or_default(),
    )
}

struct Pulled {
    records: Vec<Value>,
    source: Source,
    elapsed: Duration,
}

async fn pull(cfg: SourceConfig, token: &str) -> (Result<(), SourceError>, Pulled) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_str().unwrap(), "test").unwrap();
    let raw = RawLog::new(store, "test");
    let mut source = Source::new(cfg, token).unwrap();
    let mut records = vec![];
    let started = Instant::now();
    let r = source
        .pull_cases(
            &raw,
            Window {
                from: None,
                to: None,
            },
            |page| records.extend(page.records()),
        )
        .await;
    raw.settle().await.unwrap();
    (
        r,
        Pulled {
            records,
            source,
            elapsed: started.elapsed(),
        },
    )
}

/// Every record the source holds now was pulled (same key, same `NgayCapNhat`), except one
/// updated after the pull's cursor, during its last request: the next run starts from that
/// cursor and takes it, and its earlier version was pulled.
fn assert_nothing_lost(src: &DemoSource, p: &Pulled) {
    let got: BTreeSet<(String, String)> = p.records.iter().map(identity).collect();
    let got_keys: BTreeSet<String> = got.iter().map(|(k, _)| k.clone()).collect();
    let cursor = p.source.stats.cursor_after_micros.expect("a cursor");
    let held = src.records();
    assert!(
        held.len() > 300,
        "the test province holds {} records",
        held.len()
    );
    let missing: Vec<(String, String)> = held
        .iter()
        .filter(|v| {
            let later = motcua::wire::instant(v.get("NgayCapNhat"))
                .ok()
                .flatten()
                .is_some_and(|t| t > cursor);
            let pulled_earlier_version = later && got_keys.contains(&identity(v).0);
            !got.contains(&identity(v)) && !pulled_earlier_version
        })
        .map(identity)
        .collect();
    assert!(
        missing.is_empty(),
        "{} records never pulled, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
}

/// The misbehaviour happened: the pull needed at least `n` retries.
fn assert_retried(p: &Pulled, n: u64) {
    assert!(
        p.source.stats.retries >= n,
        "retries {}",
        p.source.stats.retries
    );
}

async fn survives(chaos: Chaos) -> Pulled {
    let src = source_with(chaos).await;
    let (r, p) = pull(config(&src.url()), TOKEN).await;
    r.unwrap();
    assert_nothing_lost(&src, &p);
    src.stop();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_waits_for_retry_after() {
    let p = survives(Chaos {
        rate_limit_every: 5,
        retry_after_secs: 1,
        ..Chaos::off()
    })
    .await;
    let waits = p.source.stats.retries;
    assert!(waits >= 5, "429s were answered: {waits}");
    // Our own backoff is at most 100 ms here: only Retry-After explains a second per 429.
    assert!(
        p.elapsed >= Duration::from_secs(waits),
        "{waits} × Retry-After 1 s, took {:?}",
        p.elapsed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried() {
    let p = survives(Chaos {
        unavailable_every: 4,
        bad_gateway_every: 7,
        ..Chaos::off()
    })
    .await;
    assert_retried(&p, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_retried() {
    let p = survives(Chaos {
        drop_every: 4,
        ..Chaos::off()
    })
    .await;
    assert_retried(&p, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_code_1_busy_is_retried() {
    let p = survives(Chaos {
        busy_every: 3,
        ..Chaos::off()
    })
    .await;
    assert_retried(&p, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_pages_time_out_and_are_retried() {
    let src = source_with(Chaos {
        slow_every: 6,
        slow_ms: 1500,
        ..Chaos::off()
    })
    .await;
    let mut cfg = config(&src.url());
    cfg.timeout = Duration::from_millis(700);
    let (r, p) = pull(cfg, TOKEN).await;
    r.unwrap();
    assert_nothing_lost(&src, &p);
    assert!(
        p.source.stats.retries >= 4,
        "timeouts retried: {}",
        p.source.stats.retries
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_updated_while_paging_are_not_skipped() {
    let src = source_with(Chaos {
        update_every: 2,
        ..Chaos::off()
    })
    .await;
    let (r, p) = pull(config(&src.url()), TOKEN).await;
    r.unwrap();
    assert!(
        src.updates() >= 10,
        "records were updated during the pull: {}",
        src.updates()
    );
    assert_nothing_lost(&src, &p);
    src.stop();
}

/// The trap is real: a client that simply asks for page n+1 loses records on the same source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_number_paging_would_lose_records() {
    let src = source_with(Chaos {
        update_every: 2,
        ..Chaos::off()
    })
    .await;
    motcua::tls::install();
    let http = reqwest::Client::new();
    let mut seen = BTreeSet::new();
    for page in 1.. {
        let body: Value = http
            .get(format!("{}v1/hoso?page={page}&page_size=100", src.url()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let data = body["data"].as_array().unwrap();
        seen.extend(
            data.iter()
                .map(|v| text(v.get("MaHoSo")).unwrap_or_default()),
        );
        if data.len() < 100 {
            break;
        }
    }
    let held: BTreeSet<String> = src
        .records()
        .iter()
        .map(|v| text(v.get("MaHoSo")).unwrap_or_default())
        .collect();
    assert!(
        seen.len() < held.len(),
        "page-number paging saw {} of {} cases",
        seen.len(),
        held.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_second_pages_are_read_as_a_window() {
    // 350 records all updated in one second, with live updates: more than three pages of one second.
    let mut data = demo::generate(3, 0.005);
    for v in data.cases.iter_mut().take(350) {
        v["NgayCapNhat"] = Value::String("20240801120000".into());
    }
    let src = serve(
        data,
        Chaos {
            update_every: 3,
            ..Chaos::off()
        },
    )
    .await;
    let (r, p) = pull(config(&src.url()), TOKEN).await;
    r.unwrap();
    assert!(p.source.stats.same_second_windows >= 1);
    assert_nothing_lost(&src, &p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_pull_brings_every_record_and_no_other() {
    let src = source_with(Chaos::off()).await;
    let (r, p) = pull(config(&src.url()), TOKEN).await;
    r.unwrap();
    let held = src.records();
    let distinct: BTreeSet<(String, String)> = p.records.iter().map(identity).collect();
    let served: BTreeSet<(String, String)> = held.iter().map(identity).collect();
    assert_eq!(
        distinct, served,
        "a quiet source: every record, nothing else"
    );
    assert!(
        p.records.len() >= held.len(),
        "the cursor re-reads the last second of each page"
    );
    let keys: BTreeSet<String> = held.iter().filter_map(|v| text(v.get("MaHoSo"))).collect();
    assert!(
        keys.len() < held.len(),
        "the demo serves duplicates and older versions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_fails_at_once() {
    let src = source_with(Chaos::off()).await;
    let (r, p) = pull(config(&src.url()), "not-the-token").await;
    let e = r.unwrap_err();
    assert!(
        matches!(e, SourceError::Unauthorized { status: 401, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("refused the token"), "{e}");
    assert!(
        !e.to_string().contains("not-the-token"),
        "the token is never printed: {e}"
    );
    assert_eq!(p.source.stats.requests, 1, "no retry for 401");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_fails_at_once() {
    let src = source_with(Chaos::off()).await;
    let dir = tempfile::tempdir().unwrap();
    let raw = RawLog::new(Store::open(dir.path().to_str().unwrap(), "t").unwrap(), "t");
    let mut source = Source::new(config(&src.url()), TOKEN).unwrap();
    let e = source
        .fetch(
            &raw,
            motcua::wire::Endpoint::Cases,
            &[("page_size", "5000".into())],
        )
        .await
        .err()
        .unwrap();
    assert!(matches!(e, SourceError::BadRequest { .. }), "{e}");
    assert!(e.to_string().contains("page_size must be 1 to 1000"), "{e}");
    assert_eq!(source.stats.requests, 1, "no retry for 400");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_is_down_fails_after_bounded_retries() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = config(&format!("http://127.0.0.1:{port}/"));
    cfg.max_attempts = 4;
    let (r, p) = pull(cfg, TOKEN).await;
    let e = r.unwrap_err();
    assert!(
        matches!(e, SourceError::Exhausted { attempts: 4, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("is up and reachable"), "{e}");
    assert_eq!(p.source.stats.requests, 4);
    assert!(
        p.elapsed < Duration::from_secs(5),
        "bounded: {:?}",
        p.elapsed
    );
}

/// Fetches `/v1/hoso` once from `src` with a body limit of 1 MiB.
async fn fetch_once(url: &str) -> (Result<motcua::source::Response, SourceError>, Source) {
    let dir = tempfile::tempdir().unwrap();
    let raw = RawLog::new(Store::open(dir.path().to_str().unwrap(), "t").unwrap(), "t");
    let mut cfg = config(url);
    cfg.max_body_bytes = 1 << 20;
    let mut source = Source::new(cfg, TOKEN).unwrap();
    let r = source
        .fetch(&raw, motcua::wire::Endpoint::Cases, &[("page", "7".into())])
        .await;
    raw.settle().await.unwrap();
    (r, source)
}

/// Bodies that are JSON but not the envelope fail at once, naming the request: a retry would
/// get the same, and a `data` that is not an array must never read as "no records".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_breaks_the_envelope_fails_at_once_naming_the_request() {
    for (body, says) in [
        (
            r#"{"error_code":"0","message":"","data":{"MaHoSo":"A"}}"#,
            "its data is an object, not an array",
        ),
        (
            r#"{"error_code":"0","message":"","data":"none"}"#,
            "its data is a string, not an array",
        ),
        (
            r#"{"message":"","total":3,"data":[{"MaHoSo":"A"}]}"#,
            "the envelope has no error_code",
        ),
        (r#"[{"MaHoSo":"A"}]"#, "not an object"),
    ] {
        let src = hostile::serve(move |_, _, _| hostile::json(body)).await;
        let (r, source) = fetch_once(&src.url).await;
        let e = r.err().unwrap_or_else(|| panic!("{body} was taken"));
        assert!(matches!(e, SourceError::Contract { .. }), "{body}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains(says) && msg.contains("/v1/hoso?page=7"),
            "{msg}"
        );
        assert_eq!(source.stats.requests, 1, "not retried: {body}");
        assert_eq!(src.requests(), 1);
    }
}

/// A body over the limit fails at once, whether it says its length or streams without end
/// (which a client that buffered the body first would never finish reading).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_fails_without_being_read_whole() {
    let big = format!(r#"{{"error_code":"0","data":["{}"]}}"#, "y".repeat(3 << 20));
    let src = hostile::serve(move |_, _, _| hostile::json(big.clone())).await;
    let (r, source) = fetch_once(&src.url).await;
    let e = r.err().unwrap();
    assert!(
        matches!(e, SourceError::TooLarge { limit: 1048576, .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains("/v1/hoso?page=7") && e.to_string().contains("max_body_mib"),
        "{e}"
    );
    assert_eq!(source.stats.requests, 1);

    let src = hostile::serve(|_, _, _| hostile::endless()).await;
    let started = Instant::now();
    let (r, source) = fetch_once(&src.url).await;
    assert!(matches!(r, Err(SourceError::TooLarge { .. })));
    assert_eq!(source.stats.requests, 1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped at the limit"
    );
}

/// A truncated body (the dropped connections above) and an HTML error page served with HTTP
/// 200 are not the contract either, but a retry cures them: they are retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_html_page_served_with_200_is_retried() {
    let src = hostile::serve(|_, _, n| {
        if n < 2 {
            hostile::html_page()
        } else {
            hostile::json(r#"{"error_code":"0","message":"","total":1,"data":[{"MaHoSo":"A"}]}"#)
        }
    })
    .await;
    let (r, source) = fetch_once(&src.url).await;
    let r = r.unwrap();
    assert_eq!(r.records().len(), 1);
    assert_eq!(source.stats.retries, 2);
}

/// Bodies judged by a thread of their own with `judge_page`, as the pull's normalising thread
/// judges them (read once: verdict, stamps, records): under busy answers, dropped connections, server errors and
/// records updated while paging, every record is accounted for and the thread kept exactly the
/// pages the pull counted. With the thread gone, the pull fails saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_judged_on_a_reading_thread_lose_nothing() {
    use motcua::source::{judge_page, Judging};
    use motcua::wire::{records_of, BodyVerdict};
    let chaos = Chaos {
        busy_every: 5,
        drop_every: 7,
        bad_gateway_every: 11,
        update_every: 3,
        ..Chaos::off()
    };
    let src = source_with(chaos).await;
    let dir = tempfile::tempdir().unwrap();
    let raw = RawLog::new(Store::open(dir.path().to_str().unwrap(), "t").unwrap(), "t");
    let mut source = Source::new(config(&src.url()), TOKEN).unwrap();
    let (inbox, pages) = std::sync::mpsc::sync_channel::<Judging>(4);
    let inbox = std::sync::Arc::new(inbox);
    let reader = std::thread::spawn(move || {
        let (mut kept, mut judged) = (vec![], 0);
        for page in pages {
            judged += 1;
            let (verdict, stamps, records) = judge_page(&page.body, page.bound);
            let usable = matches!(verdict, BodyVerdict::Usable { .. });
            page.reply.send((verdict, stamps)).unwrap();
            if usable {
                // What the thread read equals what the body holds.
                let trees = records_of(&page.body);
                if let Some(r) = &records {
                    assert_eq!(r.0.len(), trees.len());
                }
                kept.push(trees);
            }
        }
        (kept, judged)
    });
    source.judge_cases_by(std::sync::Arc::downgrade(&inbox));
    let mut counted = 0usize;
    source
        .pull_cases(&raw, Window::ALL, |_| counted += 1)
        .await
        .unwrap();
    raw.settle().await.unwrap();
    drop(inbox);
    let (kept, judged) = reader.join().unwrap();
    assert_eq!(kept.len(), counted, "the pages kept are the pages counted");
    assert!(judged > counted, "busy answers were judged and retried");
    assert!(source.stats.retries > 0);
    let p = Pulled {
        records: kept.into_iter().flatten().collect(),
        source,
        elapsed: Duration::ZERO,
    };
    assert_nothing_lost(&src, &p);

    // With the reader gone, a pull fails saying so (and does not hang).
    let mut orphan = Source::new(config(&src.url()), TOKEN).unwrap();
    let (gone, _) = std::sync::mpsc::sync_channel::<Judging>(1);
    let gone = std::sync::Arc::new(gone);
    orphan.judge_cases_by(std::sync::Arc::downgrade(&gone));
    drop(gone);
    let e = orphan
        .pull_cases(&raw, Window::ALL, |_| ())
        .await
        .unwrap_err();
    assert!(matches!(e, SourceError::ReaderStopped { .. }), "{e}");
    src.stop();
}

//! The object store for real: large objects go up in parts, and the lock's conditional create
//! holds, against `moto_server` (installed by `make test`) on 127.0.0.1.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use motcua::store::Store;

struct Moto(Child, u16);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server is installed by `make test` (pip install 'moto[server]')");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "moto_server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto(child, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_go_up_in_parts_and_the_lock_is_a_conditional_create() {
    let m = moto();
    let endpoint = format!("http://127.0.0.1:{}", m.1);
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
    ] {
        std::env::set_var(k, v);
    }
    motcua::tls::install();
    let http = reqwest::Client::new();
    let r = http.put(format!("{endpoint}/motcua")).send().await.unwrap();
    assert!(r.status().is_success(), "bucket created: {}", r.status());

    let store = Store::open("s3://motcua/prod", "test-run").unwrap();
    let big: Vec<u8> = (0..40 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    store
        .publish("kpi/big/part-0.parquet", Bytes::from(big.clone()))
        .await
        .unwrap();
    let head = http
        .head(format!("{endpoint}/motcua/prod/kpi/big/part-0.parquet"))
        .send()
        .await
        .unwrap();
    let etag = head.headers()["etag"].to_str().unwrap().to_string();
    assert!(
        etag.trim_matches('"').ends_with("-3"),
        "a 40 MiB object went up in 3 parts: ETag {etag}"
    );
    assert_eq!(
        store
            .get("kpi/big/part-0.parquet")
            .await
            .unwrap()
            .unwrap()
            .as_ref(),
        big.as_slice()
    );

    // The lock: a conditional create, exactly one winner.
    assert!(store
        .create("_state/lock", Bytes::from_static(b"a"))
        .await
        .unwrap());
    assert!(!store
        .create("_state/lock", Bytes::from_static(b"b"))
        .await
        .unwrap());
    assert_eq!(
        store.get("_state/lock").await.unwrap().unwrap().as_ref(),
        b"a"
    );
    // A damaged lock is an error naming the file, never taken over blindly.
    use motcua::error::Error;
    use motcua::state::Lock;
    let e = Lock::acquire(&store, "run-a", "run", Duration::from_secs(60), false)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(e, Error::StateDamaged(_)) && e.to_string().contains("_state/lock"),
        "{e}"
    );
    store.delete("_state/lock").await.unwrap();
    // Then a second run is refused until release.
    let a = Lock::acquire(&store, "run-a", "run", Duration::from_secs(60), false)
        .await
        .unwrap();
    let b = Lock::acquire(&store, "run-b", "run", Duration::from_secs(60), false).await;
    let busy = b.err().unwrap();
    assert!(
        matches!(&busy, Error::LockBusy(b) if b.run_id == "run-a"),
        "{busy}"
    );
    a.release().await.unwrap();
    let b = Lock::acquire(&store, "run-b", "run", Duration::from_secs(60), false)
        .await
        .unwrap();
    b.release().await.unwrap();
    assert!(store.get("_state/lock").await.unwrap().is_none());

    // Conditional updates (If-Match on the ETag): a version read before a change is refused.
    let (_, v1) = {
        store
            .publish("_state/x", Bytes::from_static(b"1"))
            .await
            .unwrap();
        store.get_versioned("_state/x").await.unwrap().unwrap()
    };
    let v2 = store
        .update_if("_state/x", &v1, Bytes::from_static(b"2"))
        .await
        .unwrap()
        .expect("the version read is current");
    assert!(store
        .update_if("_state/x", &v1, Bytes::from_static(b"3"))
        .await
        .unwrap()
        .is_none());
    assert!(store
        .update_if("_state/x", &v2, Bytes::from_static(b"4"))
        .await
        .unwrap()
        .is_some());
    assert_eq!(store.get("_state/x").await.unwrap().unwrap().as_ref(), b"4");

    // Many takers of one stale lock: exactly one wins, round after round; and a held lock's
    // heartbeat renews it by conditional update.
    common::lock_race(&store, 10).await;
    let held = Lock::acquire(&store, "run-c", "run", Duration::from_millis(900), false)
        .await
        .unwrap();
    let first = store.get("_state/lock").await.unwrap().unwrap();
    // The lock's times are whole seconds: a renewal shows once one comes a second or more after
    // the lock was taken (heartbeats every 300 ms; 1.2 s once left the bytes unchanged).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    held.ensure_held().await.unwrap();
    assert_ne!(
        store.get("_state/lock").await.unwrap().unwrap(),
        first,
        "renewed"
    );
    held.release().await.unwrap();
}

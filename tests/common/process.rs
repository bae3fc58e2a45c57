//! Running the `motcua` binary and its demo source as processes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{PII_KEY, TOKEN};

pub const BIN: &str = env!("CARGO_BIN_EXE_motcua");

/// A `motcua demo-source` process, stopped with SIGTERM on drop (SIGKILL if it lingers).
pub struct DemoProcess {
    pub child: Child,
    pub url: String,
}

impl DemoProcess {
    /// The worked example of `../shared/reference/example/`, served quietly.
    pub fn example() -> DemoProcess {
        Self::start(&[
            "--chaos",
            "off",
            "--dataset",
            super::example_dir().to_str().unwrap(),
        ])
    }

    pub fn start(args: &[&str]) -> DemoProcess {
        Self::start_in(args, &std::env::temp_dir())
    }

    /// A demo source whose temp dir (where it draws its province) is `tmp`.
    pub fn start_in(args: &[&str], tmp: &Path) -> DemoProcess {
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("url");
        let child = Command::new(BIN)
            .args([
                "demo-source",
                "--port",
                "0",
                "--ready-file",
                ready.to_str().unwrap(),
            ])
            .args(args)
            .env("MOTCUA_SOURCE_TOKEN", TOKEN)
            .env("TMPDIR", tmp)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while !ready.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "demo source did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let url = std::fs::read_to_string(&ready).unwrap();
        DemoProcess { child, url }
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pipeline file with quick retries and `extra` appended (top-level keys first, then `[source]`).
pub fn pipeline_file(dir: &Path, top: &str, source: &str) -> PathBuf {
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, format!("name = \"test\"\n{top}\n[source]\nbackoff_base_ms = 20\nbackoff_max_ms = 200\n{source}")).unwrap();
    p
}

pub fn command(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("MOTCUA_SOURCE_TOKEN", TOKEN)
        .env("MOTCUA_PII_KEY", PII_KEY)
        .env_remove("MOTCUA_SOURCE_TOKEN_FILE")
        .env_remove("MOTCUA_LOG");
    c
}

pub fn motcua(args: &[&str]) -> Output {
    command(args).output().unwrap()
}

/// `motcua <verb> --source-url URL --output OUT --pipeline P <args…>`
pub fn verb(verb: &str, url: &str, out: &Path, pipeline: &Path, args: &[&str]) -> Command {
    let mut all = vec![
        verb,
        "--source-url",
        url,
        "--output",
        out.to_str().unwrap(),
        "--pipeline",
        pipeline.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    command(&all)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Waits until `f` holds, or panics after `secs`.
pub fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn kill(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

//! Crash safety: a run killed with SIGKILL while pulling or while publishing leaves every file
//! where readers look whole (old or new), nothing stray, and the next run finishes correctly;
//! SIGTERM stops a run cleanly, releasing its lock.

mod common;

use std::path::Path;
use std::process::{Child, Stdio};

use common::process::*;
use common::*;

/// Every file under kpi/, cases/ and quality/ is a readable `part-0.parquet`.
fn assert_readers_see_only_whole_files(out: &Path) {
    for layer in ["kpi", "cases", "quality"] {
        for f in files_under(&out.join(layer)) {
            assert!(f.ends_with("/part-0.parquet"), "stray file {layer}/{f}");
            let df = read_parquet(&out.join(layer).join(&f));
            assert!(df.width() > 0, "{layer}/{f}");
        }
    }
}

fn q3_all(out: &Path) -> Vec<String> {
    let df = read_parquet(&out.join("kpi/cases_by_level/period=2024-Q3/part-0.parquet"));
    let i = (0..df.height())
        .find(|i| cell(&df, "level", *i) == "all")
        .unwrap();
    motcua::domain::rules::measure_names()
        .iter()
        .map(|m| cell(&df, m, i))
        .collect()
}

fn spawn(src: &DemoProcess, out: &Path, p: &Path, args: &[&str]) -> Child {
    verb(args[0], &src.url, out, p, &args[1..])
        .env("TMPDIR", scratch_dir(out))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The temp dir of the runs writing to `out` (beside it).
fn scratch_dir(out: &Path) -> std::path::PathBuf {
    let tmp = out.with_file_name("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    tmp
}

/// The spill folders in the temp dir of the runs writing to `out`.
fn spill_folders(out: &Path) -> Vec<String> {
    std::fs::read_dir(scratch_dir(out))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("motcua-spill-"))
        .collect()
}

fn count_files(dir: &Path) -> usize {
    files_under(dir).len()
}

#[test]
fn sigkill_while_pulling_and_while_publishing_leaves_readers_whole_files() {
    let src = DemoProcess::start(&["--chaos", "off"]);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let p = pipeline_file(work.path(), "", "");
    let ok = verb("run", &src.url, &out, &p, &["--period", "2024-Q3"])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", stderr(&ok));
    let figures = q3_all(&out);

    // Killed while pulling everything again.
    let raw_before = count_files(&out.join("raw"));
    let mut victim = spawn(
        &src,
        &out,
        &p,
        &["run", "--period", "2024-Q3", "--full-refresh"],
    );
    wait_until(120, "the second pull to land pages", || {
        count_files(&out.join("raw")) >= raw_before + 20
    });
    kill(&victim, "-KILL");
    victim.wait().unwrap();
    assert!(
        out.join("_state/lock").exists(),
        "a killed run cannot release its lock"
    );
    assert_readers_see_only_whole_files(&out);
    assert_eq!(q3_all(&out), figures, "the published quarter is untouched");
    let left = spill_folders(&out);
    assert_eq!(
        left.len(),
        1,
        "a run killed while pulling cannot remove its scratch folder"
    );

    // Killed while publishing a long backfill.
    let kpi_before = count_files(&out.join("kpi"));
    let mut victim = spawn(
        &src,
        &out,
        &p,
        &["backfill", "--from", "2022-01", "--to", "2026-12"],
    );
    wait_until(180, "the backfill to publish", || {
        count_files(&out.join("kpi")) > kpi_before + 3
    });
    kill(&victim, "-KILL");
    victim.wait().unwrap();
    let published_then = count_files(&out.join("kpi"));
    assert!(
        published_then < kpi_before + 180,
        "killed before the end ({published_then} files)"
    );
    assert_readers_see_only_whole_files(&out);
    assert!(
        !spill_folders(&out).contains(&left[0]),
        "the backfill's pull swept the folder the killed pull left"
    );

    // The next run takes over the dead run's lock, cleans its staging and finishes correctly.
    let next = verb("run", &src.url, &out, &p, &["--period", "2024-Q3"])
        .env("TMPDIR", scratch_dir(&out))
        .output()
        .unwrap();
    assert!(next.status.success(), "{}", stderr(&next));
    assert!(
        stderr(&next).contains("taking over a stale lock"),
        "{}",
        stderr(&next)
    );
    assert_readers_see_only_whole_files(&out);
    assert_eq!(q3_all(&out), figures);
    assert!(
        !out.join("_staging").exists(),
        "staging of the killed runs removed"
    );
    assert!(!out.join("_state/lock").exists());
    assert_eq!(spill_folders(&out), Vec::<String>::new());
}

#[test]
fn sigterm_stops_a_run_cleanly_and_releases_the_lock() {
    let src = DemoProcess::start(&["--chaos", "on"]);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let p = pipeline_file(work.path(), "", "");
    let victim = verb("run", &src.url, &out, &p, &["--period", "2024-Q3"])
        .env("TMPDIR", scratch_dir(&out))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(120, "the pull to start", || {
        count_files(&out.join("raw")) >= 10
    });
    kill(&victim, "-TERM");
    let o = victim.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
    assert!(stderr(&o).contains("stopped by SIGTERM"), "{}", stderr(&o));
    assert!(!out.join("_state/lock").exists(), "the lock is released");
    assert!(
        !out.join("_state/cursor.json").exists(),
        "the cursor did not move"
    );
    let runs = files_under(&out.join("_runs"));
    assert_eq!(runs.len(), 1);
    let record = std::fs::read_to_string(out.join("_runs").join(&runs[0])).unwrap();
    assert!(
        record.contains("\"outcome\": \"failed\"") && record.contains("SIGTERM"),
        "{record}"
    );
    assert!(!out.join("_staging").exists());
    assert_eq!(
        spill_folders(&out),
        Vec::<String>::new(),
        "the scratch folder removed"
    );
}

#[test]
fn a_demo_source_stopped_by_sigterm_or_sigint_leaves_nothing_in_the_temp_dir() {
    for signal in ["-TERM", "-INT"] {
        let tmp = tempfile::tempdir().unwrap();
        let mut src = DemoProcess::start_in(&["--chaos", "off", "--scale", "0.05"], tmp.path());
        let drawn = std::fs::read_dir(tmp.path()).unwrap().count();
        assert_eq!(
            drawn, 1,
            "the province is drawn to one folder of the temp dir"
        );
        kill(&src.child, signal);
        wait_until(30, "the demo source to stop", || {
            matches!(src.child.try_wait(), Ok(Some(_)))
        });
        let status = src.child.wait().unwrap();
        assert!(status.success(), "{signal}: {status:?}");
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert!(left.is_empty(), "{signal}: {left:?}");
    }
}

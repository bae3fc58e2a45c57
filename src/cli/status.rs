//! `motcua status`: the last runs and their outcome, the cursor, the lock holder, and which
//! periods are published and when. Damaged state files are shown as such, not as a failure.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::config::PipelineFile;
use crate::error::Result;
use crate::pipeline::periods::published;
use crate::pipeline::record::{self, RunRecord};
use crate::state;
use crate::store::{Province, Store};

#[derive(clap::Args)]
pub struct Args {
    /// The deployment's pipeline file (for its output root).
    #[arg(long, value_name = "FILE")]
    pub pipeline: Option<PathBuf>,
    /// Output root: a folder, file://… or s3://bucket/prefix (default ./data).
    #[arg(long, value_name = "URL")]
    pub output: Option<String>,
    /// In a root shared by many provinces, the province to show (default: the pipeline
    /// file's `province`).
    #[arg(long, value_name = "CODE")]
    pub province: Option<String>,
    /// How many runs to list.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
}

pub async fn run(a: Args) -> Result<()> {
    let file = match &a.pipeline {
        Some(p) => PipelineFile::load(p)?,
        None => PipelineFile::default(),
    };
    let output = a.output.or(file.output).unwrap_or_else(|| "./data".into());
    let province = a.province.or(file.province).as_deref().map(Province::new);
    let store = Store::open(&output, "status")?.for_province(province.transpose()?);
    print!("{}", report(&store, a.runs).await?);
    Ok(())
}

/// The status report of the output root `store`, showing the last `runs` runs.
pub async fn report(store: &Store, runs: usize) -> Result<String> {
    let mut out = format!("output  {}\n", store.url);
    if let Some(p) = store.province() {
        out.push_str(&format!(
            "province {} (province={} folders)\n",
            p.code(),
            p.code()
        ));
    }
    match state::describe(state::read_cursor(store)).await? {
        Ok(Some(c)) => out.push_str(&format!(
            "cursor  {} (NgayCapNhat, Vietnam time; set by run {})\n",
            c.cursor, c.run_id
        )),
        Ok(None) => out.push_str("cursor  none: the next run pulls everything\n"),
        Err(damaged) => out.push_str(&format!("cursor  DAMAGED: {damaged}\n")),
    }
    match state::describe(state::read_lock(store)).await? {
        Ok(Some(l)) => out.push_str(&format!("lock    held by {l}\n")),
        Ok(None) => out.push_str("lock    free\n"),
        Err(damaged) => out.push_str(&format!("lock    DAMAGED: {damaged}\n")),
    }
    let (listed, last) = record::latest(store, runs).await?;
    let _ = writeln!(out, "\nlast runs ({} of {listed}):", last.len());
    let _ = writeln!(
        out,
        "  {:<26} {:<9} {:<9} {:>8} {:>9} {:>8}  periods",
        "run", "command", "outcome", "secs", "records", "rejected"
    );
    for r in &last {
        runs_line(&mut out, r);
    }
    let published = published(store).await?;
    let _ = writeln!(out, "\npublished periods ({}):", published.len());
    for (id, at) in published {
        let _ = writeln!(
            out,
            "  {:<10} written {}",
            id,
            at.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    Ok(out)
}

/// One run: id, command, outcome, time, records, rejects, periods (failed ones marked), and
/// its error.
fn runs_line(out: &mut String, r: &RunRecord) {
    let periods: Vec<String> = r
        .periods
        .iter()
        .map(|p| match p.published {
            true => p.id.clone(),
            false => format!("{}(failed)", p.id),
        })
        .collect();
    let _ = writeln!(
        out,
        "  {:<26} {:<9} {:<9} {:>8.1} {:>9} {:>8}  {}",
        r.run_id,
        r.command.as_str(),
        r.outcome.to_string(),
        r.duration_secs,
        r.counts.records_pulled,
        r.counts.records_rejected,
        periods.join(" ")
    );
    if let Some(e) = &r.error {
        let _ = writeln!(
            out,
            "      error: {}",
            e.chars().take(300).collect::<String>()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::period::Convention;
    use crate::pipeline::record::{CommandKind, Outcome};

    #[tokio::test]
    async fn status_lists_runs_newest_first_and_shows_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), "t").unwrap();
        let text = report(&store, 10).await.unwrap();
        assert!(
            text.contains("cursor  none")
                && text.contains("lock    free")
                && text.contains("last runs (0 of 0)"),
            "{text}"
        );
        for (id, outcome) in [
            ("20240101T000000000Z-aaaa", Outcome::Succeeded),
            ("20240102T000000000Z-bbbb", Outcome::Failed),
        ] {
            let mut r = RunRecord::start(id, "t", CommandKind::Run, "o", Convention::Decree09);
            r.outcome = outcome;
            r.error = (outcome == Outcome::Failed).then(|| "the source did not answer".into());
            r.write(&store).await.unwrap();
        }
        std::fs::create_dir_all(dir.path().join("_state")).unwrap();
        std::fs::write(dir.path().join("_state/cursor.json"), "{").unwrap();
        let text = report(&store, 1).await.unwrap();
        assert!(text.contains("last runs (1 of 2)"), "{text}");
        assert!(
            text.contains("20240102T000000000Z-bbbb   run       failed") && !text.contains("-aaaa"),
            "{text}"
        );
        assert!(text.contains("error: the source did not answer"), "{text}");
        assert!(
            text.contains("cursor  DAMAGED: _state/cursor.json cannot be used"),
            "{text}"
        );
    }
}

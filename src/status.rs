//! `motcua status`: the last runs and their outcome, the cursor, the lock holder, and which
//! periods are published and when.

use anyhow::Result;

use crate::run::{published_periods, RunRecord};
use crate::state;
use crate::store::Store;

/// The status report of the output root `store`, showing the last `runs` runs.
pub async fn report(store: &Store, runs: usize) -> Result<String> {
    let mut out = format!("output  {}\n", store.url);
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
    let mut records: Vec<RunRecord> = vec![];
    let listed = store.list("_runs").await?;
    for (path, _) in listed.iter().rev().take(runs) {
        if let Some(body) = store.get(path).await? {
            if let Ok(r) = serde_json::from_slice::<RunRecord>(&body) {
                records.push(r);
            }
        }
    }
    out.push_str(&format!(
        "\nlast runs ({} of {}):\n",
        records.len(),
        listed.len()
    ));
    out.push_str(&format!(
        "  {:<26} {:<9} {:<9} {:>8} {:>9} {:>8}  periods\n",
        "run", "command", "outcome", "secs", "records", "rejected"
    ));
    for r in &records {
        let periods: Vec<String> = r
            .periods
            .iter()
            .map(|p| {
                if p.published {
                    p.id.clone()
                } else {
                    format!("{}(failed)", p.id)
                }
            })
            .collect();
        out.push_str(&format!(
            "  {:<26} {:<9} {:<9} {:>8.1} {:>9} {:>8}  {}\n",
            r.run_id,
            r.command,
            r.outcome,
            r.duration_secs,
            r.counts.records_pulled,
            r.counts.records_rejected,
            periods.join(" ")
        ));
        if let Some(e) = &r.error {
            out.push_str(&format!(
                "      error: {}\n",
                e.chars().take(300).collect::<String>()
            ));
        }
    }
    let published = published_periods(store).await?;
    out.push_str(&format!("\npublished periods ({}):\n", published.len()));
    for (id, at) in published {
        out.push_str(&format!(
            "  {:<10} written {}\n",
            id,
            at.format("%Y-%m-%d %H:%M:%S UTC")
        ));
    }
    Ok(out)
}

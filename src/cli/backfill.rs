//! `motcua backfill`: pull like `run`, then publish every period of a range.

use crate::domain::period::{self, PeriodId};
use crate::error::{Error, Result};
use crate::pipeline::Command;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_name = "ID")]
    pub from: PeriodId,
    #[arg(long, value_name = "ID")]
    pub to: PeriodId,
    /// Publish only the periods the last backfill of this range failed or left missing.
    #[arg(long)]
    pub resume: bool,
    /// Pull everything again, ignoring the cursor.
    #[arg(long)]
    pub full_refresh: bool,
    #[command(flatten)]
    pub common: super::Common,
}

pub async fn run(a: Args) -> Result<()> {
    period::range(a.from, a.to).map_err(|e| Error::Usage(e.to_string()))?;
    let settings = a.common.settings(false)?;
    let work = Command::Backfill {
        from: a.from,
        to: a.to,
        resume: a.resume,
        full_refresh: a.full_refresh,
    };
    a.common.execute(&settings, work).await
}

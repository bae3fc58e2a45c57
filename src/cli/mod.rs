//! The `motcua` command line: the arguments (clap), the logs, and one file per subcommand,
//! each with a `run` that does it. See `README.md` for the commands, flags, environment and
//! exit codes.

pub mod backfill;
pub mod demo_source;
pub mod replay;
pub mod run;
pub mod sql;
pub mod status;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Overrides, Settings};
use crate::domain::period::Convention;
use crate::error::Result;
use crate::pipeline::{self, Command as Work, Options};
use crate::progress;

/// Turns a province's administrative-procedure cases into its quarterly figures.
#[derive(Parser)]
#[command(name = "motcua", version, about)]
pub struct Cli {
    /// Log lines as human-readable text (default) or JSON lines for cron and log shippers.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Pull what changed since the last run, update staging, publish each --period
    /// (default: the current quarter to date and the previous one).
    Run(run::Args),
    /// Pull like `run`, then publish every period from --from to --to (one kind).
    Backfill(backfill::Args),
    /// Rebuild staging and the KPIs from the raw layer alone, without the source.
    Replay(replay::Args),
    /// Show the last runs, the cursor, the lock holder and the published periods.
    Status(status::Args),
    /// Print the SQL (DuckDB, Spark, Trino) that computes a period's cases_by_agency and
    /// cases_by_level from the staging of every province of a shared root.
    Sql(sql::Args),
    /// Serve the demo province on 127.0.0.1 (token: MOTCUA_SOURCE_TOKEN, default "demo-token").
    DemoSource(demo_source::Args),
}

impl Cli {
    /// Does the command.
    pub async fn dispatch(self) -> Result<()> {
        match self.command {
            Command::Run(a) => run::run(a).await,
            Command::Backfill(a) => backfill::run(a).await,
            Command::Replay(a) => replay::run(a).await,
            Command::Status(a) => status::run(a).await,
            Command::Sql(a) => sql::run(a).await,
            Command::DemoSource(a) => demo_source::run(a).await,
        }
    }
}

/// The flags `run`, `backfill` and `replay` share.
#[derive(Args)]
pub struct Common {
    /// decree09 (default) or calendar.
    #[arg(long, value_enum)]
    pub period_convention: Option<Convention>,
    /// The deployment's pipeline file (TOML).
    #[arg(long, value_name = "FILE")]
    pub pipeline: Option<PathBuf>,
    /// Base URL of the case system, e.g. https://motcua.example.gov.vn/api/
    #[arg(long, value_name = "URL")]
    pub source_url: Option<String>,
    /// Output root: a folder, file://… or s3://bucket/prefix (default ./data).
    #[arg(long, value_name = "URL")]
    pub output: Option<String>,
    /// In a root shared by many provinces, this job's province code (e.g. 46): its tables,
    /// lock, cursor and run records go under `province=<code>` folders.
    #[arg(long, value_name = "CODE")]
    pub province: Option<String>,
    /// Restate the figures in the structure of this day (yyyy-MM-dd; default: today).
    #[arg(long, value_name = "DATE")]
    pub restate_to: Option<chrono::NaiveDate>,
    /// When another run holds the output's lock, wait for it instead of exiting.
    #[arg(long)]
    pub wait: bool,
    /// run, backfill: do not pull; publish the periods from staging as it stands (agencies
    /// and catalog from the last pull's raw responses). The source is not contacted and the
    /// cursor does not move: to republish after an upgrade, or while the source is down.
    #[arg(long)]
    pub from_staging: bool,
}

impl Common {
    /// The settings, with `offline` for commands that never contact the source.
    pub fn settings(&self, offline: bool) -> Result<Settings> {
        Settings::resolve(&Overrides {
            pipeline: self.pipeline.clone(),
            source_url: self.source_url.clone(),
            output: self.output.clone(),
            province: self.province.clone(),
            convention: self.period_convention,
            restate_to: self.restate_to,
            offline: self.from_staging || offline,
        })
    }

    /// Runs `work` with these flags and prints its figures.
    pub async fn execute(&self, settings: &Settings, work: Work) -> Result<()> {
        let options = Options {
            wait: self.wait,
            from_staging: self.from_staging,
        };
        let done = pipeline::execute(settings, &work, options).await?;
        for t in &done.tables {
            match crate::report::level_table(t) {
                Ok(table) => println!("{table}"),
                Err(e) => tracing::warn!(error = %e, "could not format the summary table"),
            }
        }
        println!(
            "run {} published {} period(s) to {}{}",
            done.record.run_id,
            done.tables.len(),
            settings.output,
            settings
                .province
                .as_ref()
                .map_or(String::new(), |p| format!(" (province={})", p.code()))
        );
        Ok(())
    }
}

/// Logs to stderr: text (a progress bar on a terminal) or JSON lines; `MOTCUA_LOG` filters.
pub fn init_logs(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MOTCUA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = std::io::stderr().is_terminal();
    match format {
        LogFormat::Json => {
            progress::enable(false);
            tracing_subscriber::fmt()
                .json()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
        }
        LogFormat::Text => {
            progress::enable(terminal);
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(progress::LogWriter)
                .with_target(false)
                .with_ansi(terminal)
                .init();
        }
    }
}

//! `motcua sql`: print the statements that compute a period's `cases_by_agency` and
//! `cases_by_level` from the staging of every province of a shared root (`src/sql`).

use crate::config::PipelineFile;
use crate::domain::period::{Convention, PeriodId};
use crate::error::{Error, Result};
use crate::sql::{script, Engine, SqlOptions};

#[derive(clap::Args)]
pub struct Args {
    /// The engine to write for.
    #[arg(long, value_enum)]
    pub engine: Engine,
    /// The period, e.g. 2024-Q3, 2024-H1, 2024-9M, 2024 or 2024-07.
    #[arg(long, value_name = "ID")]
    pub period: String,
    /// decree09 (default, or the pipeline file's) or calendar.
    #[arg(long, value_enum, alias = "convention")]
    pub period_convention: Option<Convention>,
    /// The shared root as the engine reaches it (default: the pipeline file's output, else
    /// ./data), e.g. s3://bucket/motcua for DuckDB, s3a://bucket/motcua for Spark.
    #[arg(long, value_name = "URL")]
    pub output: Option<String>,
    /// The deployment's pipeline file (for its output root and convention).
    #[arg(long, value_name = "FILE")]
    pub pipeline: Option<std::path::PathBuf>,
    /// Trino: the catalog and schema whose `cases` and `agencies` tables map the root.
    #[arg(long, value_name = "CATALOG.SCHEMA", default_value = "hive.motcua")]
    pub trino_schema: String,
}

pub async fn run(a: Args) -> Result<()> {
    let file = match &a.pipeline {
        Some(p) => PipelineFile::load(p)?,
        None => PipelineFile::default(),
    };
    let id: PeriodId = a
        .period
        .parse()
        .map_err(|e: crate::domain::period::BadPeriod| Error::Usage(e.to_string()))?;
    let convention = a
        .period_convention
        .or(file.period_convention)
        .unwrap_or_default();
    let schema_ok = !a.trino_schema.is_empty()
        && a.trino_schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if !schema_ok {
        return Err(Error::Usage(format!(
            "--trino-schema {:?}: give catalog.schema, letters, digits and '_' (e.g. hive.motcua)",
            a.trino_schema
        )));
    }
    let root = a.output.or(file.output).unwrap_or_else(|| "./data".into());
    if root.contains('\'') || root.contains('`') {
        return Err(Error::Usage(format!(
            "output {root:?}: a root with quotes cannot be written into SQL"
        )));
    }
    if let Some(msg) = not_shared(&root) {
        return Err(Error::Usage(msg));
    }
    print!(
        "{}",
        script(&SqlOptions {
            engine: a.engine,
            period: id.resolve(convention),
            root,
            trino_schema: a.trino_schema,
        })
    );
    Ok(())
}

/// A local root whose staging is one province's (`cases/case_month=…`), not a shared root's:
/// the statements read `cases/province=…/…` and would find nothing. Roots the engine reaches
/// elsewhere (`s3://`, `s3a://`) are not looked at.
fn not_shared(root: &str) -> Option<String> {
    let dir = std::path::Path::new(root.strip_prefix("file://").unwrap_or(root)).join("cases");
    if root.contains("://") && !root.starts_with("file://") {
        return None;
    }
    let names: Vec<String> = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let shared = names.iter().any(|n| n.starts_with("province="));
    (!shared && !names.is_empty()).then(|| {
        format!(
            "{} holds one province's staging (no province= folders): `motcua sql` reads a root shared by provinces, written by jobs with --province (README, \"Past one machine\")",
            dir.display()
        )
    })
}

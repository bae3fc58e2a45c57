//! motcua: a province's administrative-procedure cases turned into its quarterly figures.
//!
//! The stages, in the order data flows (see `README.md` and `../shared/spec/`):
//!
//! | stage | module | does |
//! |---|---|---|
//! | source | [`source`] | pulls agencies, the procedure catalog and case files over HTTP |
//! | raw | [`raw`] | lands every response body, compressed, before it is parsed |
//! | normalise | [`normalise`] | types, cleans, rejects, deduplicates and upserts staging `cases/` |
//! | KPI | [`kpi`] | computes the measures and rates of a period with polars |
//! | publish | [`publish`] | writes Parquet partitions atomically and the run record |
//!
//! [`rules`] holds the domain rules of `kpi.md` in one place, [`period`] its periods;
//! [`run`] orchestrates a run; [`state`] holds its cursor and lock; [`status`] reports on an
//! output root; [`store`] is the output root; [`progress`] draws bars; [`demo`] is the demo
//! source.

pub mod config;
pub mod demo;
pub mod kpi;
pub mod normalise;
pub mod period;
pub mod progress;
pub mod publish;
pub mod raw;
pub mod report;
pub mod rules;
pub mod run;
pub mod run_id;
pub mod source;
pub mod state;
pub mod status;
pub mod store;

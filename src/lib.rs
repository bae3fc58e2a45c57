//! motcua: a province's administrative-procedure cases turned into its quarterly figures.
//!
//! The stages, in the order data flows (see `README.md` and `../shared/spec/`):
//!
//! | stage | module | does |
//! |---|---|---|
//! | source | [`source`] | pulls agencies, the procedure catalog and case files over HTTP |
//! | raw | [`raw`] | lands every response body, compressed, before it is parsed; reads it back |
//! | normalise | [`normalise`] | types, cleans, rejects and spills the records by partition |
//! | stage | [`stage`] | upserts the staging partitions `cases/` (by the date in the case id), the latest version per case |
//! | KPI | [`kpi`] | counts every measure of every period with polars, checks the identities |
//! | publish | [`publish`] | writes the KPI partitions, the rejects and the report atomically |
//!
//! [`domain`] holds the rules of `kpi.md` (periods, reject rules, measures, rates, identities,
//! levels), which [`sql`] renders as SQL for other engines; [`wire`] the API's wire format;
//! [`pipeline`] orchestrates a run and writes its record; [`state`] holds the cursor and the
//! lock; [`store`] is the output root (one province's, or its part of a shared root);
//! [`memory`] says when freed memory goes back to the system; [`parquet`] encodes and decodes;
//! [`report`] draws the figures for people; [`cli`] is the command line; [`error`] every way
//! it can stop; [`demo`] the demo source.

pub mod cli;
pub mod config;
pub mod demo;
pub mod domain;
pub mod error;
pub mod kpi;
pub mod memory;
pub mod normalise;
pub mod parquet;
pub mod pipeline;
pub mod progress;
pub mod publish;
pub mod raw;
pub mod report;
pub mod run_id;
pub mod source;
pub mod sql;
pub mod stage;
pub mod state;
pub mod store;
pub mod tls;
pub mod wire;

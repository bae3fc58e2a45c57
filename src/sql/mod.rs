//! `motcua sql`: the statements that compute `cases_by_agency` and `cases_by_level` of a period
//! from the staging tables of every province of a shared root (`schemas/root-layout.md`), for
//! DuckDB, Spark SQL and Trino — for a national analyst, at any scale, where motcua's KPI files
//! do not exist yet.
//!
//! Nothing here restates a rule: the terms and measures are [`rules::terms`] and
//! [`rules::measures`] rendered through a SQL [`Logic`], the rates and received_total are
//! [`rules::RATES`] and [`rules::RECEIVED_TOTAL`], the attribution is `agencies.md`'s (the
//! agency holding the case on the day it counts on), and the levels come from `dim/agencies`.
//! Only the engines' words differ ([`Engine`]): how a table is read, and list functions.

use chrono::NaiveDate;

use crate::domain::period::Period;
use crate::domain::rules::{self, Flag, Logic, Terms, Val, MEASURES};

/// The SQL engines `motcua sql` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    Duckdb,
    Spark,
    Trino,
}

/// What to write the statements for.
#[derive(Debug, Clone)]
pub struct SqlOptions {
    pub engine: Engine,
    pub period: Period,
    /// The shared root as the engine reaches it (a folder, `s3://…`, `s3a://…`).
    pub root: String,
    /// Trino: the schema whose `cases` and `agencies` tables map the root (README).
    pub trino_schema: String,
}

/// The staging column a value is, or the literal it is.
fn value(v: Val, period: &Period) -> String {
    let date = |d: NaiveDate| format!("DATE '{d}'");
    match v {
        Val::Status => "status".into(),
        Val::Channel => "channel".into(),
        Val::Sub => "submitted_date".into(),
        Val::Acc => "accepted_date".into(),
        Val::Ref => "refused_date".into(),
        Val::End => "end_date".into(),
        Val::Due => "due_date".into(),
        Val::SupplementRequests => "supplement_requests".into(),
        Val::F => date(period.start),
        Val::L => date(period.end),
        Val::Int(n) => n.to_string(),
    }
}

/// The rules as SQL over one staged row: every comparison is `coalesce(…, false)`, so a
/// comparison with NULL is false as in [`rules`], and NOT, AND, OR stay two-valued.
struct Render<'a> {
    period: &'a Period,
}

impl Logic for Render<'_> {
    type B = String;
    fn lt(&self, a: Val, b: Val) -> String {
        self.cmp(a, "<", b)
    }
    fn le(&self, a: Val, b: Val) -> String {
        self.cmp(a, "<=", b)
    }
    fn eq(&self, a: Val, b: Val) -> String {
        self.cmp(a, "=", b)
    }
    fn absent(&self, a: Val) -> String {
        format!("({} IS NULL)", value(a, self.period))
    }
    fn status_in(&self, codes: &'static [i32]) -> String {
        let codes: Vec<String> = codes.iter().map(i32::to_string).collect();
        format!("coalesce(status IN ({}), false)", codes.join(", "))
    }
    fn flag(&self, f: Flag) -> String {
        match f {
            Flag::PaidOnline => "coalesce(paid_online, false)".into(),
            Flag::Digitized => "coalesce(digitized, false)".into(),
        }
    }
    fn and(&self, a: String, b: String) -> String {
        format!("({a} AND {b})")
    }
    fn or(&self, a: String, b: String) -> String {
        format!("({a} OR {b})")
    }
    fn not(&self, a: String) -> String {
        format!("(NOT {a})")
    }
}

impl Render<'_> {
    fn cmp(&self, a: Val, op: &str, b: Val) -> String {
        let (a, b) = (value(a, self.period), value(b, self.period));
        format!("coalesce({a} {op} {b}, false)")
    }
}

/// How each engine reads the two inputs, and the agency a case was handed over from.
impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Duckdb => "duckdb",
            Engine::Spark => "spark",
            Engine::Trino => "trino",
        }
    }

    /// The table at `folder` of the shared root, every province, with the partition values as
    /// string columns: `depth` folder levels under it, and its name in the Trino schema.
    fn table(self, o: &SqlOptions, folder: &str, depth: usize, trino: &str) -> String {
        let root = o.root.trim_end_matches('/');
        match self {
            Engine::Duckdb => format!(
                "read_parquet('{root}/{folder}/{}*.parquet', hive_partitioning = true, hive_types_autocast = false)",
                "*/".repeat(depth)
            ),
            Engine::Spark => format!("parquet.`{root}/{folder}`"),
            Engine::Trino => format!("{}.{trino}", o.trino_schema),
        }
    }

    /// The staged cases (`province=/case_month=/bucket=`).
    fn cases(self, o: &SqlOptions) -> String {
        self.table(o, "cases", 3, "cases")
    }

    /// `dim/agencies` (`province=`).
    fn agencies(self, o: &SqlOptions) -> String {
        self.table(o, "dim/agencies", 1, "agencies")
    }

    /// The agency that handed the case over in its first hand-over after `day` (the earliest,
    /// the first listed among same-day ones), or NULL: the case was then held by that agency.
    fn handed_over_after(self, day: &str) -> String {
        match self {
            Engine::Duckdb => format!("list_sort(list_filter(list_transform(transfers, lambda x, i: struct_pack(d := x.transferred_on, i := i, a := x.from_agency)), lambda y: y.d > {day}))[1].a"),
            Engine::Spark => format!("array_min(filter(transform(transfers, (x, i) -> named_struct('d', x.transferred_on, 'i', i, 'a', x.from_agency)), y -> y.d > {day})).a"),
            Engine::Trino => format!("element_at(array_sort(filter(zip_with(transfers, sequence(1, cardinality(transfers) + 1), (x, i) -> CAST(ROW(x.transferred_on, i, x.from_agency) AS ROW(d date, i bigint, a varchar))), y -> y.d > {day})), 1).a"),
        }
    }
}

/// A sum of aggregated count columns.
fn sum(s: rules::Sum) -> String {
    let mut out = String::new();
    for (k, (sign, name)) in s.iter().enumerate() {
        match (k, sign) {
            (0, _) => out.push_str(name),
            (_, -1) => out.push_str(&format!(" - {name}")),
            _ => out.push_str(&format!(" + {name}")),
        }
    }
    out
}

/// The rows every statement starts from: one per staged case, with its terms and measures as
/// booleans, its agency on the day it counts on, and that agency's level.
fn counted_rows(o: &SqlOptions) -> String {
    let r = Render { period: &o.period };
    let terms = rules::terms(&r);
    let term_cols: Vec<String> = terms
        .named()
        .iter()
        .map(|(name, sql)| format!("    {sql} AS {name}"))
        .collect();
    let by_name = Terms::by_name(|n| n.to_string());
    let measures: Vec<String> = rules::measures(&r, &by_name)
        .iter()
        .zip(rules::counted_names())
        .map(|(sql, name)| format!("    {sql} AS {name}"))
        .collect();
    let l = value(Val::L, &o.period);
    format!(
        "WITH terms AS (\n  SELECT province, agency_code, field_code, transfers, end_date, status, channel,\n    submitted_date, accepted_date, refused_date, due_date, supplement_requests, paid_online, digitized,\n{terms}\n  FROM {cases}\n  WHERE agency_code IS NOT NULL\n),\nheld AS (\n  SELECT terms.*,\n    coalesce({handed}, agency_code) AS agency\n  FROM (SELECT *, CASE WHEN ended_by_l THEN end_date ELSE {l} END AS counts_on FROM terms) terms\n),\ncounted AS (\n  SELECT held.province, coalesce(a.level, 'unknown') AS level, held.agency AS agency_code, held.field_code,\n{measures}\n  FROM held\n  LEFT JOIN (SELECT DISTINCT province, agency_code, level FROM {agencies}) a\n    ON a.province = held.province AND a.agency_code = held.agency\n)",
        terms = term_cols.join(",\n"),
        cases = o.engine.cases(o),
        handed = o.engine.handed_over_after("counts_on"),
        measures = measures.join(",\n"),
        agencies = o.engine.agencies(o),
    )
}

/// The output columns after the keys: the measures in `MEASURES` order, then the rates.
fn figures(aggregated: &str) -> String {
    let mut cols: Vec<String> = MEASURES
        .iter()
        .map(|m| match *m {
            m if m == rules::RECEIVED_TOTAL.0 => format!("{} AS {m}", sum(rules::RECEIVED_TOTAL.1)),
            m => m.to_string(),
        })
        .collect();
    for (name, num, den) in rules::RATES {
        let (num, den) = (sum(num), sum(den));
        cols.push(format!(
            "CASE WHEN {den} = 0 THEN NULL ELSE CAST({num} AS DOUBLE) / CAST({den} AS DOUBLE) END AS {name}"
        ));
    }
    format!(
        "  {}\nFROM (\n{aggregated}\n) aggregated",
        cols.join(",\n  ")
    )
}

/// The counts of `counted`, grouped by `keys` (`GROUP BY` text).
fn aggregated(keys: &str, group: &str) -> String {
    let counts: Vec<String> = rules::counted_names()
        .iter()
        .map(|m| format!("    count_if({m}) AS {m}"))
        .collect();
    format!(
        "  SELECT {keys},\n{}\n  FROM counted\n  GROUP BY {group}",
        counts.join(",\n")
    )
}

/// The statements for `o`: (table, SQL), each one complete.
pub fn statements(o: &SqlOptions) -> Vec<(&'static str, String)> {
    let rows = counted_rows(o);
    let period = format!("'{}' AS period", o.period.id);
    let by_agency = format!(
        "{rows}\nSELECT province, {period}, level, agency_code, field_code,\n{}\nORDER BY province, level, agency_code, field_code",
        figures(&aggregated(
            "province, level, agency_code, field_code",
            "province, level, agency_code, field_code"
        ))
    );
    let by_level = format!(
        "{rows}\nSELECT province, {period}, level,\n{}\nORDER BY province, level",
        figures(&aggregated(
            "province, CASE WHEN grouping(level) = 1 THEN 'all' ELSE level END AS level",
            "GROUPING SETS ((province, level), (province))"
        ))
    );
    vec![("cases_by_agency", by_agency), ("cases_by_level", by_level)]
}

/// The script `motcua sql` prints: a header, then each statement ending in `;` on its own line.
pub fn script(o: &SqlOptions) -> String {
    let p = &o.period;
    let mut out = format!(
        "-- motcua {} sql --engine {}: cases_by_agency and cases_by_level of {} ({}: {} to {}),\n-- from the staging of every province under {}, as motcua counts them (kpi.md, agencies.md).\n-- Generated from src/domain/rules.rs; one statement per table, each ending in ';'.\n",
        env!("CARGO_PKG_VERSION"),
        o.engine.name(),
        p.id,
        p.convention.as_str(),
        p.start,
        p.end,
        o.root
    );
    if o.engine == Engine::Spark {
        out.push_str("\n-- partition values stay strings: province=01 must not become 1\nSET spark.sql.sources.partitionColumnTypeInference.enabled = false;\n");
    }
    for (table, sql) in statements(o) {
        out.push_str(&format!("\n-- {table}\n{sql};\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::period::{Convention, PeriodId};

    fn options(engine: Engine) -> SqlOptions {
        let id: PeriodId = "2024-Q3".parse().unwrap();
        SqlOptions {
            engine,
            period: id.resolve(Convention::Decree09),
            root: "s3://bucket/motcua".into(),
            trino_schema: "hive.motcua".into(),
        }
    }

    #[test]
    fn every_measure_and_rate_is_in_both_statements_in_output_order() {
        for engine in [Engine::Duckdb, Engine::Spark, Engine::Trino] {
            let o = options(engine);
            for (_, sql) in statements(&o) {
                let mut at = sql.find("FROM (\n").unwrap_or(0);
                let head = &sql[..at];
                at = 0;
                for m in MEASURES.iter().chain(rules::RATES.iter().map(|r| &r.0)) {
                    let i = head[at..]
                        .find(&format!(" {m}"))
                        .unwrap_or_else(|| panic!("{m}"));
                    at += i + 1;
                }
                assert!(sql.contains("DATE '2024-06-15'") && sql.contains("DATE '2024-09-14'"));
                assert_eq!(sql.matches('(').count(), sql.matches(')').count());
            }
        }
    }

    #[test]
    fn a_comparison_with_null_is_false_as_in_the_rules() {
        let o = options(Engine::Duckdb);
        let r = Render { period: &o.period };
        assert_eq!(
            r.lt(Val::End, Val::Due),
            "coalesce(end_date < due_date, false)"
        );
        assert_eq!(r.not(r.absent(Val::Due)), "(NOT (due_date IS NULL))");
        let spark = script(&options(Engine::Spark));
        assert!(spark.contains("partitionColumnTypeInference.enabled = false;"));
        assert!(script(&options(Engine::Trino)).contains("FROM hive.motcua.cases"));
    }
}

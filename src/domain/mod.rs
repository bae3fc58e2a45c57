//! The domain rules, to be read beside `../shared/spec/kpi.md`: reporting periods, the reject
//! rules, the terms, measures, rates and identities, and the levels.

pub mod agency;
pub mod lanes;
pub mod level;
pub mod logic;
pub mod period;
pub mod reject;
pub mod rules;

pub use level::Level;
pub use period::{Convention, Period, PeriodId};

//! Figures for people: the by-level table for an 80-column terminal ([`terminal`]) and the
//! period's HTML report ([`html`]).

pub mod chart;
pub mod format;
pub mod html;
pub mod table;
pub mod terminal;

pub use html::html;
pub use terminal::level_table;

//! Levels (`kpi.md`, "Levels"): an agency's `Cap` — province, district, commune — or
//! `unknown` when its code is not in the catalog; `all` is the roll-up row of a table.

use std::fmt;

/// A row's level. Rows appear in this order: the three levels, `unknown`, then `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Province,
    District,
    Commune,
    Unknown,
    All,
}

impl Level {
    /// Every level, in row order.
    pub const ORDER: [Level; 5] = [
        Level::Province,
        Level::District,
        Level::Commune,
        Level::Unknown,
        Level::All,
    ];

    /// The three administrative levels, which every level table shows even when empty.
    pub const ADMINISTRATIVE: [Level; 3] = [Level::Province, Level::District, Level::Commune];

    /// The level of an agency's `Cap`; `unknown` for anything but 1, 2 and 3.
    pub fn of_cap(cap: Option<i32>) -> Level {
        match cap {
            Some(1) => Level::Province,
            Some(2) => Level::District,
            Some(3) => Level::Commune,
            _ => Level::Unknown,
        }
    }

    /// The `Cap` of an administrative level.
    pub fn cap(self) -> Option<i32> {
        match self {
            Level::Province => Some(1),
            Level::District => Some(2),
            Level::Commune => Some(3),
            Level::Unknown | Level::All => None,
        }
    }

    /// The name in the `level` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Province => "province",
            Level::District => "district",
            Level::Commune => "commune",
            Level::Unknown => "unknown",
            Level::All => "all",
        }
    }

    /// The level a `level` column names.
    pub fn parse(s: &str) -> Option<Level> {
        Level::ORDER.into_iter().find(|l| l.as_str() == s)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_names_and_order() {
        for l in Level::ADMINISTRATIVE {
            assert_eq!(Level::of_cap(l.cap()), l);
        }
        assert_eq!(Level::of_cap(None), Level::Unknown);
        assert_eq!(Level::of_cap(Some(4)), Level::Unknown);
        for l in Level::ORDER {
            assert_eq!(Level::parse(l.as_str()), Some(l));
        }
        assert_eq!(Level::parse("ward"), None);
        let mut sorted = Level::ORDER;
        sorted.sort();
        assert_eq!(sorted, Level::ORDER);
    }
}

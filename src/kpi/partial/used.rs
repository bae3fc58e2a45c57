//! The cases in received_new per (agency, procedure) and period, which the catalog measures
//! read ([`super::Partial`]'s `used`): one index and one flat array of counts, not an array
//! per pair — a partition has thousands of pairs, and allocating, filling and freeing an
//! array for each was a tenth of a cold count.

use polars::prelude::PlHashMap;

/// Per (agency, procedure), by ids: for each of `periods`, the cases in received_new.
#[derive(Debug, Clone, Default)]
pub(super) struct Used {
    periods: usize,
    index: PlHashMap<(u32, u32), u32>,
    keys: Vec<(u32, u32)>,
    /// Per pair, in `keys`' order, its count for each period.
    counts: Vec<i64>,
}

impl Used {
    pub fn new(periods: usize) -> Used {
        Used {
            periods,
            ..Default::default()
        }
    }

    /// Empties it, keeping its room.
    pub fn clear(&mut self) {
        self.index.clear();
        self.keys.clear();
        self.counts.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Where pair `key`'s counts start in `counts`, made when new.
    #[inline]
    fn place(&mut self, key: (u32, u32)) -> usize {
        let at = match self.index.get(&key) {
            Some(at) => *at as usize,
            None => {
                let at = self.keys.len();
                self.keys.push(key);
                self.index.insert(key, at as u32);
                self.counts.resize(self.counts.len() + self.periods, 0);
                at
            }
        };
        at * self.periods
    }

    /// Adds `n` to pair `key`'s count of period `i`.
    #[inline]
    pub fn add(&mut self, key: (u32, u32), i: usize, n: i64) {
        let start = self.place(key);
        self.counts[start + i] += n;
    }

    /// Adds `counts` (one per period) to pair `key`'s.
    pub fn add_all(&mut self, key: (u32, u32), counts: &[i64]) {
        let start = self.place(key);
        for (x, y) in self.counts[start..start + self.periods]
            .iter_mut()
            .zip(counts)
        {
            *x += y;
        }
    }

    /// Each pair with its counts, one per period.
    pub fn iter(&self) -> impl Iterator<Item = ((u32, u32), &[i64])> {
        let width = self.periods.max(1);
        self.keys.iter().copied().zip(self.counts.chunks(width))
    }
}

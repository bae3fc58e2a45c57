//! Counting cases never handed over 64 at a time ([`Lanes`]): the measures of each period are
//! evaluated as bit masks over the 64 cases, then each hit is added to its case's group. The
//! cases handed over are counted one by one (`count_decoded`), each period under its own
//! agency.

use super::Partial;
use crate::domain::lanes::{Lanes, LANES};
use crate::domain::rules::{Bounds, COUNTED, RECEIVED_NEW};
use crate::kpi::attribution::ValidityCache;
use crate::kpi::columns::Columns;

/// The cases of a [`Lanes`] as counted: per lane its row and its group (place and agency id).
pub(in crate::kpi) struct Held {
    pub lanes: Lanes,
    pub rows: [(u32, u32, u32); LANES],
}

impl Default for Held {
    fn default() -> Self {
        Held {
            lanes: Lanes::default(),
            rows: [(0, 0, 0); LANES],
        }
    }
}

impl Held {
    /// Adds the case of `row` (in group `at`, of agency `agency`); `true` when now full (a
    /// full one takes nothing more: count it first).
    #[inline]
    pub fn push(&mut self, cols: &Columns, row: usize, at: usize, agency: u32) -> bool {
        let Some(slot) = self.rows.get_mut(self.lanes.len()) else {
            return true;
        };
        *slot = (row as u32, at as u32, agency);
        cols.push_lane(row, &mut self.lanes);
        self.lanes.is_full()
    }
}

/// Each set bit of `mask`, as a lane.
#[inline]
fn lanes_of(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (mask != 0).then(|| {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            i
        })
    })
}

impl Partial {
    /// Counts the cases `held` for each period of `bounds`, then empties it.
    pub(in crate::kpi) fn count_held(
        &mut self,
        held: &mut Held,
        bounds: &[Bounds],
        cols: &mut Columns,
        validity: &mut ValidityCache,
    ) {
        if held.lanes.is_empty() {
            return;
        }
        for (i, p) in bounds.iter().enumerate() {
            let (masks, by_l) = held.lanes.counted(*p);
            let (width, off) = (self.periods * super::PER_PERIOD, i * super::PER_PERIOD);
            let start = |at: u32| at as usize * width + off;
            let any = masks.iter().fold(0, |a, m| a | m);
            for lane in lanes_of(any) {
                let (_, at, agency) = held.rows[lane];
                let on = match by_l >> lane & 1 {
                    1 => held.lanes.end(lane).unwrap_or(p.l),
                    _ => p.l,
                };
                let code = &self.codes[agency as usize];
                if !validity.valid(agency, code, on) {
                    let k = start(at) + COUNTED;
                    self.counts[k] += 1;
                }
            }
            for (m, mask) in masks.iter().enumerate() {
                for lane in lanes_of(*mask) {
                    let k = start(held.rows[lane].1) + m;
                    self.counts[k] += 1;
                }
            }
            for lane in lanes_of(masks[RECEIVED_NEW]) {
                let (row, _, agency) = held.rows[lane];
                let procedure = cols.procedure.id_in(row as usize, self);
                self.used.add((agency, procedure), i, 1);
            }
        }
        held.lanes.clear();
    }
}

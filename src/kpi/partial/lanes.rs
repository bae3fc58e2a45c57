//! Counting cases never handed over 64 at a time ([`Lanes`]): the measures of each period are
//! evaluated as bit masks over the 64 cases, then each hit is added to its case's group. The
//! cases handed over are counted one by one (`count_decoded`), each period under its own
//! agency.

use super::Partial;
use crate::domain::lanes::{Lanes, LANES};
use crate::domain::rules::{Bounds, COUNTED, RECEIVED_NEW};
use crate::kpi::attribution::ValidityCache;
use crate::kpi::columns::Columns;

/// The cases of a [`Lanes`] as counted: [`LANES`] consecutive rows of a chunk, per lane its
/// row and its group (place and agency id), and which lanes to count.
pub(in crate::kpi) struct Held {
    pub lanes: Lanes,
    pub rows: [(u32, u32, u32); LANES],
    live: u64,
}

impl Default for Held {
    fn default() -> Self {
        Held {
            lanes: Lanes::default(),
            rows: [(0, 0, 0); LANES],
            live: 0,
        }
    }
}

impl Held {
    /// Marks the case of `row` (in group `at`, of agency `agency`) to count.
    #[inline]
    pub fn mark(&mut self, row: usize, at: usize, agency: u32) {
        let lane = row % LANES;
        self.rows[lane] = (row as u32, at as u32, agency);
        self.live |= 1 << lane;
    }

    /// Whether a case is marked.
    pub fn any(&self) -> bool {
        self.live != 0
    }

    /// The lanes take the cases of the block of rows `start..` (a multiple of [`LANES`]) from
    /// `cols`, those marked to count; the marks are cleared.
    pub fn fill(&mut self, cols: &Columns, start: usize) {
        self.lanes.fill(&cols.block(start, self.live));
        self.live = 0;
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
        if held.lanes.held() == 0 {
            held.lanes.clear();
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

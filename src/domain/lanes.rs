//! The rules of [`super::rules`] evaluated on up to 64 cases at once ([`Lanes`]): each word of
//! [`Logic`] is a bit mask, one bit per case, and a comparison runs over the 64 cases' values
//! in one loop the compiler vectorises. The same text as [`super::logic::OneCase`]'s, so the
//! same meaning — a comparison with an absent value is false — which the tests below check
//! case by case; counting a chunk this way takes a fraction of evaluating each case alone.

use super::logic::{Flag, Logic, Val};
use super::rules::{self, Bounds, COUNTED};

/// Cases in one [`Lanes`].
pub const LANES: usize = 64;

/// The columns of up to [`LANES`] cases (as [`rules::Case`]), each with a mask of where it is present.
pub struct Lanes {
    /// Cases held (the lanes beyond are unused).
    n: usize,
    /// Status, channel, sub, acc, ref, end, due, supplement requests (held within `i32`: the
    /// rules compare it with small numbers alone, which clamping keeps exact).
    values: [[i32; LANES]; 8],
    present: [u64; 8],
    paid_online: u64,
    digitized: u64,
    /// The lanes holding a case to count.
    live: u64,
    p: Bounds,
}

/// Up to [`LANES`] consecutive cases as their columns hold them ([`Lanes::fill`]): status,
/// channel and the dates of [`rules::Case`] in its order, then the supplement requests, each
/// with a mask of where it is present; the flags set; and which of the cases to count.
pub struct Block<'a> {
    pub ints: [(&'a [i32], u64); 7],
    pub supplements: (&'a [i64], u64),
    pub paid_online: u64,
    pub digitized: u64,
    pub live: u64,
}

/// Where each [`Val`] column is in [`Lanes::values`].
fn column(v: Val) -> Option<usize> {
    Some(match v {
        Val::Status => 0,
        Val::Channel => 1,
        Val::Sub => 2,
        Val::Acc => 3,
        Val::Ref => 4,
        Val::End => 5,
        Val::Due => 6,
        Val::SupplementRequests => 7,
        Val::F | Val::L | Val::Int(_) => return None,
    })
}

/// One side of a comparison: a column of the lanes or one number for all.
enum Side<'a> {
    Column(&'a [i32; LANES], u64),
    Number(i32),
}

impl Default for Lanes {
    fn default() -> Self {
        Lanes {
            n: 0,
            values: [[0; LANES]; 8],
            present: [0; 8],
            paid_online: 0,
            digitized: 0,
            live: 0,
            p: Bounds { f: 0, l: 0 },
        }
    }
}

impl Lanes {
    /// Cases held.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Whether no more case fits.
    pub fn is_full(&self) -> bool {
        self.n == LANES
    }

    /// Empties it.
    pub fn clear(&mut self) {
        self.n = 0;
        self.present = [0; 8];
        self.paid_online = 0;
        self.digitized = 0;
        self.live = 0;
    }

    /// Holds the cases of `b` (all of it: what it held before is gone), a column at a time.
    /// Lanes beyond the shortest column are not live.
    pub fn fill(&mut self, b: &Block) {
        let n = b.ints.iter().map(|(v, _)| v.len()).min().unwrap_or(0);
        let n = n.min(b.supplements.0.len()).min(LANES);
        for (k, (v, present)) in b.ints.iter().enumerate() {
            self.values[k][..n].copy_from_slice(&v[..n]);
            self.present[k] = *present;
        }
        for (x, s) in self.values[7][..n].iter_mut().zip(b.supplements.0) {
            *x = clamp(*s);
        }
        self.present[7] = b.supplements.1;
        (self.paid_online, self.digitized) = (b.paid_online, b.digitized);
        let within = if n == LANES {
            u64::MAX
        } else {
            (1u64 << n) - 1
        };
        self.live = b.live & within;
        self.n = n;
    }

    /// Adds case `c` in the next lane (nothing when full). The count fills lanes a block of its
    /// columns at a time ([`Lanes::fill`]); this is the tests' way in.
    #[cfg(test)]
    pub fn push(&mut self, c: &rules::Case) {
        let ints = [c.status, c.channel, c.sub, c.acc, c.refd, c.end, c.due];
        let supplements = c.supplement_requests.map(clamp);
        self.push_values(ints, supplements, c.paid_online, c.digitized);
    }

    /// Adds a case in the next lane (nothing when full): status, channel and the dates of
    /// [`rules::Case`] in its order, its supplement requests (as [`clamp`]) and flags.
    #[cfg(test)]
    #[inline(always)]
    pub fn push_values(
        &mut self,
        ints: [Option<i32>; 7],
        supplements: Option<i32>,
        paid_online: Option<bool>,
        digitized: Option<bool>,
    ) {
        if self.n == LANES {
            return;
        }
        let (i, bit) = (self.n, 1u64 << self.n);
        for (k, v) in ints.into_iter().chain([supplements]).enumerate() {
            self.values[k][i] = v.unwrap_or(0);
            self.present[k] |= bit * v.is_some() as u64;
        }
        self.paid_online |= bit * (paid_online == Some(true)) as u64;
        self.digitized |= bit * (digitized == Some(true)) as u64;
        self.live |= bit;
        self.n += 1;
    }

    /// The lanes holding a case to count.
    pub fn held(&self) -> u64 {
        self.live
    }

    /// The end date of lane `i` (days since 1970), when present.
    pub fn end(&self, i: usize) -> Option<i32> {
        (self.present[5] >> i & 1 == 1).then(|| self.values[5][i])
    }

    /// Which of the counted measures ([`rules::counted_names`]) each case meets in period
    /// `p`, a mask per measure, and the cases that ended by L (they count on their end date,
    /// the others on L: `agencies.md`).
    pub fn counted(&mut self, p: Bounds) -> ([u64; COUNTED], u64) {
        self.p = p;
        let t = rules::terms(self);
        let held = self.held();
        let mut m = rules::measures(self, &t);
        for x in &mut m {
            *x &= held;
        }
        (m, t.ended_by_l & held)
    }

    fn side(&self, v: Val) -> Side<'_> {
        match column(v) {
            Some(k) => Side::Column(&self.values[k], self.present[k]),
            None => Side::Number(match v {
                Val::F => self.p.f,
                Val::L => self.p.l,
                Val::Int(n) => n,
                _ => 0,
            }),
        }
    }

    #[inline(always)]
    fn compare(&self, a: Val, b: Val, f: impl Fn(i32, i32) -> bool) -> u64 {
        match (self.side(a), self.side(b)) {
            (Side::Column(x, px), Side::Column(y, py)) => mask(|i| f(x[i], y[i])) & px & py,
            (Side::Column(x, px), Side::Number(y)) => mask(|i| f(x[i], y)) & px,
            (Side::Number(x), Side::Column(y, py)) => mask(|i| f(x, y[i])) & py,
            (Side::Number(x), Side::Number(y)) => {
                if f(x, y) {
                    u64::MAX
                } else {
                    0
                }
            }
        }
    }
}

/// The lanes where `g` holds, as a mask: a byte per lane first (a loop the compiler
/// vectorises), then each 8 bytes of 0 or 1 gathered into 8 bits by one multiplication.
#[inline(always)]
fn mask(g: impl Fn(usize) -> bool) -> u64 {
    let mut bytes = [0u8; LANES];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = g(i) as u8;
    }
    let mut m = 0u64;
    for (k, eight) in bytes.chunks_exact(8).enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(eight);
        // Byte j (0 or 1) lands on bit 56 + j, and no two products meet.
        let bits = u64::from_le_bytes(w).wrapping_mul(0x0102_0408_1020_4080) >> 56;
        m |= bits << (8 * k);
    }
    m
}

/// Supplement requests as the lanes hold them: within `i32`.
pub fn clamp(v: i64) -> i32 {
    v.clamp(i32::MIN.into(), i32::MAX.into()) as i32
}

impl Logic for Lanes {
    type B = u64;
    #[inline(always)]
    fn lt(&self, a: Val, b: Val) -> u64 {
        self.compare(a, b, |a, b| a < b)
    }
    #[inline(always)]
    fn le(&self, a: Val, b: Val) -> u64 {
        self.compare(a, b, |a, b| a <= b)
    }
    #[inline(always)]
    fn eq(&self, a: Val, b: Val) -> u64 {
        self.compare(a, b, |a, b| a == b)
    }
    #[inline(always)]
    fn absent(&self, a: Val) -> u64 {
        match column(a) {
            Some(k) => !self.present[k],
            None => 0,
        }
    }
    #[inline(always)]
    fn status_in(&self, codes: &'static [i32]) -> u64 {
        let s = &self.values[0];
        mask(|i| codes.contains(&s[i])) & self.present[0]
    }
    #[inline(always)]
    fn flag(&self, f: Flag) -> u64 {
        match f {
            Flag::PaidOnline => self.paid_online,
            Flag::Digitized => self.digitized,
        }
    }
    #[inline(always)]
    fn and(&self, a: u64, b: u64) -> u64 {
        a & b
    }
    #[inline(always)]
    fn or(&self, a: u64, b: u64) -> u64 {
        a | b
    }
    #[inline(always)]
    fn not(&self, a: u64) -> u64 {
        !a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rules::Case;

    /// A case of small numbers, each absent now and then, from a simple generator: dates
    /// around the period's bounds so that every comparison goes each way.
    fn case(seed: &mut u64) -> Case {
        let mut next = |n: u64| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (*seed >> 33) % n
        };
        let mut opt = |n: u64, base: i32| (next(6) != 0).then(|| base + next(n) as i32);
        let day = 19_900;
        Case {
            status: opt(12, 0),
            channel: opt(3, 0),
            sub: opt(40, day),
            acc: opt(40, day),
            refd: opt(40, day),
            end: opt(40, day),
            due: opt(40, day),
            supplement_requests: opt(3, 0).map(|v| match v {
                2 => i64::MAX - 3,
                v => i64::from(v) - 1,
            }),
            paid_online: opt(2, 0).map(|v| v == 1),
            digitized: opt(2, 0).map(|v| v == 1),
        }
    }

    #[test]
    fn lanes_count_each_case_as_the_rules_count_it_alone() {
        let mut seed = 7;
        let periods = [
            Bounds {
                f: 19_910,
                l: 19_925,
            },
            Bounds {
                f: 19_900,
                l: 19_939,
            },
        ];
        let mut hits = 0;
        for round in 0..400 {
            // Full lanes, and some partly filled.
            let n = if round % 3 == 0 {
                1 + round % LANES
            } else {
                LANES
            };
            let cases: Vec<Case> = (0..n).map(|_| case(&mut seed)).collect();
            let mut lanes = Lanes::default();
            for c in &cases {
                lanes.push(c);
            }
            assert_eq!(lanes.len(), n);
            for p in periods {
                let (masks, by_l) = lanes.counted(p);
                for (i, c) in cases.iter().enumerate() {
                    let (alone, on) = rules::counted_on(c, p);
                    for (m, hit) in alone.iter().enumerate() {
                        assert_eq!(masks[m] >> i & 1 == 1, *hit, "measure {m}, case {c:?}");
                        hits += *hit as usize;
                    }
                    let day = if by_l >> i & 1 == 1 {
                        lanes.end(i).unwrap()
                    } else {
                        p.l
                    };
                    assert_eq!(day, on, "{c:?}");
                }
                // Unused lanes count nowhere.
                assert!(masks.iter().all(|m| m & !lanes.held() == 0));
            }
            lanes.clear();
            assert!(lanes.is_empty());
        }
        assert!(hits > 10_000, "the cases meet measures: {hits}");
    }

    /// Lanes filled from a block of columns count exactly the cases marked live, each as the
    /// same case pushed alone counts; the lanes not live count nowhere.
    #[test]
    fn a_block_of_columns_counts_as_its_live_cases_pushed() {
        let mut seed = 11;
        let p = Bounds {
            f: 19_910,
            l: 19_925,
        };
        for round in 0..200 {
            let n = if round % 4 == 0 {
                1 + round % LANES
            } else {
                LANES
            };
            let cases: Vec<Case> = (0..n).map(|_| case(&mut seed)).collect();
            let live = (0..n).fold(0u64, |m, i| m | (u64::from(i % 3 != round % 3) << i));
            let bits = |f: &dyn Fn(&Case) -> bool| {
                (0..n).fold(0u64, |m, i| m | (u64::from(f(&cases[i])) << i))
            };
            let ints: Vec<Vec<i32>> = (0..7)
                .map(|k| {
                    let v = |c: &Case| [c.status, c.channel, c.sub, c.acc, c.refd, c.end, c.due][k];
                    cases.iter().map(|c| v(c).unwrap_or(-9)).collect()
                })
                .collect();
            let present: Vec<u64> = (0..7)
                .map(|k| {
                    bits(&|c: &Case| {
                        [c.status, c.channel, c.sub, c.acc, c.refd, c.end, c.due][k].is_some()
                    })
                })
                .collect();
            let supplements: Vec<i64> = cases
                .iter()
                .map(|c| c.supplement_requests.unwrap_or(5))
                .collect();
            let block = Block {
                ints: std::array::from_fn(|k| (ints[k].as_slice(), present[k])),
                supplements: (
                    &supplements,
                    bits(&|c: &Case| c.supplement_requests.is_some()),
                ),
                paid_online: bits(&|c: &Case| c.paid_online == Some(true)),
                digitized: bits(&|c: &Case| c.digitized == Some(true)),
                live,
            };
            let mut filled = Lanes::default();
            filled.fill(&block);
            assert_eq!(filled.held(), live);
            let (masks, by_l) = filled.counted(p);
            for (i, c) in cases.iter().enumerate() {
                let mut alone = Lanes::default();
                alone.push(c);
                let (one, one_by_l) = alone.counted(p);
                for (m, mask) in masks.iter().enumerate() {
                    let want = live >> i & 1 == 1 && one[m] & 1 == 1;
                    assert_eq!(mask >> i & 1 == 1, want, "measure {m}, case {c:?}");
                }
                if live >> i & 1 == 1 {
                    assert_eq!(by_l >> i & 1, one_by_l & 1);
                    assert_eq!(filled.end(i), c.end);
                }
            }
        }
    }
}

//! A period of a [`Partial`] encoded for the KPI cache straight from its counts
//! ([`Partial::kept_bytes`]): the bytes bincode's `standard()` configuration makes of the
//! [`Kept`](super::Kept) of that period, without building one. Building it and encoding it
//! through serde, field by field, cost a tenth of a cold count at a million cases.

use super::{Partial, PER_PERIOD};

/// bincode's variable-length unsigned integer: one byte up to 250, else a marker (251, 252,
/// 253) and the value in 2, 4 or 8 bytes, little-endian.
fn unsigned(out: &mut Vec<u8>, v: u64) {
    if v <= 250 {
        out.push(v as u8);
    } else if let Ok(v) = u16::try_from(v) {
        out.push(251);
        out.extend_from_slice(&v.to_le_bytes());
    } else if let Ok(v) = u32::try_from(v) {
        out.push(252);
        out.extend_from_slice(&v.to_le_bytes());
    } else {
        out.push(253);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// bincode's variable-length signed integer: zigzag (`n` ≥ 0 as 2n, else as −2n − 1), then
/// [`unsigned`].
fn signed(out: &mut Vec<u8>, v: i64) {
    let z = if v < 0 {
        !(v as u64) * 2 + 1
    } else {
        (v as u64) * 2
    };
    unsigned(out, z);
}

fn length(out: &mut Vec<u8>, n: usize) {
    unsigned(out, n as u64);
}

impl Partial {
    /// Period `i` of these counts as the KPI cache keeps them, encoded: the codes, each group
    /// (agency, field, least names, cases held now), the counts that are not 0 at their
    /// place, and the uses with a count.
    pub fn kept_bytes(&self, i: usize) -> Vec<u8> {
        let spans = || (0..self.groups.len()).map(|at| (at, &self.counts[self.span(at, i)]));
        let counted: usize = spans()
            .map(|(_, c)| c.iter().filter(|n| **n != 0).count())
            .sum();
        let used = || self.used.iter().filter(|(_, u)| u[i] > 0);
        let uses = used().count();
        // Room for the most each takes (an integer at most 9 bytes), so that it never grows.
        let texts: usize = self.codes.iter().map(|c| c.len() + 9).sum();
        let most = 36 + texts + self.groups.len() * 45 + counted * 18 + uses * 27;
        let mut out = Vec::with_capacity(most);
        length(&mut out, self.codes.len());
        for c in &self.codes {
            length(&mut out, c.len());
            out.extend_from_slice(c.as_bytes());
        }
        length(&mut out, self.groups.len());
        for ((a, f), g) in &self.groups {
            for id in [*a, *f, g.agency_name, g.field_name] {
                unsigned(&mut out, id.into());
            }
            signed(&mut out, g.cases);
        }
        length(&mut out, counted);
        for (at, counts) in spans() {
            let place = (at * PER_PERIOD) as u64;
            for (m, n) in counts.iter().enumerate() {
                if *n != 0 {
                    unsigned(&mut out, place + m as u64);
                    signed(&mut out, *n);
                }
            }
        }
        length(&mut out, uses);
        for ((a, p), u) in used() {
            unsigned(&mut out, a.into());
            unsigned(&mut out, p.into());
            signed(&mut out, u[i]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Integers around every boundary of the encoding come out as bincode writes them.
    #[test]
    fn integers_are_encoded_as_bincode_encodes_them() {
        let config = bincode::config::standard();
        let edges = [0u64, 1, 250, 251, 252, 255, 256, 65_535, 65_536, 1 << 31];
        let wide = [u32::MAX as u64, u32::MAX as u64 + 1, u64::MAX - 1, u64::MAX];
        for v in edges.into_iter().chain(wide) {
            let mut mine = vec![];
            unsigned(&mut mine, v);
            assert_eq!(mine, bincode::encode_to_vec(v, config).unwrap(), "{v}");
        }
        let small = [0i64, 1, -1, 125, -125, 126, -126, 32_767, -32_768, 1 << 40];
        for v in small.into_iter().chain([i64::MAX, i64::MIN, -(1 << 40)]) {
            let mut mine = vec![];
            signed(&mut mine, v);
            assert_eq!(mine, bincode::encode_to_vec(v, config).unwrap(), "{v}");
        }
    }

    /// A demo province's counts for two periods encode as bincode encodes their `Kept`.
    #[test]
    fn counts_are_encoded_as_bincode_encodes_them() {
        use crate::domain::period::{Convention, Period, PeriodId};
        use crate::normalise::{Normaliser, PiiKey};
        let d = crate::demo::generator::generate(11, 0.03);
        let mut n = Normaliser::new(PiiKey::new(b"k"), "r");
        n.add_records("raw/x", &d.cases);
        let cases = n.finish().unwrap().cases;
        let periods: Vec<Period> = ["2024-Q3", "2024-07"]
            .map(|p| p.parse::<PeriodId>().unwrap().resolve(Convention::Decree09))
            .to_vec();
        let p = super::super::partial(&cases, &periods, &Default::default()).unwrap();
        assert!(p.groups.len() > 10 && !p.used.is_empty());
        for i in 0..2 {
            let kept = p.kept(i);
            let theirs = bincode::serde::encode_to_vec(&kept, bincode::config::standard());
            assert_eq!(p.kept_bytes(i), theirs.unwrap(), "period {i}");
        }
    }
}

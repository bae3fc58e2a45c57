//! The words the measures of [`super::rules`] are written in ([`Logic`]), and their meaning on
//! one case ([`OneCase`]): a comparison with an absent value is false. `crate::sql` gives the
//! same words their SQL meaning.

use super::rules::{Bounds, Case, Terms};

/// What a rule compares: a column of the case, a bound of the period, or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Val {
    Status,
    Channel,
    Sub,
    Acc,
    Ref,
    End,
    Due,
    SupplementRequests,
    F,
    L,
    Int(i32),
}

/// A yes/no column of the case: true only when present and 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    PaidOnline,
    Digitized,
}

/// The words the rules are written in. A comparison with an absent value is false (never
/// unknown), so `not`, `and` and `or` are two-valued everywhere.
pub trait Logic {
    type B: Clone;
    /// a < b, both present.
    fn lt(&self, a: Val, b: Val) -> Self::B;
    /// a ≤ b, both present.
    fn le(&self, a: Val, b: Val) -> Self::B;
    /// a = b, both present.
    fn eq(&self, a: Val, b: Val) -> Self::B;
    /// The value is absent.
    fn absent(&self, a: Val) -> Self::B;
    /// The status is present and one of `codes`.
    fn status_in(&self, codes: &'static [i32]) -> Self::B;
    fn flag(&self, f: Flag) -> Self::B;
    fn and(&self, a: Self::B, b: Self::B) -> Self::B;
    fn or(&self, a: Self::B, b: Self::B) -> Self::B;
    fn not(&self, a: Self::B) -> Self::B;

    /// F ≤ v ≤ L.
    fn within(&self, v: Val) -> Self::B {
        self.and(self.le(Val::F, v), self.le(v, Val::L))
    }
}

/// One case in one period: the rules evaluated.
pub(super) struct OneCase<'a> {
    pub c: &'a Case,
    pub p: Bounds,
}

impl OneCase<'_> {
    #[inline(always)]
    fn value(&self, v: Val) -> Option<i64> {
        let c = self.c;
        match v {
            Val::Status => c.status.map(i64::from),
            Val::Channel => c.channel.map(i64::from),
            Val::Sub => c.sub.map(i64::from),
            Val::Acc => c.acc.map(i64::from),
            Val::Ref => c.refd.map(i64::from),
            Val::End => c.end.map(i64::from),
            Val::Due => c.due.map(i64::from),
            Val::SupplementRequests => c.supplement_requests,
            Val::F => Some(self.p.f.into()),
            Val::L => Some(self.p.l.into()),
            Val::Int(n) => Some(n.into()),
        }
    }

    #[inline(always)]
    fn both(&self, a: Val, b: Val, f: impl Fn(i64, i64) -> bool) -> bool {
        matches!((self.value(a), self.value(b)), (Some(a), Some(b)) if f(a, b))
    }
}

impl Logic for OneCase<'_> {
    type B = bool;
    #[inline(always)]
    fn lt(&self, a: Val, b: Val) -> bool {
        self.both(a, b, |a, b| a < b)
    }
    #[inline(always)]
    fn le(&self, a: Val, b: Val) -> bool {
        self.both(a, b, |a, b| a <= b)
    }
    #[inline(always)]
    fn eq(&self, a: Val, b: Val) -> bool {
        self.both(a, b, |a, b| a == b)
    }
    #[inline(always)]
    fn absent(&self, a: Val) -> bool {
        self.value(a).is_none()
    }
    #[inline(always)]
    fn status_in(&self, codes: &'static [i32]) -> bool {
        self.c.status.is_some_and(|s| codes.contains(&s))
    }
    #[inline(always)]
    fn flag(&self, f: Flag) -> bool {
        match f {
            Flag::PaidOnline => self.c.paid_online == Some(true),
            Flag::Digitized => self.c.digitized == Some(true),
        }
    }
    #[inline(always)]
    fn and(&self, a: bool, b: bool) -> bool {
        a & b
    }
    #[inline(always)]
    fn or(&self, a: bool, b: bool) -> bool {
        a | b
    }
    #[inline(always)]
    fn not(&self, a: bool) -> bool {
        !a
    }
}

impl<B> Terms<B> {
    /// The terms by name, in declaration order.
    pub fn named(&self) -> [(&'static str, &B); 9] {
        [
            ("accepted", &self.accepted),
            ("ended", &self.ended),
            ("received_new", &self.received_new),
            ("end_in_period", &self.end_in_period),
            ("resolved", &self.resolved),
            ("in_progress", &self.in_progress),
            ("online", &self.online),
            ("overdue", &self.overdue),
            ("ended_by_l", &self.ended_by_l),
        ]
    }

    /// Terms each given by its name (e.g. a column holding it).
    pub fn by_name(f: impl Fn(&'static str) -> B) -> Terms<B> {
        Terms {
            accepted: f("accepted"),
            ended: f("ended"),
            received_new: f("received_new"),
            end_in_period: f("end_in_period"),
            resolved: f("resolved"),
            in_progress: f("in_progress"),
            online: f("online"),
            overdue: f("overdue"),
            ended_by_l: f("ended_by_l"),
        }
    }
}

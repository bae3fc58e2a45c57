//! A synthetic province for the demo source: about 20 province-level departments, 9 districts,
//! 141 communes, a catalog of 1,953 procedures, and about 160 thousand case records.
//!
//! The generator decides which cases exist. It draws them per level from a *profile* of the
//! 2024-Q3 quarter (Decree 09 cut-off, 2024-06-15 … 2024-09-14) modelled on the quarter Thừa
//! Thiên Huế published: how many cases were received online and in person, resolved early, on
//! time or late, withdrawn, stopped, still in progress, waiting or refused. Each case gets dates
//! that put it in exactly one of those outcomes; the KPI code, which knows nothing of the
//! profile, turns the records back into figures. Around the quarter it adds cases that ended
//! before it and cases that arrive after it, older versions, exact duplicates, unusable records
//! and every odd value shape of `source-api.md`. Everything is deterministic by seed.

use chrono::{Days, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use chrono_tz::Asia::Ho_Chi_Minh;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};

use super::province::{self, d, Agency, Layout};

mod history;
use unicode_normalization::UnicodeNormalization;

/// What the demo source serves.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub agencies: Vec<Value>,
    pub procedures: Vec<Value>,
    pub cases: Vec<Value>,
}

/// Outcome counts of one level for the profiled quarter.
#[derive(Debug, Clone, Copy)]
pub struct LevelProfile {
    pub cap: u8,
    pub received_new: u32,
    pub received_online: u32,
    pub resolved_early: u32,
    pub resolved_on_time: u32,
    pub resolved_overdue: u32,
    /// Of the overdue, how many had asked the applicant to supplement the dossier.
    pub overdue_supplemented: u32,
    pub withdrawn: u32,
    /// Accepted before the quarter and not ended before it.
    pub carried_over: u32,
    pub in_progress_within: u32,
    pub in_progress_overdue: u32,
    pub waiting: u32,
    pub refused: u32,
}

impl LevelProfile {
    /// Cases stopped during the quarter: whatever balances received = resolved + stopped + in progress.
    pub fn stopped(&self) -> u32 {
        let received = self.received_new + self.carried_over;
        let resolved =
            self.resolved_early + self.resolved_on_time + self.resolved_overdue + self.withdrawn;
        received - resolved - self.in_progress_within - self.in_progress_overdue
    }
}

/// The demo province's 2024-Q3, modelled on Thừa Thiên Huế's published quarter.
pub const PROFILE: [LevelProfile; 3] = [
    LevelProfile {
        cap: 1,
        received_new: 24836,
        received_online: 21497,
        resolved_early: 7030,
        resolved_on_time: 13804,
        resolved_overdue: 562,
        overdue_supplemented: 0,
        withdrawn: 0,
        carried_over: 400,
        in_progress_within: 2310,
        in_progress_overdue: 400,
        waiting: 433,
        refused: 150,
    },
    LevelProfile {
        cap: 2,
        received_new: 34012,
        received_online: 13951,
        resolved_early: 16168,
        resolved_on_time: 7706,
        resolved_overdue: 2338,
        overdue_supplemented: 1416,
        withdrawn: 0,
        carried_over: 1000,
        in_progress_within: 6081,
        in_progress_overdue: 1100,
        waiting: 900,
        refused: 210,
    },
    LevelProfile {
        cap: 3,
        received_new: 47223,
        received_online: 33384,
        resolved_early: 33092,
        resolved_on_time: 12063,
        resolved_overdue: 384,
        overdue_supplemented: 0,
        withdrawn: 140,
        carried_over: 300,
        in_progress_within: 1263,
        in_progress_overdue: 150,
        waiting: 396,
        refused: 260,
    },
];

const FIELDS: [(&str, &str); 24] = [
    ("HT", "Hộ tịch"),
    ("CT", "Chứng thực"),
    ("TP", "Lý lịch tư pháp"),
    ("DD", "Đất đai"),
    ("XD", "Hoạt động xây dựng"),
    ("DKKD", "Thành lập và hoạt động doanh nghiệp"),
    ("HKD", "Thành lập và hoạt động hộ kinh doanh"),
    ("TM", "Thương mại quốc tế"),
    ("LT", "Lưu thông hàng hóa trong nước"),
    ("GTDB", "Đường bộ"),
    ("MT", "Môi trường"),
    ("TNN", "Tài nguyên nước"),
    ("NN", "Trồng trọt"),
    ("TY", "Thú y"),
    ("KCB", "Khám bệnh, chữa bệnh"),
    ("DUOC", "Dược phẩm"),
    ("GD", "Giáo dục và Đào tạo"),
    ("LD", "Việc làm"),
    ("NCC", "Người có công"),
    ("BTXH", "Bảo trợ xã hội"),
    ("VH", "Văn hóa"),
    ("DL", "Du lịch"),
    ("TDKT", "Thi đua - Khen thưởng"),
    ("TCTG", "Tín ngưỡng, tôn giáo"),
];

const ACTIONS: [&str; 12] = [
    "Cấp giấy phép",
    "Cấp lại giấy phép",
    "Gia hạn giấy phép",
    "Đăng ký",
    "Đăng ký thay đổi",
    "Cấp giấy chứng nhận",
    "Thẩm định hồ sơ",
    "Xác nhận",
    "Công nhận",
    "Phê duyệt",
    "Điều chỉnh",
    "Thu hồi",
];

const FAMILY: [&str; 16] = [
    "Nguyễn",
    "Trần",
    "Lê",
    "Phạm",
    "Hoàng",
    "Huỳnh",
    "Phan",
    "Vũ",
    "Võ",
    "Đặng",
    "Bùi",
    "Đỗ",
    "Hồ",
    "Ngô",
    "Dương",
    "Tôn Thất",
];
const MIDDLE: [&str; 10] = [
    "Văn", "Thị", "Hữu", "Đức", "Minh", "Thanh", "Ngọc", "Quang", "Thành", "Xuân",
];
const GIVEN: [&str; 32] = [
    "An", "Bình", "Cường", "Dũng", "Giang", "Hà", "Hải", "Hạnh", "Hiếu", "Hoa", "Hùng", "Hương",
    "Khánh", "Lan", "Linh", "Long", "Mai", "Nam", "Nga", "Phúc", "Phương", "Quân", "Sơn", "Tâm",
    "Thảo", "Thắng", "Thủy", "Trang", "Trung", "Tuấn", "Vân", "Yến",
];

/// An agency code that `/v1/donvi` does not list: its cases count at level `unknown`.
pub const UNLISTED_AGENCY: &str = "000.99.99.H57";

struct Procedure {
    code: String,
    name: String,
    field: usize,
    levels: Vec<u8>,
    online: u8,
    inter_agency: bool,
}

/// Draws the whole demo province.
pub struct Generator {
    rng: ChaCha8Rng,
    agencies: Vec<Agency>,
    layout: Layout,
    procedures: Vec<Procedure>,
    serial: u64,
    /// How many records each case-count is multiplied by (1.0: the profiled province).
    scale: f64,
    /// Whether to add the records that break each reject rule.
    unusable: bool,
}

/// What one case is drawn to be.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Early,
    OnTime,
    Overdue { supplemented: bool },
    Withdrawn,
    Stopped,
    InProgressWithin,
    InProgressOverdue,
}

/// The dates of one case (local times).
#[derive(Default, Clone)]
struct Dates {
    sub: Option<NaiveDateTime>,
    acc: Option<NaiveDateTime>,
    due: Option<NaiveDateTime>,
    processed: Option<NaiveDateTime>,
    returned: Option<NaiveDateTime>,
    refused: Option<NaiveDateTime>,
    /// (requested, supplied, new deadline)
    supplements: Vec<(NaiveDateTime, Option<NaiveDateTime>, Option<NaiveDateTime>)>,
}

impl Dates {
    fn latest(&self) -> NaiveDateTime {
        let mut all: Vec<NaiveDateTime> = [
            self.sub,
            self.acc,
            self.processed,
            self.returned,
            self.refused,
        ]
        .into_iter()
        .flatten()
        .collect();
        for (a, b, _) in &self.supplements {
            all.push(*a);
            all.extend(b);
        }
        all.into_iter().max().expect("a case has a date")
    }
}

impl Generator {
    pub fn new(seed: u64, scale: f64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (agencies, layout) = province::agencies(&mut rng);
        let mut g = Generator {
            rng,
            agencies,
            layout,
            procedures: vec![],
            serial: 0,
            scale,
            unusable: true,
        };
        g.build_procedures();
        g
    }

    /// 1,953 procedures: 1,554 at province level, 367 at district and 138 at commune level
    /// (106 at both), 459 / 35 / 17 of those pairs inter-agency; 787 fully and 1,072 partly online.
    fn build_procedures(&mut self) {
        let groups: [(&[u8], u32, u32); 4] = [
            (&[1], 1554, 459),
            (&[2], 261, 25),
            (&[3], 32, 7),
            (&[2, 3], 106, 10),
        ];
        let mut online: Vec<u8> = std::iter::repeat_n(2, 787)
            .chain(std::iter::repeat_n(1, 1072))
            .chain(std::iter::repeat_n(0, 94))
            .collect();
        online.shuffle(&mut self.rng);
        let mut n = 0usize;
        for (levels, count, inter) in groups {
            for i in 0..count {
                let field = match levels {
                    [1] => (i as usize) % FIELDS.len(),
                    [3] | [2, 3] => [0usize, 1, 19, 18, 3][i as usize % 5],
                    _ => [0usize, 1, 3, 4, 6, 11, 17, 19][i as usize % 8],
                };
                let action = ACTIONS[(i as usize / FIELDS.len()) % ACTIONS.len()];
                let prefix = if levels == [1] { 1 } else { 2 };
                self.procedures.push(Procedure {
                    code: format!("{prefix}.{:06}", 1000 + n),
                    name: format!(
                        "{action} về {} (thủ tục số {})",
                        FIELDS[field].1.to_lowercase(),
                        n + 1
                    ),
                    field,
                    levels: levels.to_vec(),
                    online: online[n],
                    inter_agency: i < inter,
                });
                n += 1;
            }
        }
    }
}

/// What a drawn case's outcome is decided from: its acceptance, the first day it may end, the
/// quarter's last day.
struct Drawn {
    acc: NaiveDateTime,
    acc_day: NaiveDate,
    first_end: NaiveDate,
    l: NaiveDate,
}

/// One case before it is written as records.
struct Draft {
    /// The agency holding it now.
    agency: usize,
    /// The agency that accepted it (its `MaHoSo` says so).
    first_agency: usize,
    /// Hand-overs: when, from which agency, to which.
    transfers: Vec<(NaiveDateTime, usize, usize)>,
    procedure: usize,
    channel: u8,
    status: u8,
    dates: Dates,
    /// Write an older, in-progress version of the case before this one.
    with_older_version: bool,
}

impl Generator {
    /// An agency of level `cap` existing on `day`, the busier ones more often.
    fn weighted(&mut self, cap: u8, day: NaiveDate) -> usize {
        let idx: Vec<usize> = (0..self.agencies.len())
            .filter(|i| self.agencies[*i].cap == cap && self.agencies[*i].valid_on(day))
            .collect();
        let total: f64 = idx.iter().map(|i| self.agencies[*i].weight).sum();
        let mut x = self.rng.random::<f64>() * total;
        for i in &idx {
            x -= self.agencies[*i].weight;
            if x <= 0.0 {
                return *i;
            }
        }
        *idx.last().expect("agencies at every level that exists")
    }

    fn procedure_at(&mut self, cap: u8) -> usize {
        loop {
            let i = self.rng.random_range(0..self.procedures.len());
            if self.procedures[i].levels.contains(&cap) {
                return i;
            }
        }
    }

    fn day(&mut self, from: NaiveDate, to: NaiveDate) -> NaiveDate {
        let span = (to - from).num_days().max(0) as u64;
        from + Days::new(self.rng.random_range(0..=span))
    }

    fn at(&mut self, day: NaiveDate, from_hour: u32, to_hour: u32) -> NaiveDateTime {
        let secs = self.rng.random_range(from_hour * 3600..to_hour * 3600);
        day.and_time(NaiveTime::from_num_seconds_from_midnight_opt(secs, 0).expect("time"))
    }

    fn scaled(&self, n: u32) -> u32 {
        (n as f64 * self.scale).round() as u32
    }

    /// Accepts a case on `acc_day`, submitted up to two days before.
    fn accept(&mut self, dates: &mut Dates, acc_day: NaiveDate) -> NaiveDateTime {
        let acc = self.at(acc_day, 7, 17);
        let back = self.rng.random_range(10..=2 * 24 * 60);
        dates.sub = Some(acc - chrono::Duration::minutes(back));
        dates.acc = Some(acc);
        acc
    }

    /// The case ends (is processed) on `end_day`, after its acceptance.
    fn finish(&mut self, dates: &mut Dates, end_day: NaiveDate) -> NaiveDateTime {
        let acc = dates.acc.expect("accepted");
        let t = self
            .at(end_day, 7, 18)
            .max(acc + chrono::Duration::minutes(30));
        dates.processed = Some(t);
        t
    }

    /// Status 9 or 10 for a resolved case; 10 hands the result over, sometimes without
    /// recording the processing end (then the hand-over date is the end).
    fn resolved_status(&mut self, dates: &mut Dates) -> u8 {
        if self.rng.random_bool(0.6) {
            let p = dates.processed.expect("processed");
            if self.rng.random_bool(0.05) {
                dates.returned = Some(p);
                dates.processed = None;
            } else {
                let back = self.rng.random_range(0..=2);
                dates.returned =
                    Some(p + chrono::Duration::hours(2) + chrono::Duration::days(back));
            }
            10
        } else {
            9
        }
    }

    fn deadline(&mut self, day: NaiveDate) -> NaiveDateTime {
        day.and_hms_opt(17, 0, 0).expect("time")
    }

    fn supplement(
        &mut self,
        dates: &mut Dates,
        asked: NaiveDateTime,
        new_deadline: Option<NaiveDateTime>,
        supplied: bool,
    ) {
        let got = supplied.then(|| asked + chrono::Duration::days(self.rng.random_range(1..=3)));
        dates.supplements.push((asked, got, new_deadline));
    }

    /// A case drawn to have `outcome` in the quarter F … L.
    fn draw(
        &mut self,
        cap: u8,
        outcome: Outcome,
        carried: bool,
        online: bool,
        f: NaiveDate,
        l: NaiveDate,
    ) -> Draft {
        let mut dates = Dates::default();
        let needs_room = matches!(
            outcome,
            Outcome::Overdue { .. } | Outcome::InProgressOverdue
        );
        let acc_day = if carried {
            self.day(f - Days::new(90), f - Days::new(1))
        } else if needs_room {
            self.day(f, l - Days::new(1))
        } else {
            self.day(f, l)
        };
        let acc = self.accept(&mut dates, acc_day);
        let first_end = acc_day.max(f);
        let c = Drawn {
            acc,
            acc_day,
            first_end,
            l,
        };
        let status = match outcome {
            Outcome::Early => self.early(&mut dates, &c),
            Outcome::OnTime => self.on_time(&mut dates, &c),
            Outcome::Overdue { supplemented } => self.overdue(&mut dates, &c, supplemented),
            Outcome::Withdrawn | Outcome::Stopped => self.ended_otherwise(&mut dates, &c, outcome),
            Outcome::InProgressWithin | Outcome::InProgressOverdue => {
                self.in_progress(&mut dates, &c, outcome)
            }
        };
        let channel = if online {
            2
        } else if self.rng.random_bool(0.1) {
            3
        } else {
            1
        };
        self.place(cap, channel, status, dates)
    }

    /// Resolved before its deadline, in the quarter.
    fn early(&mut self, dates: &mut Dates, c: &Drawn) -> u8 {
        let end = self.day(c.first_end, c.l);
        self.finish(dates, end);
        let due = end + Days::new(self.rng.random_range(1..=15));
        if self.rng.random_bool(0.05) {
            // Early against a deadline extended after a supplement request.
            dates.due = Some(self.deadline(end.max(c.acc_day)));
            let ext = self.deadline(due);
            self.supplement(dates, c.acc + chrono::Duration::hours(3), Some(ext), true);
        } else {
            dates.due = Some(self.deadline(due));
        }
        self.resolved_status(dates)
    }

    /// Resolved on its deadline (or with none), in the quarter.
    fn on_time(&mut self, dates: &mut Dates, c: &Drawn) -> u8 {
        let end = self.day(c.first_end, c.l);
        self.finish(dates, end);
        let r = self.rng.random::<f64>();
        if r < 0.08 {
            dates.due = None; // no deadline: on time
        } else if r < 0.14 && end > c.acc_day {
            // late against NgayHenTra, on time against the extension
            dates.due = Some(self.deadline(c.acc_day));
            let ext = self.deadline(end);
            self.supplement(dates, c.acc + chrono::Duration::hours(2), Some(ext), true);
        } else {
            dates.due = Some(self.deadline(end));
        }
        self.resolved_status(dates)
    }

    /// Resolved after its deadline, in the quarter.
    fn overdue(&mut self, dates: &mut Dates, c: &Drawn, supplemented: bool) -> u8 {
        let end = self.day((c.acc_day + Days::new(1)).max(c.first_end), c.l);
        self.finish(dates, end);
        let due = self.day(c.acc_day, end - Days::new(1));
        dates.due = Some(self.deadline(due));
        if supplemented {
            self.supplement(dates, c.acc + chrono::Duration::hours(4), None, true);
        }
        self.resolved_status(dates)
    }

    /// Withdrawn or stopped in the quarter.
    fn ended_otherwise(&mut self, dates: &mut Dates, c: &Drawn, outcome: Outcome) -> u8 {
        let end = self.day(c.first_end, c.l);
        self.finish(dates, end);
        let due = c.acc_day + Days::new(self.rng.random_range(5..=20));
        dates.due = Some(self.deadline(due));
        if outcome == Outcome::Withdrawn {
            7
        } else {
            8
        }
    }

    /// Still in progress at the quarter's end (some ended just after it).
    fn in_progress(&mut self, dates: &mut Dates, c: &Drawn, outcome: Outcome) -> u8 {
        let due = if outcome == Outcome::InProgressOverdue {
            Some(self.day(c.acc_day, c.l - Days::new(1)))
        } else if self.rng.random_bool(0.1) {
            None
        } else {
            Some(self.day(c.l, c.l + Days::new(30)))
        };
        dates.due = due.map(|d| self.deadline(d));
        let r = self.rng.random::<f64>();
        if r < 0.15 {
            // ended, but only after L
            let end = self.day(c.l + Days::new(1), c.l + Days::new(20));
            self.finish(dates, end);
            self.resolved_status(dates)
        } else if r < 0.3 {
            let asked_day = self.day(c.acc_day, c.l);
            let asked = self
                .at(asked_day, 8, 16)
                .max(c.acc + chrono::Duration::hours(1));
            self.supplement(dates, asked, None, false);
            5
        } else if r < 0.35 {
            6
        } else if r < 0.55 {
            2
        } else {
            4
        }
    }

    /// Gives a drawn case an agency and a procedure of its level; an ended case sometimes
    /// gets an older, in-progress version served too.
    fn place(&mut self, cap: u8, channel: u8, status: u8, dates: Dates) -> Draft {
        let first = dates
            .sub
            .or(dates.acc)
            .or(dates.refused)
            .expect("a case has a date");
        let agency = self.weighted(cap, first.date());
        let procedure = self.procedure_at(cap);
        let with_older_version = status >= 7 && self.rng.random_bool(0.02);
        Draft {
            agency,
            first_agency: agency,
            transfers: vec![],
            procedure,
            channel,
            status,
            dates,
            with_older_version,
        }
    }

    /// Submitted on or before L and not accepted (nor refused) by L.
    fn draw_waiting(&mut self, cap: u8, l: NaiveDate) -> Draft {
        let mut dates = Dates::default();
        let status = if self.rng.random_bool(0.7) {
            let sub_day = self.day(l - Days::new(20), l);
            dates.sub = Some(self.at(sub_day, 0, 24));
            1
        } else {
            let sub_day = self.day(l - Days::new(5), l);
            dates.sub = Some(self.at(sub_day, 7, 20));
            let acc_day = self.day(l + Days::new(1), l + Days::new(3));
            dates.acc = Some(self.at(acc_day, 7, 17));
            dates.due = Some(self.deadline(acc_day + Days::new(10)));
            4
        };
        self.place(cap, 2, status, dates)
    }

    fn draw_refused(&mut self, cap: u8, from: NaiveDate, to: NaiveDate) -> Draft {
        let mut dates = Dates::default();
        let sub_day = self.day(from, to);
        let sub = self.at(sub_day, 7, 16);
        dates.sub = Some(sub);
        let ref_day = self.day(sub_day, (sub_day + Days::new(2)).min(to));
        dates.refused = Some(
            self.at(ref_day, 7, 18)
                .max(sub + chrono::Duration::minutes(20)),
        );
        let channel = if self.rng.random_bool(0.6) { 2 } else { 1 };
        self.place(cap, channel, 3, dates)
    }

    /// A case accepted in `from … to` that ended within that span too (or, when `open`, that
    /// may still be in progress at its end).
    fn draw_background(&mut self, cap: u8, from: NaiveDate, to: NaiveDate, open: bool) -> Draft {
        let mut dates = Dates::default();
        let acc_day = self.day(from, to);
        self.accept(&mut dates, acc_day);
        let due_in = self.rng.random_range(5..=20);
        dates.due = Some(self.deadline(acc_day + Days::new(due_in)));
        let status = if open && self.rng.random_bool(0.2) {
            4
        } else {
            // Most cases end by their deadline, as in the profiled quarter; a few run late.
            let took = if self.rng.random_bool(0.94) {
                self.rng.random_range(0..=due_in)
            } else {
                due_in + self.rng.random_range(1..=10)
            };
            let end = (acc_day + Days::new(took)).min(to.max(acc_day));
            self.finish(&mut dates, end);
            match self.rng.random_range(0..100) {
                0..=2 => 7,
                3..=5 => 8,
                _ => self.resolved_status(&mut dates),
            }
        };
        // Online about as often as in the profiled quarter.
        let channel = if self.rng.random_bool(0.6) {
            2
        } else if self.rng.random_bool(0.9) {
            1
        } else {
            3
        };
        self.place(cap, channel, status, dates)
    }

    /// The cases of one level of the profiled quarter: its outcomes, waiting and refused cases,
    /// and the cases around it in 2024.
    fn profiled(&mut self, p: LevelProfile, f: NaiveDate, l: NaiveDate) -> Vec<Draft> {
        let mut drafts = vec![];
        let n = |g: &Generator, x: u32| g.scaled(x);
        let mut outcomes: Vec<Outcome> = vec![];
        let mut push = |o: Outcome, k: u32| outcomes.extend(std::iter::repeat_n(o, k as usize));
        push(Outcome::Early, n(self, p.resolved_early));
        push(Outcome::OnTime, n(self, p.resolved_on_time));
        push(
            Outcome::Overdue { supplemented: true },
            n(self, p.overdue_supplemented),
        );
        push(
            Outcome::Overdue {
                supplemented: false,
            },
            n(self, p.resolved_overdue - p.overdue_supplemented),
        );
        push(Outcome::Withdrawn, n(self, p.withdrawn));
        push(Outcome::Stopped, n(self, p.stopped()));
        push(Outcome::InProgressWithin, n(self, p.in_progress_within));
        push(Outcome::InProgressOverdue, n(self, p.in_progress_overdue));
        outcomes.shuffle(&mut self.rng);
        let carried = (n(self, p.carried_over) as usize).min(outcomes.len());
        let new = outcomes.len() - carried;
        let online_n = (n(self, p.received_online) as usize).min(new);
        let mut online: Vec<bool> = (0..new).map(|i| i < online_n).collect();
        online.shuffle(&mut self.rng);
        for (i, o) in outcomes.into_iter().enumerate() {
            let is_carried = i < carried;
            let is_online = !is_carried && online[i - carried];
            let carried_online = is_carried && self.rng.random_bool(0.5);
            drafts.push(self.draw(p.cap, o, is_carried, is_online || carried_online, f, l));
        }
        for _ in 0..n(self, p.waiting) {
            drafts.push(self.draw_waiting(p.cap, l));
        }
        for _ in 0..n(self, p.refused) {
            drafts.push(self.draw_refused(p.cap, f, l));
        }
        drafts.extend(self.around(p, f, l));
        drafts
    }

    /// Around the profiled quarter, in 2024: cases that ended before F, and that arrived after L.
    fn around(&mut self, p: LevelProfile, f: NaiveDate, l: NaiveDate) -> Vec<Draft> {
        let mut drafts = vec![];
        let share = p.received_new as f64 / 106_071.0;
        for _ in 0..self.scaled((24_000.0 * share) as u32) {
            drafts.push(self.draw_background(p.cap, d(2024, 3, 1), f - Days::new(1), false));
        }
        for _ in 0..self.scaled((1_500.0 * share) as u32) {
            drafts.push(self.draw_refused(p.cap, d(2024, 3, 1), f - Days::new(1)));
        }
        for _ in 0..self.scaled((24_000.0 * share) as u32) {
            let from = l + Days::new(1);
            let mut dr = self.draw_background(p.cap, from, d(2024, 12, 31), true);
            // Submitted after L too, so it never waits at L.
            if let (Some(acc), Some(sub)) = (dr.dates.acc, dr.dates.sub) {
                if sub.date() <= l {
                    dr.dates.sub = Some(acc);
                }
            }
            drafts.push(dr);
        }
        drafts
    }

    /// The demo province: agencies, catalog and case records, in a shuffled table order. The
    /// profiled quarter and 2024 around it come first; then its open cases settle in the
    /// quarters after, the province lives through 2025 and 2026, and the cases an agency holds
    /// when the 2025 restructuring ends it are handed over.
    pub fn dataset(mut self) -> Dataset {
        let mut records: Vec<Value> = vec![];
        self.emit_all(&mut |v| records.push(v));
        records.shuffle(&mut self.rng);
        Dataset {
            agencies: province::agencies_json(&self.agencies),
            procedures: self.procedures_json(),
            cases: records,
        }
    }

    /// Every record of the province, in the order drawn, to `sink` one at a time (nothing is
    /// held but the drafts).
    pub fn emit_all(&mut self, sink: &mut dyn FnMut(Value)) {
        let (f, l) = (d(2024, 6, 15), d(2024, 9, 14));
        let mut drafts: Vec<Draft> = vec![];
        for p in PROFILE {
            let mut level = self.profiled(p, f, l);
            drafts.append(&mut level);
        }
        for dr in drafts.iter_mut() {
            self.settle(dr, l);
        }
        let mut later = self.later_years();
        drafts.append(&mut later);
        for (i, dr) in drafts.iter_mut().enumerate() {
            self.hand_over(dr, i);
        }
        let mut out: Vec<Value> = vec![];
        for (i, mut draft) in drafts.into_iter().enumerate() {
            // A handful of old, ended cases from an agency the catalog no longer lists.
            let unlisted = i % 9973 == 17 && draft.dates.processed.is_some_and(|p| p.date() < f);
            if unlisted {
                draft.with_older_version = false;
            }
            self.emit(&draft, unlisted, &mut out);
            out.drain(..).for_each(&mut *sink);
        }
        if self.unusable {
            self.emit_unusable(&mut out);
            out.drain(..).for_each(&mut *sink);
        }
    }

    /// `n` cases received on `day` (after the province's horizon: they are open), for a night
    /// of the demo source, with serial numbers from `serial`.
    pub fn new_cases(
        &mut self,
        day: NaiveDate,
        n: usize,
        serial: u64,
        sink: &mut dyn FnMut(Value),
    ) {
        self.serial = serial;
        let mut out = vec![];
        for i in 0..n {
            let cap = if i % 20 < 7 { 1 } else { 3 };
            let mut dr = self.draw_flowing(cap, day, day);
            dr.with_older_version = false;
            self.emit(&dr, false, &mut out);
            out.drain(..).for_each(&mut *sink);
        }
    }

    fn procedures_json(&self) -> Vec<Value> {
        self.procedures
            .iter()
            .map(|p| {
                json!({
                    "MaTTHC": p.code,
                    "TenTTHC": p.name,
                    "MaLinhVuc": FIELDS[p.field].0,
                    "TenLinhVuc": FIELDS[p.field].1,
                    "CapThucHien": p.levels.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
                    "MucDoDVC": p.online.to_string(),
                    "MotCua": "1",
                    "LienThong": if p.inter_agency { "1" } else { "0" },
                })
            })
            .collect()
    }

    // --- writing records, with every odd shape a real server sends --------------------------

    fn absent(&mut self) -> Value {
        if self.rng.random_bool(0.5) {
            json!("")
        } else {
            Value::Null
        }
    }

    fn date_value(&mut self, t: Option<NaiveDateTime>, full_only: bool) -> Value {
        let Some(t) = t else { return self.absent() };
        let r = self.rng.random::<f64>();
        let s = if r < 0.85 {
            t.format("%Y%m%d%H%M%S").to_string()
        } else if r < 0.90 {
            t.format("%d/%m/%Y %H:%M:%S").to_string()
        } else if r < 0.93 && !full_only {
            t.format("%d/%m/%Y").to_string()
        } else if r < 0.97 {
            t.format("%Y-%m-%dT%H:%M:%S+07:00").to_string()
        } else {
            let utc = Ho_Chi_Minh
                .from_local_datetime(&t)
                .single()
                .expect("no DST in Vietnam")
                .naive_utc();
            utc.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        };
        json!(s)
    }

    fn enum_value(&mut self, code: u8) -> Value {
        if self.rng.random_bool(0.1) {
            json!(code)
        } else {
            json!(code.to_string())
        }
    }

    fn text_value(&mut self, s: &str) -> Value {
        let r = self.rng.random::<f64>();
        if r < 0.05 {
            json!(s.nfd().collect::<String>())
        } else if r < 0.08 {
            json!(format!("  {s} "))
        } else {
            json!(s)
        }
    }

    fn person(&mut self) -> String {
        let f = FAMILY[self.rng.random_range(0..FAMILY.len())];
        let m = MIDDLE[self.rng.random_range(0..MIDDLE.len())];
        let g = GIVEN[self.rng.random_range(0..GIVEN.len())];
        format!("{f} {m} {g}")
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.rng.random_range(0..10u8)))
            .collect()
    }

    /// Writes a drafted case as its record (and, now and then, an older version, a duplicate or
    /// an unusable newer version), with every odd shape a real server sends.
    fn emit(&mut self, dr: &Draft, unlisted: bool, out: &mut Vec<Value>) {
        self.serial += 1;
        let last_change = dr
            .transfers
            .iter()
            .map(|t| t.0)
            .fold(dr.dates.latest(), |a, b| a.max(b));
        let updated = last_change + chrono::Duration::minutes(self.rng.random_range(5..=180));
        let mut rec = Map::new();
        self.what(&mut rec, dr, unlisted);
        self.who(&mut rec, dr);
        self.when(&mut rec, dr, updated);
        self.lists(&mut rec, dr);
        self.versions(Value::Object(rec), dr, updated, out);
    }

    /// The case, its agency, procedure, field, channel and applicant kind.
    fn what(&mut self, rec: &mut Map<String, Value>, dr: &Draft, unlisted: bool) {
        let (agency, first_agency) = match unlisted {
            true => (UNLISTED_AGENCY.to_string(), UNLISTED_AGENCY.to_string()),
            false => (
                self.agencies[dr.agency].code.clone(),
                self.agencies[dr.first_agency].code.clone(),
            ),
        };
        let first = dr
            .dates
            .sub
            .or(dr.dates.acc)
            .expect("submitted or accepted");
        let mut key = format!(
            "{first_agency}-{}-{:06}",
            first.format("%y%m%d"),
            self.serial
        );
        if self.rng.random_bool(0.01) {
            key = format!(" {key}  ");
        }
        let proc_ = &self.procedures[dr.procedure];
        let (proc_code, proc_name, field) = (proc_.code.clone(), proc_.name.clone(), proc_.field);
        let agency_name = if unlisted {
            "Chi cục (đã giải thể)"
        } else {
            ""
        };
        rec.insert("MaHoSo".into(), json!(key));
        rec.insert("MaDonVi".into(), json!(agency));
        rec.insert("DonViXuLy".into(), self.text_value(agency_name));
        rec.insert("MaTTHC".into(), json!(proc_code));
        rec.insert("TenTTHC".into(), self.text_value(&proc_name));
        rec.insert("MaLinhVuc".into(), json!(FIELDS[field].0));
        rec.insert("TenLinhVuc".into(), self.text_value(FIELDS[field].1));
        let ch = self.enum_value(dr.channel);
        rec.insert("KenhThucHien".into(), ch);
        let kind = self.rng.random_range(1..=4);
        let kind = self.enum_value(kind);
        rec.insert("LoaiDoiTuong".into(), kind);
    }

    /// The applicant: personal data, which motcua must never let out of `raw/`.
    fn who(&mut self, rec: &mut Map<String, Value>, dr: &Draft) {
        let applicant = self.person();
        let id_number = format!("046{}{}", self.rng.random_range(0..4), self.digits(8));
        let phone = format!(
            "0{}{}",
            [3, 5, 7, 8, 9][self.rng.random_range(0..5)],
            self.digits(8)
        );
        rec.insert("ChuHoSo".into(), json!(applicant));
        rec.insert("SoGiayToChuHoSo".into(), json!(id_number));
        rec.insert("SoDienThoai".into(), json!(phone));
        let email = if self.rng.random_bool(0.3) {
            json!(format!("nguoidan{}@example.vn", self.serial))
        } else {
            self.absent()
        };
        rec.insert("Email".into(), email);
        let village = self.rng.random_range(1..=12);
        rec.insert(
            "DiaChi".into(),
            json!(format!("Thôn {village}, Thừa Thiên Huế")),
        );
        let proc_name = &self.procedures[dr.procedure].name;
        rec.insert(
            "TrichYeuHoSo".into(),
            json!(format!("{proc_name} cho ông/bà {applicant}")),
        );
    }

    /// The dates, the status, the last modification and the two flags.
    fn when(&mut self, rec: &mut Map<String, Value>, dr: &Draft, updated: NaiveDateTime) {
        for (k, v) in [
            ("NgayNopHoSo", dr.dates.sub),
            ("NgayTiepNhan", dr.dates.acc),
            ("NgayHenTra", dr.dates.due),
            ("NgayKetThucXuLy", dr.dates.processed),
            ("NgayTra", dr.dates.returned),
            ("NgayTuChoi", dr.dates.refused),
        ] {
            let v = self.date_value(v, false);
            rec.insert(k.into(), v);
        }
        let st = self.enum_value(dr.status);
        rec.insert("TrangThaiHoSo".into(), st);
        let upd = self.date_value(Some(updated), true);
        rec.insert("NgayCapNhat".into(), upd);
        let paid = dr.channel == 2 && self.rng.random_bool(0.35);
        rec.insert(
            "DuocThanhToanTrucTuyen".into(),
            json!(if paid { "1" } else { "0" }),
        );
        let digitized = self.rng.random_bool(0.5);
        rec.insert(
            "HoSoCoThanhPhanSoHoa".into(),
            json!(if digitized { "1" } else { "0" }),
        );
    }

    /// Supplement requests, hand-overs (often an empty list, sometimes absent) and the
    /// processing steps (with the handler's name: personal data).
    fn lists(&mut self, rec: &mut Map<String, Value>, dr: &Draft) {
        let mut sups = vec![];
        for (asked, got, new_due) in dr.dates.supplements.clone() {
            let a = self.date_value(Some(asked), false);
            let b = self.date_value(got, false);
            let c = self.date_value(new_due, false);
            sups.push(json!({"NgayYeuCauBoSung": a, "NgayBoSung": b, "NgayHenTraMoi": c}));
        }
        rec.insert("DanhSachHoSoBoSung".into(), Value::Array(sups));
        let mut moves = vec![];
        for (at, from, to) in dr.transfers.clone() {
            let at = self.date_value(Some(at), true);
            moves.push(json!({"MaDonViCu": self.agencies[from].code, "MaDonViMoi": self.agencies[to].code, "NgayChuyen": at}));
        }
        if !moves.is_empty() || self.rng.random_bool(0.3) {
            rec.insert("DanhSachChuyenDonVi".into(), Value::Array(moves));
        }
        let handler = self.person();
        let mut steps = vec![];
        if let Some(acc) = dr.dates.acc {
            steps.push(json!({"ThoiDiemXuLy": acc.format("%Y%m%d%H%M%S").to_string(), "TrangThai": "2", "NguoiXuLy": handler, "PhongBanXuLy": "Bộ phận một cửa", "NoiDungXuLy": "Tiếp nhận hồ sơ"}));
        }
        rec.insert("QuaTrinhXuLy".into(), Value::Array(steps));
    }

    /// The record, and now and then an older version before it, a duplicate, or a newer
    /// version that is unusable (rejected; this one still counts).
    fn versions(&mut self, rec: Value, dr: &Draft, updated: NaiveDateTime, out: &mut Vec<Value>) {
        let stamp = |t: NaiveDateTime| json!(t.format("%Y%m%d%H%M%S").to_string());
        if let (true, Some(acc)) = (dr.with_older_version, dr.dates.acc) {
            // An older version: still being processed, updated a minute after acceptance.
            let mut old = rec.clone();
            old["TrangThaiHoSo"] = json!("4");
            old["NgayKetThucXuLy"] = json!("");
            old["NgayTra"] = json!("");
            old["NgayCapNhat"] = stamp(acc + chrono::Duration::minutes(1));
            out.push(old);
        }
        let r = self.rng.random::<f64>();
        if r < 0.003 {
            out.push(rec.clone()); // served twice
        } else if r < 0.0035 {
            let mut broken = rec.clone();
            broken["NgayCapNhat"] = stamp(updated + chrono::Duration::days(1));
            broken["NgayTra"] = json!("32/13/2024 10:00:00");
            out.push(broken);
        }
        out.push(rec);
    }

    /// Records that break each reject rule of kpi.md, four of each.
    fn emit_unusable(&mut self, out: &mut Vec<Value>) {
        let base = json!({
            "MaHoSo": "", "MaDonVi": "000.00.01.H57", "MaTTHC": "1.001000", "KenhThucHien": "1",
            "ChuHoSo": "Lê Thị Lỗi", "SoGiayToChuHoSo": "046199999999", "SoDienThoai": "0999999999",
            "NgayNopHoSo": "20240801080000", "NgayTiepNhan": "20240801090000", "NgayHenTra": "20240810170000",
            "NgayKetThucXuLy": "20240805090000", "NgayTra": "", "NgayTuChoi": "", "TrangThaiHoSo": "9",
            "NgayCapNhat": "20240805100000", "DanhSachHoSoBoSung": [],
        });
        for k in 0..4 {
            let id = |rule: &str| json!(format!("000.00.01.H57-LOI-{rule}-{k}"));
            let mut v = vec![];
            let mut r = base.clone();
            r["MaHoSo"] = json!(null);
            v.push(r);
            let mut r = base.clone();
            r["MaHoSo"] = id("donvi");
            r["MaDonVi"] = json!("");
            v.push(r);
            let mut r = base.clone();
            r["MaHoSo"] = id("capnhat");
            r["NgayCapNhat"] = json!("");
            v.push(r);
            let mut r = base.clone();
            r["MaHoSo"] = id("ngay");
            r["NgayTiepNhan"] = json!("2024/08/01 09:00");
            v.push(r);
            let mut r = base.clone();
            r["MaHoSo"] = id("trangthai");
            r["TrangThaiHoSo"] = json!(12);
            v.push(r);
            let mut r = base.clone();
            r["MaHoSo"] = id("tiepnhan");
            r["TrangThaiHoSo"] = json!("4");
            r["NgayTiepNhan"] = json!("");
            r["NgayKetThucXuLy"] = json!("");
            v.push(r);
            let mut r = base.clone();
            r["MaHoSo"] = id("ketthuc");
            r["NgayKetThucXuLy"] = json!(null);
            v.push(r);
            let mut r = base.clone();
            r["MaHoSo"] = id("nop");
            r["TrangThaiHoSo"] = json!("1");
            r["NgayNopHoSo"] = json!("");
            r["NgayTiepNhan"] = json!("");
            r["NgayKetThucXuLy"] = json!("");
            v.push(r);
            let mut r = base.clone();
            r["MaHoSo"] = id("tuchoi");
            r["TrangThaiHoSo"] = json!("3");
            r["NgayTiepNhan"] = json!("");
            r["NgayKetThucXuLy"] = json!("");
            v.push(r);
            let mut r = base.clone();
            r["MaHoSo"] = id("truoc");
            r["NgayKetThucXuLy"] = json!("20240720090000");
            v.push(r);
            out.extend(v);
        }
    }
}

/// A generator for the new cases of night `night` of the province of `seed` at `scale`: the same
/// agencies and catalog, draws of its own.
pub fn for_night(seed: u64, scale: f64, night: u64) -> Generator {
    let mut g = Generator::new(seed, scale);
    g.rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4E49_4748_5400_0000 ^ night);
    g.unusable = false;
    g
}

/// How a province of `scale` is drawn: in how many parts, each of which scale — parts of at
/// most 1 (up to 1, one part: the province of [`generate`] exactly; a whole scale, that many
/// copies of the profiled quarter, so its figures are exact multiples).
pub fn parts(scale: f64) -> (usize, f64) {
    let parts = scale.ceil().max(1.0) as usize;
    (parts, scale / parts as f64)
}

/// Part `part` of a province drawn in parts: the agencies and catalog of `seed` (returned, no
/// cases), and its case records to `sink` in the order drawn: cases of their own (serial numbers
/// from `part` × 10⁸, so no case id repeats across parts), the unusable records in part 0 only.
pub fn generate_part(seed: u64, scale: f64, part: u64, sink: &mut dyn FnMut(Value)) -> Dataset {
    let mut g = Generator::new(seed, scale);
    if part > 0 {
        g.rng = ChaCha8Rng::seed_from_u64(seed ^ part.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        g.serial = part * 100_000_000;
        g.unusable = false;
    }
    g.emit_all(sink);
    Dataset {
        agencies: province::agencies_json(&g.agencies),
        procedures: g.procedures_json(),
        cases: vec![],
    }
}

/// The demo province for `seed` at `scale` (1.0 ≈ 240 thousand records), in a shuffled order.
pub fn generate(seed: u64, scale: f64) -> Dataset {
    Generator::new(seed, scale).dataset()
}

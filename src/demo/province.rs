//! The demo province's agencies, as they were and as they are (`agencies.md`): 21 departments,
//! 9 districts and 141 communes in 2024, then
//!
//! - **1 January 2025**: the city district (UBND thành phố Huế) is split into the districts of
//!   Thuận Hóa and Phú Xuân, which take its cases;
//! - **1 March 2025**: departments merge — Kế hoạch và Đầu tư into Tài chính, Giao thông vận
//!   tải into Xây dựng, Tài nguyên và Môi trường with Nông nghiệp và Phát triển nông thôn into
//!   a new Sở Nông nghiệp và Môi trường, Lao động - Thương binh và Xã hội into Nội vụ, Thông tin
//!   và Truyền thông into Khoa học và Công nghệ;
//! - **1 July 2025**: the district level ends; the 141 communes become 40 communes and wards
//!   (some old communes split across two new ones: the first takes their cases); a district's
//!   cases go to the ward of its seat, or to the provincial service centre.

use chrono::NaiveDate;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

/// A demo agency and its history.
pub struct Agency {
    pub code: String,
    pub name: String,
    pub cap: u8,
    pub parent: String,
    pub weight: f64,
    pub valid_from: Option<NaiveDate>,
    pub valid_to: Option<NaiveDate>,
    /// Indices of the agencies that take its cases when it ends, the main one first.
    pub successors: Vec<usize>,
}

impl Agency {
    pub fn valid_on(&self, day: NaiveDate) -> bool {
        self.valid_from.is_none_or(|f| f <= day) && self.valid_to.is_none_or(|t| day < t)
    }
}

pub fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).unwrap_or_default()
}

/// The city district is split.
pub fn regrouping() -> NaiveDate {
    d(2025, 1, 1)
}

/// Departments merge.
pub fn mergers() -> NaiveDate {
    d(2025, 3, 1)
}

/// The district level ends; communes merge.
pub fn two_levels() -> NaiveDate {
    d(2025, 7, 1)
}

pub const DEPARTMENTS: [&str; 21] = [
    "Sở Tư pháp",
    "Sở Công Thương",
    "Sở Kế hoạch và Đầu tư",
    "Sở Tài chính",
    "Sở Xây dựng",
    "Sở Giao thông vận tải",
    "Sở Tài nguyên và Môi trường",
    "Sở Nông nghiệp và Phát triển nông thôn",
    "Sở Y tế",
    "Sở Giáo dục và Đào tạo",
    "Sở Lao động - Thương binh và Xã hội",
    "Sở Văn hóa và Thể thao",
    "Sở Du lịch",
    "Sở Thông tin và Truyền thông",
    "Sở Khoa học và Công nghệ",
    "Sở Nội vụ",
    "Sở Ngoại vụ",
    "Ban Quản lý Khu kinh tế, công nghiệp tỉnh",
    "Ban Dân tộc",
    "Trung tâm Phục vụ hành chính công tỉnh",
    "Công an tỉnh",
];

/// The provincial service centre (department 20), which takes some district procedures.
const SERVICE_CENTRE: usize = 19;

/// The March 2025 mergers: (department, the department that takes it over), 1-based.
const MERGED: [(usize, usize); 6] = [(3, 4), (6, 5), (7, 22), (8, 22), (11, 16), (14, 15)];

/// The districts and how many communes each has (141 in all).
pub const DISTRICTS: [(&str, u32); 9] = [
    ("UBND thành phố Huế", 27),
    ("UBND thị xã Hương Thủy", 12),
    ("UBND thị xã Hương Trà", 14),
    ("UBND huyện Phong Điền", 15),
    ("UBND huyện Quảng Điền", 10),
    ("UBND huyện Phú Vang", 17),
    ("UBND huyện Phú Lộc", 16),
    ("UBND huyện A Lưới", 18),
    ("UBND huyện Nam Đông", 12),
];

const PLACE_A: [&str; 16] = [
    "Phú",
    "Hương",
    "Thủy",
    "Quảng",
    "Phong",
    "Vinh",
    "Lộc",
    "Hồng",
    "Điền",
    "Hải",
    "Thượng",
    "Xuân",
    "Bình",
    "Tân",
    "Long",
    "An",
];
const PLACE_B: [&str; 16] = [
    "An", "Bình", "Hòa", "Xuân", "Lợi", "Thạnh", "Mỹ", "Sơn", "Phong", "Vân", "Thọ", "Hiền", "Lâm",
    "Dương", "Châu", "Tiến",
];

/// The communes and wards of the two-level province.
const NEW_COMMUNES: usize = 40;
/// Of them, the first are wards.
const NEW_WARDS: usize = 21;

/// Indices into the agency list of each kind.
pub struct Layout {
    pub departments: Vec<usize>,
    pub districts: Vec<usize>,
    /// The communes of each district, in order.
    pub communes: Vec<Vec<usize>>,
    pub new_communes: Vec<usize>,
}

/// Every agency the demo province ever had, with its history.
pub fn agencies(rng: &mut ChaCha8Rng) -> (Vec<Agency>, Layout) {
    let mut out = vec![];
    let mut layout = Layout {
        departments: vec![],
        districts: vec![],
        communes: vec![],
        new_communes: vec![],
    };
    let agency = |code: String, name: String, cap: u8, parent: &str, weight: f64| Agency {
        code,
        name,
        cap,
        parent: parent.to_string(),
        weight,
        valid_from: None,
        valid_to: None,
        successors: vec![],
    };
    for (i, name) in DEPARTMENTS.iter().enumerate() {
        // A few departments (justice, planning, construction…) take most cases.
        let weight = 1.0 / (1.0 + i as f64 * 0.35);
        layout.departments.push(out.len());
        out.push(agency(
            format!("000.00.{:02}.H57", i + 1),
            name.to_string(),
            1,
            "",
            weight,
        ));
    }
    let mut commune = 0usize;
    for (di, (name, communes)) in DISTRICTS.iter().enumerate() {
        let weight = if di == 0 { 2.5 } else { 1.0 };
        let code = format!("000.{:02}.00.H57", di + 1);
        layout.districts.push(out.len());
        out.push(agency(code.clone(), name.to_string(), 2, "", weight));
        let mut mine = vec![];
        for ci in 0..*communes {
            let kind = if di <= 2 { "phường" } else { "xã" };
            let name = format!(
                "UBND {kind} {} {}",
                PLACE_A[commune % 16],
                PLACE_B[(commune / 16 + commune) % 16]
            );
            commune += 1;
            mine.push(out.len());
            let weight = 0.5 + rng.random::<f64>();
            out.push(agency(
                format!("{:03}.{:02}.00.H57", 101 + ci, di + 1),
                name,
                3,
                &code,
                weight,
            ));
        }
        layout.communes.push(mine);
    }
    restructure(&mut out, &mut layout, rng);
    (out, layout)
}

/// An agency of 2025 that exists from `from` (until `to`).
fn new(
    code: &str,
    name: &str,
    cap: u8,
    from: NaiveDate,
    to: Option<NaiveDate>,
    weight: f64,
) -> Agency {
    Agency {
        code: code.into(),
        name: name.into(),
        cap,
        parent: String::new(),
        weight,
        valid_from: Some(from),
        valid_to: to,
        successors: vec![],
    }
}

/// Adds the agencies of 2025 and gives every agency its validity and successors.
fn restructure(out: &mut Vec<Agency>, layout: &mut Layout, rng: &mut ChaCha8Rng) {
    merge_departments(out, layout);
    two_level_communes(out, layout, rng);
    let centre = layout.departments[SERVICE_CENTRE];
    for (di, district) in layout.districts.clone().into_iter().enumerate() {
        let seat = out[layout.communes[di][0]].successors[0];
        let a = &mut out[district];
        a.valid_to = Some(two_levels());
        a.successors = vec![seat, centre];
    }
    split_city(out, layout, centre);
}

/// 1 March 2025: the department mergers.
fn merge_departments(out: &mut Vec<Agency>, layout: &Layout) {
    let farming = out.len();
    out.push(new(
        "000.00.22.H57",
        "Sở Nông nghiệp và Môi trường",
        1,
        mergers(),
        None,
        0.5,
    ));
    for (gone, into) in MERGED {
        let into = if into == 22 {
            farming
        } else {
            layout.departments[into - 1]
        };
        let a = &mut out[layout.departments[gone - 1]];
        a.valid_to = Some(mergers());
        a.successors = vec![into];
    }
}

/// 1 July 2025: 40 communes and wards take over the 141 communes (some split across two).
fn two_level_communes(out: &mut Vec<Agency>, layout: &mut Layout, rng: &mut ChaCha8Rng) {
    for k in 0..NEW_COMMUNES {
        let kind = if k < NEW_WARDS { "phường" } else { "xã" };
        let name = format!(
            "UBND {kind} {} {}",
            PLACE_B[k % 16],
            PLACE_A[(k * 7 + 3) % 16]
        );
        let code = format!("{:03}.00.00.H57", 301 + k);
        layout.new_communes.push(out.len());
        out.push(new(
            &code,
            &name,
            3,
            two_levels(),
            None,
            1.0 + rng.random::<f64>(),
        ));
    }
    let old: Vec<usize> = layout.communes.iter().flatten().copied().collect();
    for (k, c) in old.iter().enumerate() {
        let main = k * NEW_COMMUNES / old.len();
        let a = &mut out[*c];
        a.valid_to = Some(two_levels());
        a.successors = vec![layout.new_communes[main]];
        if k % 10 == 5 {
            // Split across two new communes: the first takes the cases.
            a.successors
                .push(layout.new_communes[(main + 1) % NEW_COMMUNES]);
        }
    }
}

/// 1 January 2025: the city district is split in two, which end on 1 July too.
fn split_city(out: &mut Vec<Agency>, layout: &mut Layout, centre: usize) {
    let city = layout.districts[0];
    let halves = layout.communes[0].len() / 2;
    let mut split = vec![];
    for (half, name) in ["UBND quận Thuận Hóa", "UBND quận Phú Xuân"]
        .iter()
        .enumerate()
    {
        let seat = out[layout.communes[0][half * halves]].successors[0];
        split.push(out.len());
        let code = format!("000.{:02}.00.H57", 10 + half);
        let mut a = new(&code, name, 2, regrouping(), Some(two_levels()), 1.25);
        a.successors = vec![seat, centre];
        out.push(a);
    }
    out[city].valid_to = Some(regrouping());
    out[city].successors = split.clone();
    for (k, c) in layout.communes[0].iter().enumerate() {
        out[*c].parent = out[split[usize::from(k >= halves)]].code.clone();
    }
    layout.districts.extend(split);
}

/// `/v1/donvi`: every agency with its history, in the shapes a real server sends (`Cap` a
/// number or a string, validity mostly `yyyyMMdd`, now and then `dd/MM/yyyy`).
pub fn agencies_json(agencies: &[Agency]) -> Vec<Value> {
    agencies
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let cap: Value = if a.cap == 2 && i % 2 == 0 { json!(2) } else { json!(a.cap.to_string()) };
            let day = |d: Option<NaiveDate>| match d {
                Some(d) if i % 13 == 7 => d.format("%d/%m/%Y").to_string(),
                Some(d) => d.format("%Y%m%d").to_string(),
                None => String::new(),
            };
            let successors: Vec<&str> = a.successors.iter().map(|s| agencies[*s].code.as_str()).collect();
            json!({"MaDonVi": a.code, "TenDonVi": a.name, "Cap": cap, "MaDonViCha": a.parent,
                   "HieuLucTu": day(a.valid_from), "HieuLucDen": day(a.valid_to), "MaDonViKeThua": successors})
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_province_before_and_after_2025() {
        let (a, layout) = agencies(&mut ChaCha8Rng::seed_from_u64(1));
        let valid =
            |day: NaiveDate, cap: u8| a.iter().filter(|x| x.cap == cap && x.valid_on(day)).count();
        let before = d(2024, 9, 1);
        assert_eq!(
            (valid(before, 1), valid(before, 2), valid(before, 3)),
            (21, 9, 141)
        );
        let between = d(2025, 5, 1);
        assert_eq!(
            (valid(between, 1), valid(between, 2), valid(between, 3)),
            (16, 10, 141)
        );
        let after = d(2026, 1, 1);
        assert_eq!(
            (valid(after, 1), valid(after, 2), valid(after, 3)),
            (16, 0, 40)
        );
        // Every agency that ends hands over to agencies that exist the day it ends.
        for x in &a {
            if let Some(t) = x.valid_to {
                assert!(!x.successors.is_empty(), "{}", x.code);
                assert!(x.successors.iter().all(|s| a[*s].valid_on(t)), "{}", x.code);
            }
        }
        assert_eq!(layout.new_communes.len(), 40);
        let split = a
            .iter()
            .filter(|x| x.cap == 3 && x.successors.len() == 2)
            .count();
        assert!(split >= 10, "some old communes are split: {split}");
        let json = agencies_json(&a);
        assert_eq!(json.len(), a.len());
        assert!(json
            .iter()
            .any(|j| j["HieuLucDen"].as_str().is_some_and(|s| s.contains('/'))));
    }
}

//! Agencies (`/v1/donvi`) and the procedure catalog (`/v1/tthc`), read from their JSON trees
//! in any shape `source-api.md` allows.

use serde_json::Value;

pub use crate::domain::agency::Agency;
use crate::wire::{enum_code, flag, parse_date, text};

/// What reading `/v1/donvi` gave.
#[derive(Debug, Default)]
pub struct ReadAgencies {
    pub agencies: Vec<Agency>,
    /// Entries without `MaDonVi`, or repeating one.
    pub skipped: u64,
    /// Validity dates that read as no date: `(agency, field, value as served)`; the field is
    /// taken as absent.
    pub unreadable: Vec<(String, String, String)>,
}

/// Reads `/v1/donvi` entries (`agencies.md`: validity dates in any date shape, successors as
/// an array or a comma-separated string); an entry without `MaDonVi` is skipped and counted,
/// a repeated code keeps its first entry.
pub fn agencies(data: &[Value]) -> ReadAgencies {
    let mut seen = std::collections::HashSet::new();
    let mut out = ReadAgencies::default();
    for d in data {
        let Some(code) = text(d.get("MaDonVi")) else {
            out.skipped += 1;
            continue;
        };
        if !seen.insert(code.clone()) {
            out.skipped += 1;
            continue;
        }
        let mut date = |field: &str| {
            let v = text(d.get(field))?;
            let day = parse_date(&v);
            if day.is_none() {
                out.unreadable.push((code.clone(), field.to_string(), v));
            }
            day
        };
        let (valid_from, valid_to) = (date("HieuLucTu"), date("HieuLucDen"));
        out.agencies.push(Agency {
            name: text(d.get("TenDonVi")),
            cap: enum_code(d.get("Cap")).unwrap_or(None),
            parent: text(d.get("MaDonViCha")),
            valid_from,
            valid_to,
            successors: codes(d.get("MaDonViKeThua")),
            code,
        });
    }
    out
}

/// A list of codes: an array, or `"A, B"`; empty entries dropped.
fn codes(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items.iter().filter_map(|i| text(Some(i))).collect(),
        other => text(other)
            .map(|s| {
                s.split([',', ';'])
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// A procedure of `/v1/tthc`.
#[derive(Debug, Clone, PartialEq)]
pub struct Procedure {
    pub code: String,
    pub name: Option<String>,
    pub field_code: Option<String>,
    pub field_name: Option<String>,
    /// `CapThucHien`: the levels (1, 2, 3) that handle it.
    pub levels: Vec<i32>,
    /// `MucDoDVC`: 2 full online, 1 partly online, 0 none.
    pub online: Option<i32>,
    pub one_stop: bool,
    pub inter_agency: bool,
}

/// Reads `/v1/tthc` entries (`CapThucHien` as an array of strings or numbers, or `"1,2"`).
pub fn procedures(data: &[Value]) -> (Vec<Procedure>, u64) {
    let mut seen = std::collections::HashSet::new();
    let mut out = vec![];
    let mut skipped = 0;
    for d in data {
        let Some(code) = text(d.get("MaTTHC")) else {
            skipped += 1;
            continue;
        };
        if !seen.insert(code.clone()) {
            skipped += 1;
            continue;
        }
        let mut levels: Vec<i32> = match d.get("CapThucHien") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| enum_code(Some(v)).ok().flatten())
                .collect(),
            other => text(other)
                .map(|s| {
                    s.split([',', ';', ' '])
                        .filter_map(|p| p.trim().parse().ok())
                        .collect()
                })
                .unwrap_or_default(),
        };
        levels.sort_unstable();
        levels.dedup();
        out.push(Procedure {
            code,
            name: text(d.get("TenTTHC")),
            field_code: text(d.get("MaLinhVuc")),
            field_name: text(d.get("TenLinhVuc")),
            levels,
            online: enum_code(d.get("MucDoDVC")).unwrap_or(None),
            one_stop: flag(d.get("MotCua")).unwrap_or(false),
            inter_agency: flag(d.get("LienThong")).unwrap_or(false),
        });
    }
    (out, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn catalog_entries_in_every_shape() {
        let read = agencies(&[
            json!({"MaDonVi":" X ","TenDonVi":"Sở A","Cap":1,"MaDonViCha":""}),
            json!({"MaDonVi":"X","TenDonVi":"again"}),
            json!({"TenDonVi":"no code"}),
            json!({"MaDonVi":"Y","Cap":"x","HieuLucTu":"","HieuLucDen":"20250701","MaDonViKeThua":["Z", "", "W"]}),
            json!({"MaDonVi":"Z","HieuLucTu":"01/07/2025","MaDonViKeThua":"W, V"}),
            json!({"MaDonVi":"V","HieuLucDen":"soon","MaDonViKeThua":null}),
        ]);
        assert_eq!(read.skipped, 2);
        let a = &read.agencies;
        assert_eq!(
            a[0],
            Agency {
                code: "X".into(),
                name: Some("Sở A".into()),
                cap: Some(1),
                ..Default::default()
            }
        );
        assert_eq!(a[1].cap, None);
        assert_eq!(
            (a[1].valid_from, a[1].valid_to),
            (None, "2025-07-01".parse().ok())
        );
        assert_eq!(a[1].successors, ["Z", "W"]);
        assert_eq!(a[2].valid_from, "2025-07-01".parse().ok());
        assert_eq!(a[2].successors, ["W", "V"]);
        assert_eq!(a[3].valid_to, None);
        assert_eq!(
            read.unreadable,
            [(
                "V".to_string(),
                "HieuLucDen".to_string(),
                "soon".to_string()
            )]
        );
        let (p, skipped) = procedures(&[
            json!({"MaTTHC":"1.1","CapThucHien":["3",1,"1"],"MucDoDVC":2,"MotCua":"1","LienThong":0}),
            json!({"MaTTHC":"1.2","CapThucHien":"1, 2"}),
            json!({"MaTTHC":""}),
        ]);
        assert_eq!(skipped, 1);
        assert_eq!(p[0].levels, [1, 3]);
        assert_eq!(
            (p[0].online, p[0].one_stop, p[0].inter_agency),
            (Some(2), true, false)
        );
        assert_eq!(p[1].levels, [1, 2]);
    }
}

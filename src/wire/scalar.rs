//! The shapes a value arrives in (`source-api.md`, "Values in other shapes than the
//! contract"): strings or numbers for enums, `null` for `""`, text in NFD or with stray
//! spaces, dates in four shapes. Each reader takes what the source may send and says what it
//! could not read.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

use super::time::parse_instant;

/// A value of a record as served: a string (borrowed from the body when it has no escapes), a
/// number, a boolean, or an array or object (kept as its JSON text). `null` and absent are
/// `None` wherever a `Scalar` is optional.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Str(Cow<'a, str>),
    Num(serde_json::Number),
    Bool(bool),
    Other(String),
}

impl<'a> Scalar<'a> {
    /// The scalar of a parsed JSON value (`None` for absent and `null`).
    pub fn of(v: Option<&'a Value>) -> Option<Scalar<'a>> {
        Some(match v? {
            Value::Null => return None,
            Value::String(s) => Scalar::Str(Cow::Borrowed(s)),
            Value::Number(n) => Scalar::Num(n.clone()),
            Value::Bool(b) => Scalar::Bool(*b),
            other => Scalar::Other(other.to_string()),
        })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Scalar<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar::Num(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar::Num(v.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
                serde_json::Number::from_f64(v)
                    .map(Scalar::Num)
                    .ok_or_else(|| E::custom("not a finite number"))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                a: A,
            ) -> Result<Self::Value, A::Error> {
                let v = Value::deserialize(serde::de::value::SeqAccessDeserializer::new(a))?;
                Ok(Scalar::Other(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                a: A,
            ) -> Result<Self::Value, A::Error> {
                let v = Value::deserialize(serde::de::value::MapAccessDeserializer::new(a))?;
                Ok(Scalar::Other(v.to_string()))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Trimmed, NFC-normalised text; `""` and `null` are absent. Numbers are read as their text.
pub fn text(v: Option<&Value>) -> Option<String> {
    scalar_text(Scalar::of(v))
}

/// [`text`] of a [`Scalar`].
pub fn scalar_text(v: Option<Scalar>) -> Option<String> {
    scalar_str(v).map(Cow::into_owned)
}

/// [`scalar_text`], borrowed from the body when the text needs no change: trimmed already
/// and in NFC (all ASCII codes, most names). Only the rest is copied, so a record's codes,
/// enums, flags and dates are read without making a `String` of each.
pub fn scalar_str(v: Option<Scalar<'_>>) -> Option<Cow<'_, str>> {
    let s: Cow<str> = match v? {
        Scalar::Str(Cow::Borrowed(s)) => {
            let t = trim(s);
            if is_nfc(t) {
                Cow::Borrowed(t)
            } else {
                Cow::Owned(nfc(t))
            }
        }
        Scalar::Str(Cow::Owned(s)) => Cow::Owned(nfc(trim(&s))),
        Scalar::Num(n) => Cow::Owned(n.to_string()),
        Scalar::Bool(b) => Cow::Owned(b.to_string()),
        Scalar::Other(json) => Cow::Owned(json),
    };
    match s {
        // Trimmed and in NFC: nothing changes.
        Cow::Borrowed(t) => (!t.is_empty()).then_some(Cow::Borrowed(t)),
        Cow::Owned(s) => {
            let t = trim(&s);
            if t.len() == s.len() {
                (!s.is_empty()).then_some(Cow::Owned(s))
            } else {
                (!t.is_empty()).then(|| Cow::Owned(t.to_string()))
            }
        }
    }
}

/// `str::trim`, without looking at the characters when the text starts and ends with a
/// printable ASCII one (as nearly every value does).
fn trim(s: &str) -> &str {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) if f.is_ascii_graphic() && l.is_ascii_graphic() => s,
        _ => s.trim(),
    }
}

/// Whether `s` is in NFC, looking characters up only when one may not be: text made only of
/// characters below U+0300 (Latin-1, Latin Extended-A and -B) and of Latin Extended
/// Additional (U+1E00–U+1EFF, Vietnamese letters with their tone marks) is in NFC, every such
/// character being a starter that nothing before it composes with.
fn is_nfc(s: &str) -> bool {
    use unicode_normalization::{is_nfc_quick, IsNormalized};
    plain_text(s) || is_nfc_quick(s.chars()) == IsNormalized::Yes
}

/// Whether every character of `s` is below U+0300 or in U+1E00–U+1EFF, read from its UTF-8
/// bytes: a lead byte C2–CB starts U+0080–U+02FF, E1 followed by B8–BB starts U+1E00–U+1EFF.
fn plain_text(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(&lead) = b.get(i) {
        i += match lead {
            0x00..=0x7F => 1,
            0xC2..=0xCB => 2,
            0xE1 if matches!(b.get(i + 1), Some(0xB8..=0xBB)) => 3,
            _ => return false,
        };
    }
    true
}

/// `s` in Unicode NFC; text already in NFC is only copied.
fn nfc(s: &str) -> String {
    if is_nfc(s) {
        s.to_string()
    } else {
        s.nfc().collect()
    }
}

/// An enumeration given as `"4"` or `4`. `Err` carries the value as served.
pub fn enum_code(v: Option<&Value>) -> Result<Option<i32>, String> {
    scalar_enum(Scalar::of(v))
}

pub fn scalar_enum(v: Option<Scalar>) -> Result<Option<i32>, String> {
    // A whole number is read as it is (its text would read the same).
    if let Some(Scalar::Num(n)) = &v {
        if let Some(i) = n.as_i64().and_then(|i| i32::try_from(i).ok()) {
            return Ok(Some(i));
        }
    }
    match scalar_str(v) {
        None => Ok(None),
        Some(s) => s.parse::<i32>().map(Some).map_err(|_| s.into_owned()),
    }
}

/// A `"0"`/`"1"` flag (also `0`/`1` and `true`/`false`).
pub fn flag(v: Option<&Value>) -> Option<bool> {
    scalar_flag(Scalar::of(v))
}

pub fn scalar_flag(v: Option<Scalar>) -> Option<bool> {
    // Read as they are (their text would read the same).
    match &v {
        Some(Scalar::Bool(b)) => return Some(*b),
        Some(Scalar::Num(n)) if n.as_u64().is_some_and(|n| n <= 1) => {
            return n.as_u64().map(|n| n == 1)
        }
        _ => {}
    }
    match scalar_str(v)?.as_ref() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// A date-time in any shape of `source-api.md`, as microseconds since the epoch (UTC).
/// Local shapes are read in Vietnam time. `Ok(None)` is absent; `Err` is unreadable.
pub fn instant(v: Option<&Value>) -> Result<Option<i64>, String> {
    scalar_instant(Scalar::of(v))
}

pub fn scalar_instant(v: Option<Scalar>) -> Result<Option<i64>, String> {
    let Some(s) = scalar_str(v) else {
        return Ok(None);
    };
    parse_instant(&s).map(Some).ok_or_else(|| s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_of_values() {
        assert_eq!(
            text(Some(&json!("  Chu\u{031b}ng thu\u{031b}\u{0323}c  "))).as_deref(),
            Some("Chưng thực")
        );
        assert_eq!(text(Some(&json!(""))), None);
        assert_eq!(text(Some(&json!("   "))), None);
        assert_eq!(text(Some(&Value::Null)), None);
        assert_eq!(text(Some(&json!(46))).as_deref(), Some("46"));
        assert_eq!(enum_code(Some(&json!(4))), Ok(Some(4)));
        assert_eq!(enum_code(Some(&json!(" 10 "))), Ok(Some(10)));
        assert_eq!(enum_code(Some(&json!("x"))), Err("x".to_string()));
        assert_eq!(enum_code(None), Ok(None));
        assert_eq!(flag(Some(&json!(1))), Some(true));
        assert_eq!(flag(Some(&json!("0"))), Some(false));
        assert_eq!(flag(Some(&json!(true))), Some(true));
        assert_eq!(flag(Some(&json!(0))), Some(false));
        assert_eq!(flag(Some(&json!(2))), None);
        assert_eq!(flag(Some(&json!(1.0))), None);
        assert_eq!(enum_code(Some(&json!(4.0))), Err("4.0".to_string()));
        assert_eq!(
            enum_code(Some(&json!(3_000_000_000u64))),
            Err("3000000000".to_string())
        );
        assert_eq!(enum_code(Some(&json!(-2))), Ok(Some(-2)));
        assert_eq!(flag(Some(&json!("maybe"))), None);
        assert_eq!(
            instant(Some(&json!("32/07/2024"))),
            Err("32/07/2024".to_string())
        );
        assert_eq!(instant(Some(&json!(""))), Ok(None));
    }

    /// Every character [`is_nfc`] takes without looking it up is one Unicode calls a starter
    /// in NFC, and text of them is NFC (`plain_starter`'s ranges, checked in full).
    #[test]
    fn plain_starters_are_nfc_starters() {
        use unicode_normalization::char::canonical_combining_class;
        use unicode_normalization::{is_nfc_quick, IsNormalized};
        let plain_starter = |c: char| c < '\u{0300}' || ('\u{1E00}'..='\u{1EFF}').contains(&c);
        // Read from the bytes, the ranges are these, for every character.
        for c in (0u32..0x11_0000).filter_map(char::from_u32) {
            assert_eq!(plain_text(&c.to_string()), plain_starter(c), "{c:?}");
        }
        let plain: Vec<char> = (0u32..0x2000)
            .filter_map(char::from_u32)
            .filter(|c| plain_starter(*c))
            .collect();
        assert_eq!(plain.len(), 0x300 + 0x100);
        for c in &plain {
            assert_eq!(canonical_combining_class(*c), 0, "{c:?}");
            assert_eq!(
                is_nfc_quick(std::iter::once(*c)),
                IsNormalized::Yes,
                "{c:?}"
            );
        }
        // Pairs of them compose to nothing else: NFC leaves them as they are.
        for a in plain.iter().step_by(7) {
            for b in plain.iter().step_by(5) {
                let s: String = [*a, *b].into_iter().collect();
                assert!(is_nfc(&s));
                assert_eq!(s.nfc().collect::<String>(), s, "{s:?}");
            }
        }
        assert_eq!(
            scalar_text(Some(Scalar::Str("Chứng thực bản sao".into()))).as_deref(),
            Some("Chứng thực bản sao")
        );
        // A decomposed letter is not taken so, and is composed.
        assert!(!is_nfc("Chu\u{031b}ng"));
    }

    #[test]
    fn typed_scalars_borrow_plain_strings() {
        #[derive(Deserialize)]
        struct R<'a> {
            #[serde(borrow)]
            a: Scalar<'a>,
            #[serde(borrow)]
            b: Scalar<'a>,
            #[serde(borrow)]
            c: Scalar<'a>,
        }
        let r: R =
            serde_json::from_str(r#"{"a":"plain","b":"esc\u0061ped","c":[1,{"x":2}]}"#).unwrap();
        assert!(matches!(r.a, Scalar::Str(Cow::Borrowed("plain"))));
        assert!(matches!(r.b, Scalar::Str(Cow::Owned(ref s)) if s == "escaped"));
        assert_eq!(r.c, Scalar::Other(r#"[1,{"x":2}]"#.into()));
    }
}

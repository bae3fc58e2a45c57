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
    let s = match v? {
        Scalar::Str(s) => nfc(s.trim()),
        Scalar::Num(n) => n.to_string(),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Other(json) => json,
    };
    let t = s.trim();
    if t.len() == s.len() {
        (!s.is_empty()).then_some(s)
    } else {
        (!t.is_empty()).then(|| t.to_string())
    }
}

/// `s` in Unicode NFC; text already in NFC (all ASCII codes and most names) is only copied.
fn nfc(s: &str) -> String {
    use unicode_normalization::{is_nfc_quick, IsNormalized};
    if s.is_ascii() || is_nfc_quick(s.chars()) == IsNormalized::Yes {
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
    match scalar_text(v) {
        None => Ok(None),
        Some(s) => s.parse::<i32>().map(Some).map_err(|_| s),
    }
}

/// A `"0"`/`"1"` flag (also `0`/`1` and `true`/`false`).
pub fn flag(v: Option<&Value>) -> Option<bool> {
    scalar_flag(Scalar::of(v))
}

pub fn scalar_flag(v: Option<Scalar>) -> Option<bool> {
    match scalar_text(v)?.as_str() {
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
    let Some(s) = scalar_text(v) else {
        return Ok(None);
    };
    parse_instant(&s).map(Some).ok_or(s)
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
        assert_eq!(flag(Some(&json!("maybe"))), None);
        assert_eq!(
            instant(Some(&json!("32/07/2024"))),
            Err("32/07/2024".to_string())
        );
        assert_eq!(instant(Some(&json!(""))), Ok(None));
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

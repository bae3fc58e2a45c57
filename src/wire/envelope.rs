//! The envelope every body has: `{"error_code": "0", "message": "", "total": N, "data": […]}`.
//! [`Envelope`] is generic over how `data` is read — its shape only ([`classify_body`]), as
//! JSON trees ([`records_of`]) or typed case records ([`super::CasePage`]) — so that one
//! definition of the envelope serves every reader, and [`classify_body`] is the one place that
//! decides whether a body is a success.

use serde::Deserialize;
use serde_json::Value;

use super::scalar::{scalar_text, Scalar};

/// A response body's envelope, with its `data` read as `D`.
#[derive(Debug, Deserialize)]
#[serde(bound(deserialize = "D: Deserialize<'de>"))]
pub struct Envelope<'a, D> {
    #[serde(default, borrow)]
    pub error_code: Option<Scalar<'a>>,
    #[serde(default, borrow)]
    pub message: Option<Scalar<'a>>,
    #[serde(default, borrow)]
    pub total: Option<Scalar<'a>>,
    #[serde(default)]
    pub data: Option<D>,
}

impl<D> Envelope<'_, D> {
    /// `error_code` is "0" (as a string or a number).
    pub fn succeeded(&self) -> bool {
        scalar_text(self.error_code.clone()).as_deref() == Some("0")
    }

    /// `total`, when it is a count.
    pub fn total(&self) -> Option<u64> {
        scalar_text(self.total.clone()).and_then(|t| t.parse().ok())
    }
}

/// A `data` value: an array, read as `T`, or what else it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shaped<T> {
    Array(T),
    Other(&'static str),
}

/// Whether a JSON value is an array, read without keeping it.
pub type Shape = Shaped<serde::de::IgnoredAny>;

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Shaped<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = Shaped<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, a: A) -> Result<Shaped<T>, A::Error> {
                T::deserialize(serde::de::value::SeqAccessDeserializer::new(a)).map(Shaped::Array)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Shaped<T>, A::Error> {
                while a
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Shaped::Other("an object"))
            }
            fn visit_str<E>(self, _: &str) -> Result<Shaped<T>, E> {
                Ok(Shaped::Other("a string"))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Shaped<T>, E> {
                Ok(Shaped::Other("a boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Shaped<T>, E> {
                Ok(Shaped::Other("a number"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Shaped<T>, E> {
                Ok(Shaped::Other("a number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Shaped<T>, E> {
                Ok(Shaped::Other("a number"))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// What a body of HTTP 200 calls for.
#[derive(Debug, PartialEq)]
pub enum BodyVerdict {
    /// The envelope with `error_code` "0" and a `data` array; its `total` when given.
    Usable { total: Option<u64> },
    /// Not JSON (a torn body, an HTML error page) or `error_code` "1" (busy): try again.
    Retry(String),
    /// An `error_code` other than "0" and "1".
    Application { code: String, message: String },
    /// JSON, but not the envelope of `source-api.md`: a retry would get the same.
    Contract(String),
}

/// Decides what a body of HTTP 200 calls for (see [`BodyVerdict`]). The pull retries or fails
/// on it, and a replay of `raw/` uses only the bodies it finds usable, as the pull did.
pub fn classify_body(body: &[u8]) -> BodyVerdict {
    // serde would read a JSON array as the envelope's fields in order: only an object is one.
    if !is_object(body) && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        return BodyVerdict::Contract("not the JSON envelope: JSON, but not an object".into());
    }
    let head: Envelope<Shape> = match super::from_json(body) {
        Ok(h) => h,
        Err(e) if e.is_data() => {
            return BodyVerdict::Contract(format!("not the JSON envelope: {e}"));
        }
        Err(e) => {
            let shown: String = String::from_utf8_lossy(&body[..body.len().min(60)])
                .chars()
                .filter(|c| !c.is_control())
                .collect();
            return BodyVerdict::Retry(format!(
                "a body that is not JSON ({e}; it starts {shown:?})"
            ));
        }
    };
    verdict(head).0
}

/// [`classify_body`] and the `data` array read as `T`, in one pass over the body (the pull
/// reads its cursor so). The data is `None` when the body is not usable, or when its array
/// could not be read as `T`: the verdict is then [`classify_body`]'s, and the caller reads the
/// records another way.
pub fn classify_reading<'a, T: Deserialize<'a>>(body: &'a [u8]) -> (BodyVerdict, Option<T>) {
    if is_object(body) {
        if let Ok(head) = super::from_json::<Envelope<Shaped<T>>>(body) {
            return verdict(head);
        }
    }
    (classify_body(body), None)
}

fn is_object(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// What a parsed envelope calls for, and its data when it is usable.
fn verdict<T>(head: Envelope<Shaped<T>>) -> (BodyVerdict, Option<T>) {
    let message = scalar_text(head.message.clone()).unwrap_or_default();
    let total = head.total();
    let v = match scalar_text(head.error_code.clone()).as_deref() {
        None => BodyVerdict::Contract("the envelope has no error_code".into()),
        Some("1") => BodyVerdict::Retry(format!("error_code \"1\" ({message})")),
        Some("0") => match head.data {
            Some(Shaped::Array(data)) => {
                return (BodyVerdict::Usable { total }, Some(data));
            }
            Some(Shaped::Other(what)) => {
                BodyVerdict::Contract(format!("its data is {what}, not an array"))
            }
            None => BodyVerdict::Contract("error_code \"0\" but no data array".into()),
        },
        Some(code) => BodyVerdict::Application {
            code: code.to_string(),
            message,
        },
    };
    (v, None)
}

/// The `data` records of a successful body as JSON trees (none when it is not one).
pub fn records_of(body: &[u8]) -> Vec<Value> {
    match super::from_json::<Envelope<Vec<Value>>>(body) {
        Ok(e) if e.succeeded() => e.data.unwrap_or_default(),
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_classified() {
        let usable = |b: &str| classify_body(b.as_bytes());
        assert_eq!(
            usable(r#"{"error_code":"0","message":"","total":"2","data":[{},{}]}"#),
            BodyVerdict::Usable { total: Some(2) }
        );
        assert_eq!(
            usable(r#"{"error_code":0,"data":[]}"#),
            BodyVerdict::Usable { total: None }
        );
        // Retried: a torn body, an HTML error page served with 200, "system busy".
        for b in [
            r#"{"error_code":"0","data":[{"MaHoSo":"#,
            "<html><body>502 Bad Gateway</body></html>",
            "",
        ] {
            assert!(matches!(usable(b), BodyVerdict::Retry(_)), "{b}");
        }
        assert!(
            matches!(usable(r#"{"error_code":"1","message":"bận"}"#), BodyVerdict::Retry(m) if m.contains("bận"))
        );
        // Failed at once: not the envelope.
        for (b, says) in [
            (r#"{"message":"","data":[]}"#, "no error_code"),
            (r#"{"error_code":null,"data":[]}"#, "no error_code"),
            (
                r#"{"error_code":"0","data":{"MaHoSo":"A"}}"#,
                "an object, not an array",
            ),
            (
                r#"{"error_code":"0","data":"[]"}"#,
                "a string, not an array",
            ),
            (r#"{"error_code":"0","data":null}"#, "no data array"),
            (r#"{"error_code":"0"}"#, "no data array"),
            (r#"[{"error_code":"0"}]"#, "not an object"),
            (
                r#"{"error_code":"0","data":[],"data":[]}"#,
                "not the JSON envelope",
            ),
        ] {
            match usable(b) {
                BodyVerdict::Contract(p) => assert!(p.contains(says), "{b}: {p}"),
                other => panic!("{b}: {other:?}"),
            }
        }
        assert_eq!(
            usable(r#"{"error_code":"99","message":"no such endpoint"}"#),
            BodyVerdict::Application {
                code: "99".into(),
                message: "no such endpoint".into()
            }
        );
    }

    #[test]
    fn a_body_read_in_one_pass_is_classified_as_alone() {
        #[derive(Deserialize, Debug, PartialEq)]
        struct Key {
            #[serde(rename = "MaHoSo")]
            key: String,
        }
        let (v, data) = classify_reading::<Vec<Key>>(
            br#"{"error_code":"0","total":2,"data":[{"MaHoSo":"A","x":[1]},{"MaHoSo":"B"}]}"#,
        );
        assert_eq!(v, BodyVerdict::Usable { total: Some(2) });
        let keys: Vec<String> = data.unwrap().into_iter().map(|k| k.key).collect();
        assert_eq!(keys, ["A", "B"]);
        // Every body gets classify_body's verdict; data only from a usable one read as asked.
        for b in [
            r#"{"error_code":"0","data":[{"MaHoSo":"A"},2]}"#,
            r#"{"error_code":"0","data":[{"x":1}]}"#,
            r#"{"error_code":"0","data":[{"MaHoSo":"A"}],"data":[]}"#,
            r#"{"error_code":"0","data":{"MaHoSo":"A"}}"#,
            r#"{"error_code":"1","data":[{"MaHoSo":"A"}]}"#,
            r#"{"error_code":"7","data":[]}"#,
            r#"[{"error_code":"0","data":[]}]"#,
            r#"{"error_code":"0","data":[{"MaHoSo":"#,
            "<html>",
        ] {
            let (v, data) = classify_reading::<Vec<Key>>(b.as_bytes());
            assert_eq!(v, classify_body(b.as_bytes()), "{b}");
            assert!(data.is_none(), "{b}");
        }
    }

    #[test]
    fn records_come_only_from_a_success() {
        assert_eq!(
            records_of(br#"{"error_code":"0","data":[{"a":1},2]}"#).len(),
            2
        );
        assert!(records_of(br#"{"error_code":"1","data":[{"a":1}]}"#).is_empty());
        assert!(records_of(br#"{"data":[{"a":1}]}"#).is_empty());
        assert!(records_of(b"<html>").is_empty());
    }
}

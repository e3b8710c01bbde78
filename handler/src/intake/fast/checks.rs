//! The checks [`super`]'s typed read makes of the parts it does not keep: `Metadata`,
//! `data.authorization`, `data.httpRequest` and `data.claims` (each to the type the general
//! path's structs give it), and `NBF`/`EXP`.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::super::data::{OBJECT_ID_CLAIM, UPN_CLAIM};
use super::super::envelope::Checked;
use super::{Text, first_sighting, refused};

/// The keys of an object [`Shape`] checks: strings, objects of a known shape, any objects and
/// integers, each or null.
pub(super) struct ShapeKeys {
    strings: &'static [&'static str],
    shapes: &'static [(&'static str, &'static ShapeKeys)],
    objects: &'static [&'static str],
    integers: &'static [&'static str],
}

/// `Metadata` ([`super::Metadata`]): `sys` and `RetryContext` are typed; `PartitionContext`,
/// `SequenceNumberArray` and `EnqueuedTimeUtcArray` are any JSON, as every other key.
pub(super) const METADATA: &ShapeKeys = &ShapeKeys {
    strings: &[],
    shapes: &[("sys", SYS), ("RetryContext", RETRY_CONTEXT)],
    objects: &[],
    integers: &[],
};

/// `Metadata.sys` ([`super::Sys`]).
const SYS: &ShapeKeys = &ShapeKeys {
    strings: &["MethodName", "UtcNow", "RandGuid"],
    shapes: &[],
    objects: &[],
    integers: &[],
};

/// `Metadata.RetryContext` ([`super::RetryContext`]).
const RETRY_CONTEXT: &ShapeKeys = &ShapeKeys {
    strings: &[],
    shapes: &[],
    objects: &[],
    integers: &["RetryCount", "MaxRetryCount"],
};

/// `data.authorization` ([`super::data::Authorization`]).
pub(super) const AUTHORIZATION: &ShapeKeys = &ShapeKeys {
    strings: &["scope", "action"],
    shapes: &[],
    objects: &["evidence"],
    integers: &[],
};

/// `data.httpRequest` ([`super::data::HttpRequest`]).
pub(super) const HTTP_REQUEST: &ShapeKeys = &ShapeKeys {
    strings: &["clientRequestId", "clientIpAddress", "method", "url"],
    shapes: &[],
    objects: &[],
    integers: &[],
};

/// Null, or an object whose listed keys have the listed types (each at most once) and whose
/// other keys are only checked. JSON text holding an object is left to the general path.
pub(super) struct Shape(pub(super) &'static ShapeKeys);

impl<'de> DeserializeSeed<'de> for Shape {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Shape {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object or null")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let keys = self.0;
        let mut seen = 0;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            let key = key.0.as_ref();
            // Each listed key has its own bit: strings, then shapes, objects and integers.
            let mut bit = 0;
            if let Some(at) = keys.strings.iter().position(|name| *name == key) {
                first_sighting(&mut seen, at as u32)?;
                map.next_value::<Option<Text<'de>>>()?;
                continue;
            }
            bit += keys.strings.len();
            if let Some(at) = keys.shapes.iter().position(|(name, _)| *name == key) {
                first_sighting(&mut seen, (bit + at) as u32)?;
                map.next_value_seed(Shape(keys.shapes[at].1))?;
                continue;
            }
            bit += keys.shapes.len();
            if let Some(at) = keys.objects.iter().position(|name| *name == key) {
                first_sighting(&mut seen, (bit + at) as u32)?;
                map.next_value_seed(ObjectOrNull)?;
                continue;
            }
            bit += keys.objects.len();
            if let Some(at) = keys.integers.iter().position(|name| *name == key) {
                first_sighting(&mut seen, (bit + at) as u32)?;
                map.next_value::<Option<i64>>()?;
                continue;
            }
            map.next_value::<Checked>()?;
        }
        Ok(())
    }
}

/// Null or any object, checked.
pub(super) struct ObjectOrNull;

impl<'de> DeserializeSeed<'de> for ObjectOrNull {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ObjectOrNull {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object or null")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(())
    }
}

/// The claims classification reads, with the general path's semantics: a key given twice
/// keeps its last value, and a value that is not a string counts as absent.
#[derive(Default)]
pub(super) struct Claims<'a> {
    pub(super) object_id: Option<Cow<'a, str>>,
    pub(super) oid: Option<Cow<'a, str>>,
    pub(super) appid: Option<Cow<'a, str>>,
    pub(super) azp: Option<Cow<'a, str>>,
    pub(super) upn: Option<Cow<'a, str>>,
    pub(super) name: Option<Cow<'a, str>>,
}

impl<'de> Deserialize<'de> for Claims<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ClaimsVisitor;
        impl<'de> Visitor<'de> for ClaimsVisitor {
            type Value = Claims<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the claims object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut claims = Claims::default();
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    let slot = match key.0.as_ref() {
                        OBJECT_ID_CLAIM => &mut claims.object_id,
                        "oid" => &mut claims.oid,
                        "appid" => &mut claims.appid,
                        "azp" => &mut claims.azp,
                        UPN_CLAIM => &mut claims.upn,
                        "name" => &mut claims.name,
                        _ => {
                            map.next_value::<Checked>()?;
                            continue;
                        }
                    };
                    *slot = map.next_value::<Claim<'de>>()?.0;
                }
                Ok(claims)
            }
        }
        deserializer.deserialize_map(ClaimsVisitor)
    }
}

/// One claim's value: its text when it is a string, else only checked.
struct Claim<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for Claim<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ClaimVisitor;
        impl<'de> Visitor<'de> for ClaimVisitor {
            type Value = Claim<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Claim<'de>, E> {
                Ok(Claim(Some(Cow::Borrowed(text))))
            }

            fn visit_str<E>(self, text: &str) -> Result<Claim<'de>, E> {
                Ok(Claim(Some(Cow::Owned(text.to_owned()))))
            }

            fn visit_bool<E>(self, _: bool) -> Result<Claim<'de>, E> {
                Ok(Claim(None))
            }

            fn visit_i64<E>(self, _: i64) -> Result<Claim<'de>, E> {
                Ok(Claim(None))
            }

            fn visit_u64<E>(self, _: u64) -> Result<Claim<'de>, E> {
                Ok(Claim(None))
            }

            fn visit_f64<E>(self, _: f64) -> Result<Claim<'de>, E> {
                Ok(Claim(None))
            }

            fn visit_unit<E>(self) -> Result<Claim<'de>, E> {
                Ok(Claim(None))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Claim<'de>, A::Error> {
                while seq.next_element::<Checked>()?.is_some() {}
                Ok(Claim(None))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Claim<'de>, A::Error> {
                while map.next_entry::<Checked, Checked>()?.is_some() {}
                Ok(Claim(None))
            }
        }
        deserializer.deserialize_any(ClaimVisitor)
    }
}

/// `NBF`/`EXP` as [`super::KeyVaultEventData`] accepts them (seconds since 1970 as a number,
/// a numeric string or null); anything else is left to the general path, which words it.
pub(super) struct UnixSeconds;

impl<'de> Deserialize<'de> for UnixSeconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecondsVisitor;
        impl<'de> Visitor<'de> for SecondsVisitor {
            type Value = UnixSeconds;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("seconds since 1970 as a number, a numeric string or null")
            }

            fn visit_unit<E>(self) -> Result<UnixSeconds, E> {
                Ok(UnixSeconds)
            }

            fn visit_i64<E>(self, _: i64) -> Result<UnixSeconds, E> {
                Ok(UnixSeconds)
            }

            fn visit_u64<E: de::Error>(self, seconds: u64) -> Result<UnixSeconds, E> {
                i64::try_from(seconds)
                    .map(|_| UnixSeconds)
                    .map_err(|_| refused())
            }

            fn visit_f64<E: de::Error>(self, seconds: f64) -> Result<UnixSeconds, E> {
                if seconds.is_finite() && seconds.fract() == 0.0 && seconds.abs() < 1e15 {
                    Ok(UnixSeconds)
                } else {
                    Err(refused())
                }
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<UnixSeconds, E> {
                let text = text.trim();
                if text.is_empty() || text.parse::<i64>().is_ok() {
                    Ok(UnixSeconds)
                } else {
                    Err(refused())
                }
            }
        }
        deserializer.deserialize_any(SecondsVisitor)
    }
}

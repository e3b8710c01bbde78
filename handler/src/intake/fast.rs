//! The hot path of Event Grid invocations: the host envelope read in one typed pass that
//! borrows the few texts classification needs from the request body and builds nothing else.
//!
//! Most invocations are irrelevant events, answered without I/O; building the event as
//! [`serde_json::Value`]s, then copying its fields into structs, was most of what answering one
//! cost. Here every part of the body is still read as strictly as a `Value` parse would read
//! it ([`Checked`]), but only the event's own fields, the parts of `data` classification reads
//! and `Metadata`'s typed keys are kept.
//!
//! This path only answers what it is sure of: an event it classifies as ignored or relevant.
//! Anything else — a rejection, a key given twice, an event sent as JSON text or in an array,
//! a binding under another name, a field of an unexpected type even where the slow path would
//! not look — returns `None`, and the invocation is read the general way
//! ([`super::Invocation::parse`] and [`super::RawEvent::from_binding`]), which decides and
//! words every such case. A verdict from here is always the one the general path gives.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::classify::{EventFields, KeyVaultData, ResourceData, classify_fields};
use super::data::{OBJECT_ID_CLAIM, UPN_CLAIM};
use super::envelope::Checked;
use super::event::parse_time;
use super::{Classified, IntakeSettings, Rejection};

/// An Event Grid event read and classified by [`read_event`].
#[derive(Debug)]
pub struct ReadEvent {
    pub id: String,
    pub event_type: String,
    pub subject: Option<String>,
    pub classified: Classified,
}

/// Reads the envelope of an Event Grid invocation whose trigger binding is `binding` and
/// classifies its event; `None` when the general path must decide (see the module's note).
pub fn read_event(body: &[u8], binding: &str, settings: &IntakeSettings) -> Option<ReadEvent> {
    // One check of the whole body; the parse then reads text without checking each string.
    let text = std::str::from_utf8(body).ok()?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let event = EnvelopeSeed { binding }
        .deserialize(&mut deserializer)
        .ok()?;
    deserializer.end().ok()?;
    let fields = event.fields()?;
    let data = event.data.as_ref();
    // A rejection's wording is the general path's: it is not built here.
    let unread = || Rejection::new(String::new());
    let classified = classify_fields(
        &fields,
        || data.ok_or_else(unread),
        || data.filter(|data| data.id.is_some()).ok_or_else(unread),
        settings,
    )
    .ok()?;
    Some(ReadEvent {
        id: fields.id.to_owned(),
        event_type: fields.event_type.to_owned(),
        subject: fields.subject.map(str::to_owned),
        classified,
    })
}

/// The reason every refusal of this path gives; never shown (the general path decides).
fn refused<E: de::Error>() -> E {
    E::custom("left to the general path")
}

/// A text kept from the body: borrowed unless it held an escape.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }

            fn visit_str<E>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }

            fn visit_string<E>(self, text: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// A string-or-null field: `None` when absent, `Some(None)` when null.
type Slot<'a> = Option<Option<Cow<'a, str>>>;

/// Records a field seen once more; a second sighting refuses the body (the general path
/// keeps the last value, or refuses the event).
fn first_sighting<E: de::Error>(seen: &mut u64, bit: u32) -> Result<(), E> {
    let mask = 1u64 << bit;
    if *seen & mask != 0 {
        return Err(refused());
    }
    *seen |= mask;
    Ok(())
}

fn text_slot<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Slot<'de>, A::Error> {
    Ok(Some(map.next_value::<Option<Text<'de>>>()?.map(|t| t.0)))
}

/// The envelope, with `Data`'s binding read as an [`EventObject`].
struct EnvelopeSeed<'b> {
    binding: &'b str,
}

#[derive(Deserialize)]
#[serde(field_identifier)]
enum EnvelopeKey {
    Data,
    Metadata,
    #[serde(other)]
    Other,
}

impl<'de> DeserializeSeed<'de> for EnvelopeSeed<'_> {
    type Value = EventObject<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed<'_> {
    type Value = EventObject<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the host envelope object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut event = None;
        let mut seen = 0;
        while let Some(key) = map.next_key::<EnvelopeKey>()? {
            match key {
                EnvelopeKey::Data => {
                    first_sighting(&mut seen, 0)?;
                    event = map.next_value_seed(DataSeed {
                        binding: self.binding,
                    })?;
                }
                EnvelopeKey::Metadata => {
                    // Checked to the types the general path reads it with, so that a body it
                    // refuses for its Metadata is refused here too; the event path needs none
                    // of it.
                    first_sighting(&mut seen, 1)?;
                    map.next_value_seed(Shape(METADATA))?;
                }
                EnvelopeKey::Other => {
                    map.next_value::<Checked>()?;
                }
            }
        }
        event.ok_or_else(refused)
    }
}

/// `Data`: the binding named `binding`, an event object; every other key only checked.
struct DataSeed<'b> {
    binding: &'b str,
}

impl<'de> DeserializeSeed<'de> for DataSeed<'_> {
    type Value = Option<EventObject<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DataSeed<'_> {
    type Value = Option<EventObject<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the Data object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut event = None;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            if key.0 == self.binding {
                if event.is_some() {
                    return Err(refused());
                }
                event = Some(map.next_value::<EventObject<'de>>()?);
            } else {
                map.next_value::<Checked>()?;
            }
        }
        Ok(event)
    }
}

/// One event object in either schema: every field either schema reads, and `data`.
#[derive(Default)]
struct EventObject<'a> {
    id: Slot<'a>,
    topic: Slot<'a>,
    subject: Slot<'a>,
    event_type: Slot<'a>,
    event_time: Slot<'a>,
    source: Slot<'a>,
    /// `specversion` and `specVersion` (azure-notes Trap H13), each apart.
    specversion: Slot<'a>,
    spec_version: Slot<'a>,
    cloud_type: Slot<'a>,
    time: Slot<'a>,
    data_base64: Slot<'a>,
    data: Option<DataObject<'a>>,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(field_identifier)]
enum EventKey {
    #[serde(rename = "id")]
    Id,
    #[serde(rename = "topic")]
    Topic,
    #[serde(rename = "subject")]
    Subject,
    #[serde(rename = "eventType")]
    EventType,
    #[serde(rename = "eventTime")]
    EventTime,
    #[serde(rename = "dataVersion")]
    DataVersion,
    #[serde(rename = "metadataVersion")]
    MetadataVersion,
    #[serde(rename = "source")]
    Source,
    #[serde(rename = "specversion")]
    Specversion,
    #[serde(rename = "specVersion")]
    SpecVersion,
    #[serde(rename = "type")]
    Type,
    #[serde(rename = "time")]
    Time,
    #[serde(rename = "data_base64")]
    DataBase64,
    #[serde(rename = "data")]
    Data,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for EventObject<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EventVisitor;
        impl<'de> Visitor<'de> for EventVisitor {
            type Value = EventObject<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut event = EventObject::default();
                let mut seen = 0;
                while let Some(key) = map.next_key::<EventKey>()? {
                    let (bit, slot) = match key {
                        EventKey::Id => (0, &mut event.id),
                        EventKey::Topic => (1, &mut event.topic),
                        EventKey::Subject => (2, &mut event.subject),
                        EventKey::EventType => (3, &mut event.event_type),
                        EventKey::EventTime => (4, &mut event.event_time),
                        EventKey::Source => (5, &mut event.source),
                        EventKey::Specversion => (6, &mut event.specversion),
                        EventKey::SpecVersion => (7, &mut event.spec_version),
                        EventKey::Type => (8, &mut event.cloud_type),
                        EventKey::Time => (9, &mut event.time),
                        EventKey::DataBase64 => (10, &mut event.data_base64),
                        EventKey::DataVersion | EventKey::MetadataVersion => {
                            let bit = if matches!(key, EventKey::DataVersion) {
                                11
                            } else {
                                12
                            };
                            first_sighting(&mut seen, bit)?;
                            map.next_value::<Option<Text<'de>>>()?;
                            continue;
                        }
                        EventKey::Data => {
                            first_sighting(&mut seen, 13)?;
                            event.data = map.next_value::<Option<DataObject<'de>>>()?;
                            continue;
                        }
                        EventKey::Other => {
                            map.next_value::<Checked>()?;
                            continue;
                        }
                    };
                    first_sighting(&mut seen, bit)?;
                    *slot = text_slot(&mut map)?;
                }
                Ok(event)
            }
        }
        deserializer.deserialize_map(EventVisitor)
    }
}

/// A required string: present and not null.
fn required<'s>(slot: &'s Slot<'_>) -> Option<&'s str> {
    slot.as_ref()?.as_deref()
}

/// An optional string: absent or null is `None`.
fn optional<'s>(slot: &'s Slot<'_>) -> Option<&'s str> {
    slot.as_ref().and_then(|value| value.as_deref())
}

impl EventObject<'_> {
    /// The schema-independent fields, decided as [`super::RawEvent::from_binding`] decides
    /// them; `None` where it would refuse the event.
    fn fields(&self) -> Option<EventFields<'_>> {
        let is_cloud_event = self.specversion.is_some()
            || self.spec_version.is_some()
            || (self.cloud_type.is_some() && self.event_type.is_none());
        if is_cloud_event {
            // Both spellings at once is a duplicate field to the general path.
            let specversion = match (&self.specversion, &self.spec_version) {
                (Some(_), Some(_)) => return None,
                (one, None) | (None, one) => required(one)?,
            };
            if specversion != "1.0" || optional(&self.data_base64).is_some() {
                return None;
            }
            Some(EventFields {
                id: required(&self.id)?,
                event_type: required(&self.cloud_type)?,
                subject: optional(&self.subject),
                source: Some(required(&self.source)?),
                time: parse_time("event.time", optional(&self.time)).ok()?,
            })
        } else if self.event_type.is_some() {
            Some(EventFields {
                id: required(&self.id)?,
                event_type: required(&self.event_type)?,
                subject: optional(&self.subject),
                source: optional(&self.topic),
                time: parse_time("event.eventTime", optional(&self.event_time)).ok()?,
            })
        } else {
            None
        }
    }
}

/// `data`, as either kind of event classification reads has it: the `Microsoft.Resources.*`
/// fields ([`super::ResourceEventData`]) and the `Microsoft.KeyVault.*` ones
/// ([`super::KeyVaultEventData`]), each checked to the type its struct gives it.
#[derive(Default)]
struct DataObject<'a> {
    subscription_id: Option<Cow<'a, str>>,
    operation_name: Option<Cow<'a, str>>,
    resource_uri: Option<Cow<'a, str>>,
    correlation_id: Option<Cow<'a, str>>,
    caller_object_id: Option<Cow<'a, str>>,
    caller_app_id: Option<Cow<'a, str>>,
    caller_name: Option<Cow<'a, str>>,
    /// `Id` (or `id`) of a Key Vault event.
    id: Option<Cow<'a, str>>,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(field_identifier)]
enum DataKey {
    #[serde(rename = "authorization")]
    Authorization,
    #[serde(rename = "claims")]
    Claims,
    #[serde(rename = "correlationId")]
    CorrelationId,
    #[serde(rename = "httpRequest")]
    HttpRequest,
    #[serde(rename = "resourceProvider")]
    ResourceProvider,
    #[serde(rename = "resourceUri")]
    ResourceUri,
    #[serde(rename = "operationName")]
    OperationName,
    #[serde(rename = "status")]
    Status,
    #[serde(rename = "subscriptionId")]
    SubscriptionId,
    #[serde(rename = "tenantId")]
    TenantId,
    #[serde(alias = "id")]
    Id,
    #[serde(alias = "vaultName")]
    VaultName,
    #[serde(alias = "objectType")]
    ObjectType,
    #[serde(alias = "objectName")]
    ObjectName,
    #[serde(alias = "version")]
    Version,
    #[serde(rename = "NBF", alias = "nbf")]
    NotBefore,
    #[serde(rename = "EXP", alias = "exp")]
    Expires,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for DataObject<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DataVisitor;
        impl<'de> Visitor<'de> for DataVisitor {
            type Value = DataObject<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the event's data object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut data = DataObject::default();
                let mut seen = 0;
                while let Some(key) = map.next_key::<DataKey>()? {
                    let kept = match key {
                        DataKey::CorrelationId => &mut data.correlation_id,
                        DataKey::ResourceUri => &mut data.resource_uri,
                        DataKey::OperationName => &mut data.operation_name,
                        DataKey::SubscriptionId => &mut data.subscription_id,
                        DataKey::Id => &mut data.id,
                        DataKey::ResourceProvider
                        | DataKey::Status
                        | DataKey::TenantId
                        | DataKey::VaultName
                        | DataKey::ObjectType
                        | DataKey::ObjectName
                        | DataKey::Version => {
                            first_sighting(&mut seen, key as u32)?;
                            map.next_value::<Option<Text<'de>>>()?;
                            continue;
                        }
                        DataKey::Authorization => {
                            first_sighting(&mut seen, key as u32)?;
                            map.next_value_seed(Shape(AUTHORIZATION))?;
                            continue;
                        }
                        DataKey::HttpRequest => {
                            first_sighting(&mut seen, key as u32)?;
                            map.next_value_seed(Shape(HTTP_REQUEST))?;
                            continue;
                        }
                        DataKey::Claims => {
                            first_sighting(&mut seen, key as u32)?;
                            if let Some(claims) = map.next_value::<Option<Claims<'de>>>()? {
                                data.caller_object_id = claims.object_id.or(claims.oid);
                                data.caller_app_id = claims.appid.or(claims.azp);
                                data.caller_name = claims.upn.or(claims.name);
                            }
                            continue;
                        }
                        DataKey::NotBefore | DataKey::Expires => {
                            first_sighting(&mut seen, key as u32)?;
                            map.next_value::<UnixSeconds>()?;
                            continue;
                        }
                        DataKey::Other => {
                            map.next_value::<Checked>()?;
                            continue;
                        }
                    };
                    first_sighting(&mut seen, key as u32)?;
                    *kept = map.next_value::<Option<Text<'de>>>()?.map(|t| t.0);
                }
                Ok(data)
            }
        }
        deserializer.deserialize_map(DataVisitor)
    }
}

impl ResourceData for &DataObject<'_> {
    fn subscription_id(&self) -> Option<&str> {
        self.subscription_id.as_deref()
    }
    fn operation_name(&self) -> Option<&str> {
        self.operation_name.as_deref()
    }
    fn resource_uri(&self) -> Option<&str> {
        self.resource_uri.as_deref()
    }
    fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }
    fn caller_object_id(&self) -> Option<&str> {
        self.caller_object_id.as_deref()
    }
    fn caller_app_id(&self) -> Option<&str> {
        self.caller_app_id.as_deref()
    }
    fn caller_name(&self) -> Option<&str> {
        self.caller_name.as_deref()
    }
}

impl KeyVaultData for &DataObject<'_> {
    fn object_id(&self) -> &str {
        self.id.as_deref().unwrap_or_default()
    }
}

/// The keys of an object [`Shape`] checks: strings, objects of a known shape, any objects and
/// integers, each or null.
struct ShapeKeys {
    strings: &'static [&'static str],
    shapes: &'static [(&'static str, &'static ShapeKeys)],
    objects: &'static [&'static str],
    integers: &'static [&'static str],
}

/// `Metadata` ([`super::Metadata`]): `sys` and `RetryContext` are typed; `PartitionContext`,
/// `SequenceNumberArray` and `EnqueuedTimeUtcArray` are any JSON, as every other key.
const METADATA: &ShapeKeys = &ShapeKeys {
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
const AUTHORIZATION: &ShapeKeys = &ShapeKeys {
    strings: &["scope", "action"],
    shapes: &[],
    objects: &["evidence"],
    integers: &[],
};

/// `data.httpRequest` ([`super::data::HttpRequest`]).
const HTTP_REQUEST: &ShapeKeys = &ShapeKeys {
    strings: &["clientRequestId", "clientIpAddress", "method", "url"],
    shapes: &[],
    objects: &[],
    integers: &[],
};

/// Null, or an object whose listed keys have the listed types (each at most once) and whose
/// other keys are only checked. JSON text holding an object is left to the general path.
struct Shape(&'static ShapeKeys);

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
struct ObjectOrNull;

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
struct Claims<'a> {
    object_id: Option<Cow<'a, str>>,
    oid: Option<Cow<'a, str>>,
    appid: Option<Cow<'a, str>>,
    azp: Option<Cow<'a, str>>,
    upn: Option<Cow<'a, str>>,
    name: Option<Cow<'a, str>>,
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
struct UnixSeconds;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::{Invocation, RawEvent, classify, test_settings};
    use serde_json::{Value, json};

    const SUB: &str = "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34";

    /// What the general path answers: the event's id, type and subject and the verdict, or the
    /// rejection.
    fn general(body: &[u8], settings: &IntakeSettings) -> Result<String, String> {
        let mut invocation = Invocation::parse(body).map_err(|r| r.to_string())?;
        let (value, source) = invocation
            .take_binding("event")
            .map_err(|r| r.to_string())?;
        if source != crate::intake::BindingSource::Named {
            return Err("another binding".into());
        }
        let event = RawEvent::from_binding(value).map_err(|r| r.to_string())?;
        let classified = classify(&event, settings).map_err(|r| r.to_string())?;
        Ok(format!(
            "{} {} {:?} {classified:?}",
            event.id, event.event_type, event.subject
        ))
    }

    fn fast(body: &[u8], settings: &IntakeSettings) -> Option<String> {
        read_event(body, "event", settings).map(|event| {
            format!(
                "{} {} {:?} {:?}",
                event.id, event.event_type, event.subject, event.classified
            )
        })
    }

    /// The typed read answers exactly as the general path, or leaves the body to it.
    fn same_or_left(body: &[u8]) -> bool {
        let mut decided = false;
        for settings in [test_settings(None), test_settings(Some(&[SUB]))] {
            let general = general(body, &settings);
            if let Some(fast) = fast(body, &settings) {
                assert_eq!(Ok(fast), general, "{}", String::from_utf8_lossy(body));
                decided = true;
            }
        }
        decided
    }

    fn envelope(event: &Value) -> Vec<u8> {
        json!({
            "Data": {"event": event},
            "Metadata": {"data": event.get("data"), "sys": {"MethodName": "OnSubscriptionEvent", "UtcNow": "2026-11-28T10:00:01.0131455Z", "RandGuid": "g"}}
        })
        .to_string()
        .into_bytes()
    }

    fn arm_event(operation: &str, resource: &str) -> Value {
        json!({
            "id": "e1", "topic": format!("/subscriptions/{SUB}"), "subject": resource,
            "eventType": "Microsoft.Resources.ResourceWriteSuccess", "eventTime": "2026-11-28T10:00:00.1234567Z",
            "data": {"operationName": operation, "resourceUri": resource, "subscriptionId": SUB, "status": "Succeeded",
                     "correlationId": "c1", "authorization": {"scope": resource, "action": operation, "evidence": {"role": "Owner"}},
                     "httpRequest": {"clientRequestId": "r", "clientIpAddress": "10.0.0.1", "method": "PUT", "url": "https://x"},
                     "claims": {"http://schemas.microsoft.com/identity/claims/objectidentifier": "oid-1", "appid": "app-1", "aud": ["a"]}},
            "dataVersion": "2", "metadataVersion": "1"
        })
    }

    fn storage() -> Value {
        arm_event(
            "Microsoft.Storage/storageAccounts/write",
            &format!(
                "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st1"
            ),
        )
    }

    fn workspace() -> Value {
        arm_event(
            "Microsoft.MachineLearningServices/workspaces/write",
            &format!(
                "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1"
            ),
        )
    }

    fn key_event(event_type: &str) -> Value {
        json!({
            "id": "k1", "topic": format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1"),
            "subject": "key1", "eventType": event_type, "eventTime": "2026-11-28T09:20:13Z",
            "data": {"Id": "https://kv1.vault.azure.net/keys/key1/0123456789abcdef0123456789abcdef", "VaultName": "kv1",
                     "ObjectType": "Key", "ObjectName": "key1", "Version": null, "NBF": 1766913611, "EXP": "1798449611"},
            "dataVersion": "1", "metadataVersion": "1"
        })
    }

    fn cloud_event() -> Value {
        let mut event = workspace();
        let object = event.as_object_mut().unwrap();
        let topic = object.remove("topic").unwrap();
        object.insert("source".into(), topic);
        let event_type = object.remove("eventType").unwrap();
        object.insert("type".into(), event_type);
        let time = object.remove("eventTime").unwrap();
        object.insert("time".into(), time);
        object.remove("dataVersion");
        object.remove("metadataVersion");
        object.insert("specversion".into(), json!("1.0"));
        event
    }

    #[test]
    fn decides_the_usual_events_as_the_general_path_does() {
        let mut events = vec![storage(), workspace(), cloud_event()];
        for event_type in [
            "Microsoft.KeyVault.KeyNearExpiry",
            "Microsoft.KeyVault.KeyNewVersionCreated",
            "Microsoft.KeyVault.VaultAccessPolicyChanged",
            "Microsoft.KeyVault.SecretNewVersionCreated",
            "Microsoft.KeyVault.CertificateNearExpiry",
        ] {
            events.push(key_event(event_type));
        }
        let mut failed = storage();
        failed["eventType"] = json!("Microsoft.Resources.ResourceWriteFailure");
        let mut other_type = storage();
        other_type["eventType"] = json!("Microsoft.Storage.BlobCreated");
        let mut spec_version = cloud_event();
        let version = spec_version.as_object_mut().unwrap().remove("specversion");
        spec_version["specVersion"] = version.unwrap();
        let mut oid_only = workspace();
        oid_only["data"]["claims"] = json!({"oid": "oid-2", "azp": "app-2", "appid": 5});
        let mut escaped = workspace();
        escaped["id"] = json!("e\"1\u{e9}");
        events.extend([failed, other_type, spec_version, oid_only, escaped]);
        for event in &events {
            assert!(same_or_left(&envelope(event)), "left: {event}");
        }
        // Escapes in keys and values, and a body with no Metadata at all.
        let body = br#"{"D\u0061ta":{"ev\u0065nt":{"id":"e\u0031","eventType":"Microsoft.Resources.ResourceWriteSuccess","subject":"/subscriptions/3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws1","data":{"operationN\u0061me":"Microsoft.MachineLearningServices/workspaces/write","claims":{"\u0061ppid":"app"}}}}}"#;
        assert!(same_or_left(body));
        let relevant = fast(&envelope(&workspace()), &test_settings(None)).unwrap();
        assert!(
            relevant.contains("Relevant")
                && relevant.contains("oid-1")
                && relevant.contains("app-1"),
            "{relevant}"
        );
        let ignored = fast(&envelope(&storage()), &test_settings(None)).unwrap();
        assert!(ignored.contains("cannot change a CMK chain"), "{ignored}");
    }

    #[test]
    fn leaves_every_unusual_body_to_the_general_path() {
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        let event = storage();
        let mut variant = |edit: &dyn Fn(&mut Value)| {
            let mut event = event.clone();
            edit(&mut event);
            bodies.push(envelope(&event));
        };
        // Rejections, and shapes only the general path reads.
        variant(&|e| e["eventType"] = json!(5));
        variant(&|e| e["eventType"] = json!(null));
        variant(&|e| e["eventTime"] = json!("yesterday"));
        variant(&|e| {
            e.as_object_mut().unwrap().remove("id");
        });
        variant(&|e| e["data"] = json!(null));
        variant(&|e| e["data"] = json!("text"));
        variant(&|e| e["data"]["claims"] = json!(7));
        variant(&|e| e["data"]["claims"] = json!("{\"appid\":\"x\"}"));
        variant(&|e| e["data"]["authorization"] = json!("{\"scope\":\"/s\"}"));
        variant(&|e| e["data"]["authorization"]["evidence"] = json!([1]));
        variant(&|e| e["data"]["httpRequest"]["url"] = json!(1));
        variant(&|e| e["data"]["status"] = json!(true));
        variant(&|e| e["data"]["NBF"] = json!("soon"));
        variant(&|e| e["data"]["EXP"] = json!(1e300));
        variant(&|e| e["eventType"] = json!("Microsoft.Resources.ResourceBogusSuccess"));
        variant(&|e| e["specversion"] = json!("0.3"));
        variant(&|e| e["data_base64"] = json!("AA=="));
        variant(&|e| {
            e.as_object_mut().unwrap().remove("eventType");
        });
        variant(&|e| {
            let mut inner = e.clone();
            inner.as_object_mut().unwrap().remove("data");
            e["data"]["claims"] = json!({});
            *e = json!([inner]);
        });
        variant(&|e| *e = Value::String(e.to_string()));
        // Outside the allowlist: a rejection under one of the two settings.
        variant(&|e| e["data"]["subscriptionId"] = json!("00000000-0000-0000-0000-000000000001"));
        // Malformed JSON anywhere, and keys given twice.
        let good = String::from_utf8(envelope(&storage())).unwrap();
        bodies.extend([
            good.replacen(r#""Metadata":{"#, r#""Metadata":{"x":"\ud800","#, 1)
                .into_bytes(),
            good.replacen(r#""Data":{"#, r#""Data":{"other":[1,],"#, 1)
                .into_bytes(),
            good.replacen(
                r#""dataVersion":"2""#,
                r#""dataVersion":"2","id":"again""#,
                1,
            )
            .into_bytes(),
            good.replacen(
                r#""status":"Succeeded""#,
                r#""status":"Succeeded","status":"x""#,
                1,
            )
            .into_bytes(),
            good.replacen(
                r#""MethodName":"OnSubscriptionEvent""#,
                r#""MethodName":5"#,
                1,
            )
            .into_bytes(),
            good.replacen(r#""Data":{"event""#, r#""Data":{"eventGridEvent""#, 1)
                .into_bytes(),
            format!("{good} {{}}").into_bytes(),
            format!(
                r#"{{"Other":{}{}, {}"#,
                "[".repeat(200),
                "]".repeat(200),
                &good[1..]
            )
            .into_bytes(),
            good.replacen("Succeeded", "Succ\u{1}eeded", 1).into_bytes(),
            [&good.as_bytes()[..20], b"\xff", &good.as_bytes()[20..]].concat(),
        ]);
        for end in (1..good.len()).step_by(7) {
            bodies.push(good.as_bytes()[..end].to_vec());
        }
        for body in &bodies {
            for settings in [test_settings(None), test_settings(Some(&[SUB]))] {
                let general = general(body, &settings);
                match fast(body, &settings) {
                    None => {}
                    Some(fast) => {
                        assert_eq!(Ok(fast), general, "{}", String::from_utf8_lossy(body))
                    }
                }
            }
        }
        // The ones the general path refuses are never decided here.
        let refused = bodies
            .iter()
            .filter(|body| general(body, &test_settings(None)).is_err())
            .count();
        assert!(refused > 30, "{refused}");
        for body in &bodies {
            if general(body, &test_settings(None)).is_err() {
                assert!(
                    fast(body, &test_settings(None)).is_none(),
                    "{}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }
}

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
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::classify::{EventFields, KeyVaultData, ResourceData, classify_fields};
use super::envelope::{Checked, EnvelopeKey};
use super::event::parse_time;
use super::{Classified, IntakeSettings, Rejection};

mod checks;

use checks::{AUTHORIZATION, Claims, HTTP_REQUEST, METADATA, Shape, UnixSeconds};

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
pub(super) fn refused<E: de::Error>() -> E {
    E::custom("left to the general path")
}

/// A text kept from the body: borrowed unless it held an escape.
pub(super) struct Text<'a>(Cow<'a, str>);

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
pub(super) fn first_sighting<E: de::Error>(seen: &mut u64, bit: u32) -> Result<(), E> {
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

#[cfg(test)]
mod tests;

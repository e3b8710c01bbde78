//! One event in either schema Event Grid delivers: the Event Grid schema (`eventType`,
//! `eventTime`, `topic`) or CloudEvents 1.0 (`type`, `time`, `source`, `specversion`). The schema
//! is decided by the fields present, never by configuration (azure-notes Trap H14).

use serde::Deserialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Rejection, kind_of};

/// How many times a binding value that is JSON text is decoded before giving up. The host
/// sends objects, but strings (and strings of strings) are seen from other publishers.
const MAX_STRING_DECODES: usize = 2;

/// Which schema the event used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    EventGrid,
    CloudEvents,
}

/// The schema-independent view of one event.
#[derive(Debug, Clone)]
pub struct RawEvent {
    pub schema: Schema,
    pub id: String,
    pub event_type: String,
    pub subject: Option<String>,
    /// `topic` (Event Grid) or `source` (CloudEvents): the publisher's resource id.
    pub source: Option<String>,
    pub time: Option<OffsetDateTime>,
    pub data: Value,
}

/// The Event Grid schema; `data` is taken out of the object first, so it is moved, not copied.
#[derive(Deserialize)]
struct EventGridEvent {
    id: String,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(rename = "eventType")]
    event_type: String,
    #[serde(rename = "eventTime", default)]
    event_time: Option<String>,
    #[serde(rename = "dataVersion", default)]
    _data_version: Option<String>,
    #[serde(rename = "metadataVersion", default)]
    _metadata_version: Option<String>,
}

/// CloudEvents 1.0; `data` is taken out of the object first, as for [`EventGridEvent`].
#[derive(Deserialize)]
struct CloudEvent {
    id: String,
    source: String,
    /// Several official samples spell it `specVersion` (azure-notes Trap H13).
    #[serde(alias = "specVersion")]
    specversion: String,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    time: Option<String>,
    #[serde(default)]
    data_base64: Option<String>,
}

impl RawEvent {
    /// Accepts the binding value as the host sends it: an object, or JSON text holding one
    /// (possibly twice encoded), or an array holding exactly one event.
    pub fn from_binding(value: Value) -> Result<Self, Rejection> {
        let mut value = value;
        let mut decodes = 0;
        loop {
            match value {
                Value::Object(object) => return Self::from_object(object),
                Value::String(text) if decodes < MAX_STRING_DECODES => {
                    decodes += 1;
                    value = serde_json::from_str(&text).map_err(|e| {
                        Rejection::new(format!(
                            "event: a string that is not JSON text holding an event ({e})"
                        ))
                    })?;
                }
                Value::Array(mut items) if items.len() == 1 => value = items.remove(0),
                Value::Array(items) => {
                    return Err(Rejection::new(format!(
                        "event: expected one event, got an array of {}; the trigger must not use `cardinality: many`",
                        items.len()
                    )));
                }
                other => {
                    return Err(Rejection::new(format!(
                        "event: expected an Event Grid or CloudEvents event object, got {}",
                        kind_of(&other)
                    )));
                }
            }
        }
    }

    fn from_object(mut object: Map<String, Value>) -> Result<Self, Rejection> {
        let is_cloud_event = ["specversion", "specVersion"]
            .iter()
            .any(|k| object.contains_key(*k))
            || (object.contains_key("type") && !object.contains_key("eventType"));
        // `data` may hold anything, so taking it out first changes no verdict.
        let data = object.remove("data").unwrap_or(Value::Null);
        let value = Value::Object(object);
        if is_cloud_event {
            let event: CloudEvent = deserialize_ref("event", &value)?;
            if event.specversion != "1.0" {
                return Err(Rejection::new(format!(
                    "event.specversion: expected \"1.0\", got \"{}\"",
                    crate::text::field(&event.specversion)
                )));
            }
            if event.data_base64.is_some() {
                return Err(Rejection::new(
                    "event.data_base64: binary event data is not supported; Azure events carry JSON `data`",
                ));
            }
            Ok(Self {
                schema: Schema::CloudEvents,
                time: parse_time("event.time", event.time.as_deref())?,
                id: event.id,
                event_type: event.event_type,
                subject: event.subject,
                source: Some(event.source),
                data,
            })
        } else if value.get("eventType").is_some() {
            let event: EventGridEvent = deserialize_ref("event", &value)?;
            Ok(Self {
                schema: Schema::EventGrid,
                time: parse_time("event.eventTime", event.event_time.as_deref())?,
                id: event.id,
                event_type: event.event_type,
                subject: event.subject,
                source: event.topic,
                data,
            })
        } else {
            Err(Rejection::new(
                "event: neither `eventType` (Event Grid schema) nor `type` and `specversion` (CloudEvents 1.0) is present",
            ))
        }
    }
}

/// Deserializes with the JSON path of the first bad field in the error.
pub fn deserialize<T: serde::de::DeserializeOwned>(
    prefix: &str,
    value: Value,
) -> Result<T, Rejection> {
    match T::deserialize(&value) {
        Ok(parsed) => Ok(parsed),
        Err(_) => deserialize_with_path(prefix, value),
    }
}

/// [`deserialize`] from a borrowed value: only the fields `T` keeps are copied.
pub fn deserialize_ref<T: serde::de::DeserializeOwned>(
    prefix: &str,
    value: &Value,
) -> Result<T, Rejection> {
    match T::deserialize(value) {
        Ok(parsed) => Ok(parsed),
        Err(_) => deserialize_with_path(prefix, value.clone()),
    }
}

/// The slow way, taken only to explain a failure: tracking the path costs an allocation per
/// field, so it runs again after the plain deserialization failed.
fn deserialize_with_path<T: serde::de::DeserializeOwned>(
    prefix: &str,
    value: Value,
) -> Result<T, Rejection> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| Rejection::at_path(prefix, &e.path().to_string(), &e.inner().to_string()))
}

/// Event times have up to 7 fractional digits; any RFC 3339 form is accepted (azure-notes
/// Trap H15).
pub(super) fn parse_time(
    field: &str,
    text: Option<&str>,
) -> Result<Option<OffsetDateTime>, Rejection> {
    match text {
        None => Ok(None),
        Some(text) => OffsetDateTime::parse(text, &Rfc3339)
            .map(Some)
            .map_err(|e| {
                Rejection::new(format!(
                    "{field}: expected an RFC 3339 time, got \"{}\" ({e})",
                    crate::text::field(text)
                ))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event_grid() -> Value {
        json!({"id":"1","topic":"/subscriptions/x","subject":"s","eventType":"T","eventTime":"2018-07-19T18:38:04.6117357Z","data":{"a":1},"dataVersion":"2","metadataVersion":"1"})
    }

    #[test]
    fn reads_the_event_grid_schema() {
        let event = RawEvent::from_binding(event_grid()).unwrap();
        assert_eq!(event.schema, Schema::EventGrid);
        assert_eq!(event.event_type, "T");
        assert_eq!(event.time.unwrap().nanosecond(), 611_735_700);
        assert_eq!(event.data["a"], 1);
    }

    #[test]
    fn reads_cloud_events_with_either_spelling() {
        for key in ["specversion", "specVersion"] {
            let mut value =
                json!({"id":"1","source":"/s","type":"T","time":"2025-06-08T17:45:12Z","data":{}});
            value[key] = json!("1.0");
            let event = RawEvent::from_binding(value).unwrap();
            assert_eq!(event.schema, Schema::CloudEvents);
            assert_eq!(event.source.as_deref(), Some("/s"));
        }
    }

    #[test]
    fn decodes_json_text_once_or_twice() {
        let once = Value::String(event_grid().to_string());
        let twice = Value::String(once.to_string());
        assert_eq!(RawEvent::from_binding(once).unwrap().id, "1");
        assert_eq!(RawEvent::from_binding(twice).unwrap().id, "1");
        let thrice = Value::String(
            Value::String(Value::String(event_grid().to_string()).to_string()).to_string(),
        );
        assert!(RawEvent::from_binding(thrice).is_err());
    }

    #[test]
    fn deserializer_messages_quote_input_only_briefly() {
        let huge = "y".repeat(450 * 1024);
        let mut event = event_grid();
        event["eventType"] = json!([huge]);
        event["subject"] = json!({ "k": 1 });
        let err = RawEvent::from_binding(event).unwrap_err().to_string();
        assert!(err.starts_with("event."), "{err}");
        assert!(err.len() < 1024, "{}", err.len());
        let err = deserialize::<crate::intake::KeyVaultEventData>("data", json!(huge))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("data: invalid type: string"), "{err}");
        assert!(err.len() < 1024, "{}", err.len());
        let err = deserialize::<crate::intake::KeyVaultEventData>(
            "data",
            json!({"Id": "x", "EXP": format!("\n{huge}")}),
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains('\n') && err.len() < 1024, "{err}");
    }

    #[test]
    fn rejections_name_the_field() {
        let mut wrong_type = event_grid();
        wrong_type["eventType"] = json!(5);
        let mut bad_time = event_grid();
        bad_time["eventTime"] = json!("yesterday");
        let mut no_id = event_grid();
        no_id.as_object_mut().unwrap().remove("id");
        for (value, expected) in [
            (
                wrong_type,
                "event.eventType: invalid type: integer `5`, expected a string",
            ),
            (bad_time, "event.eventTime: expected an RFC 3339 time"),
            (no_id, "event: missing field `id`"),
            (
                json!({"id":"1","source":"/s","type":"T","specversion":"0.3"}),
                "event.specversion: expected \"1.0\"",
            ),
            (json!({"hello":"world"}), "neither `eventType`"),
            (json!(42), "got a number"),
            (json!([event_grid(), event_grid()]), "an array of 2"),
            (Value::String("not json".into()), "not JSON text"),
        ] {
            let err = RawEvent::from_binding(value).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }
}

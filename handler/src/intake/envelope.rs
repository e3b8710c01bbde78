//! The Functions host's invocation envelope (`HttpScriptInvocationContext`): `{"Data":{…},
//! "Metadata":{…}}` with PascalCase keys (azure-notes §H2).

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Rejection, kind_of};

/// The parsed envelope. Binding values stay as JSON until the function knows what it expects.
#[derive(Debug)]
pub struct Invocation {
    data: Map<String, Value>,
    /// Host metadata; unknown keys are ignored (they are not documented as stable).
    pub metadata: Metadata,
}

/// The envelope as [`Invocation::parse`] reads it: `Data` as JSON values, `Metadata` through
/// [`FastMetadata`], any other key only checked ([`Checked`]). A key given twice keeps its last
/// value, as in the slow parse.
struct Envelope {
    data: Map<String, Value>,
    metadata: Option<Metadata>,
}

/// The envelope's keys; matched without allocating.
#[derive(Deserialize)]
#[serde(field_identifier)]
pub(super) enum EnvelopeKey {
    Data,
    Metadata,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EnvelopeVisitor;
        impl<'de> serde::de::Visitor<'de> for EnvelopeVisitor {
            type Value = Envelope;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("the host envelope object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Envelope, A::Error> {
                let (mut data, mut metadata) = (None, None);
                while let Some(key) = map.next_key::<EnvelopeKey>()? {
                    match key {
                        EnvelopeKey::Data => data = Some(map.next_value()?),
                        EnvelopeKey::Metadata => {
                            metadata = map.next_value::<Option<FastMetadata>>()?.map(|m| m.0);
                        }
                        EnvelopeKey::Other => {
                            map.next_value::<Checked>()?;
                        }
                    }
                }
                let data = data.ok_or_else(|| serde::de::Error::missing_field("Data"))?;
                Ok(Envelope { data, metadata })
            }
        }
        deserializer.deserialize_map(EnvelopeVisitor)
    }
}

/// [`Metadata`] as the fast parse reads it: the keys cmk-guard reads are built (`sys` and
/// `RetryContext` through a [`Value`], so their other keys are checked too), every other key —
/// above all the copy of the event's data — only checked, never built.
struct FastMetadata(Metadata);

/// `Metadata`'s keys; matched without allocating.
#[derive(Deserialize)]
#[serde(field_identifier)]
enum MetadataKey {
    #[serde(rename = "sys")]
    Sys,
    RetryContext,
    PartitionContext,
    SequenceNumberArray,
    EnqueuedTimeUtcArray,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for FastMetadata {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MetadataVisitor;
        impl<'de> serde::de::Visitor<'de> for MetadataVisitor {
            type Value = FastMetadata;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("the host's Metadata object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<FastMetadata, A::Error> {
                use serde::de::Error as _;
                let mut metadata = Metadata::default();
                while let Some(key) = map.next_key::<MetadataKey>()? {
                    match key {
                        MetadataKey::Sys => {
                            let value: Value = map.next_value()?;
                            metadata.sys = Option::deserialize(value).map_err(A::Error::custom)?;
                        }
                        MetadataKey::RetryContext => {
                            let value: Value = map.next_value()?;
                            metadata.retry_context =
                                Option::deserialize(value).map_err(A::Error::custom)?;
                        }
                        MetadataKey::PartitionContext => {
                            metadata.partition_context = map.next_value()?;
                        }
                        MetadataKey::SequenceNumberArray => {
                            metadata.sequence_numbers = map.next_value()?;
                        }
                        MetadataKey::EnqueuedTimeUtcArray => {
                            metadata.enqueued_times = map.next_value()?;
                        }
                        MetadataKey::Other => {
                            map.next_value::<Checked>()?;
                        }
                    }
                }
                Ok(FastMetadata(metadata))
            }
        }
        deserializer.deserialize_map(MetadataVisitor)
    }
}

/// Any JSON, read as strictly as a [`Value`] (strings unescaped and checked, numbers parsed,
/// the recursion limit applied) and thrown away: `IgnoredAny` only skips, which accepts a lone
/// surrogate escape and any depth.
pub(super) struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> serde::de::Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// `Metadata`: the trigger's binding data plus `sys` and, under a host retry policy, `RetryContext`.
#[derive(Debug, Default, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub sys: Option<Sys>,
    #[serde(rename = "RetryContext", default)]
    pub retry_context: Option<RetryContext>,
    /// Event Hub triggers: the partition the batch came from. Kept as JSON and read
    /// leniently ([`Metadata::event_hub_batch`]): its shape is the extension's, not a contract.
    #[serde(rename = "PartitionContext", default)]
    pub partition_context: Option<Value>,
    /// Event Hub triggers (`cardinality: many`): each message's sequence number.
    #[serde(rename = "SequenceNumberArray", default)]
    pub sequence_numbers: Option<Value>,
    /// Event Hub triggers (`cardinality: many`): when each message was enqueued.
    #[serde(rename = "EnqueuedTimeUtcArray", default)]
    pub enqueued_times: Option<Value>,
}

impl Metadata {
    /// The identity of an Event Hub batch: namespace, hub, consumer group, partition, the
    /// range of sequence numbers and when the first message was enqueued — the same on every
    /// redelivery of the batch, so it can be claimed once, and not the same for a recreated hub
    /// whose sequence numbers start again at 0. `None` when the host did not say.
    pub fn event_hub_batch(&self) -> Option<String> {
        let context = self.partition_context.as_ref()?;
        let part = |name: &str| {
            context
                .get(name)
                .and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .map(|s| crate::text::field(&s).into_owned())
        };
        let numbers: Vec<i64> = self
            .sequence_numbers
            .as_ref()?
            .as_array()?
            .iter()
            .filter_map(|v| v.as_i64().or_else(|| v.as_str()?.trim().parse().ok()))
            .collect();
        let (first, last) = (numbers.iter().min()?, numbers.iter().max()?);
        let enqueued = self
            .enqueued_times
            .as_ref()
            .and_then(|times| times.get(0))
            .and_then(Value::as_str)
            .map(|t| format!("@{}", crate::text::field(t)))
            .unwrap_or_default();
        Some(format!(
            "eventhub:{}/{}/{}/{}:{first}-{last}{enqueued}",
            part("FullyQualifiedNamespace").unwrap_or_default(),
            part("EventHubName").unwrap_or_default(),
            part("ConsumerGroup").unwrap_or_default(),
            part("PartitionId")?,
        ))
    }
}

/// `Metadata.sys` (the WebJobs `SystemBindingData`).
#[derive(Debug, Default, Deserialize)]
pub struct Sys {
    #[serde(rename = "MethodName", default)]
    pub method_name: Option<String>,
    #[serde(rename = "UtcNow", default)]
    pub utc_now: Option<String>,
    #[serde(rename = "RandGuid", default)]
    pub rand_guid: Option<String>,
}

/// `Metadata.RetryContext`, present when a host retry policy applies.
#[derive(Debug, Default, Deserialize)]
pub struct RetryContext {
    #[serde(rename = "RetryCount", default)]
    pub retry_count: Option<i64>,
    #[serde(rename = "MaxRetryCount", default)]
    pub max_retry_count: Option<i64>,
}

/// Where a binding value came from, so logs can say when the name did not match.
#[derive(Debug, PartialEq, Eq)]
pub enum BindingSource {
    /// `Data` held the expected binding name.
    Named,
    /// `Data` held exactly one other key, used in its place.
    OnlyEntry(String),
}

impl Invocation {
    /// Parses the request body. Every failure names the part that was wrong.
    ///
    /// Most invocations are irrelevant events, so the body is read once into the typed
    /// [`Envelope`]: `Data` becomes JSON values (the binding is read from them), `Metadata`
    /// only the fields cmk-guard reads, and everything else — above all `Metadata`'s copy of
    /// the event's data — is never built, only checked as strictly as a [`Value`] would be
    /// ([`Checked`]; serde's own skipping lets a lone surrogate escape and any depth through).
    /// Any failure parses the body again the slow way ([`Invocation::parse_value`]), whose
    /// reason names the part that was wrong.
    pub fn parse(body: &[u8]) -> Result<Self, Rejection> {
        match serde_json::from_slice::<Envelope>(body) {
            Ok(Envelope { data, metadata }) => Ok(Self {
                data,
                metadata: metadata.unwrap_or_default(),
            }),
            Err(_) => Self::parse_value(body),
        }
    }

    /// The body through a whole [`Value`]: slower, but every way a body can be wrong gets
    /// its own reason (and a duplicate key keeps its last value, as JSON objects do).
    fn parse_value(body: &[u8]) -> Result<Self, Rejection> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| Rejection::new(format!("body: not valid JSON: {e}")))?;
        let Value::Object(mut root) = value else {
            return Err(Rejection::new(format!(
                "body: expected the host envelope object {{\"Data\":…,\"Metadata\":…}}, got {}",
                kind_of(&value)
            )));
        };
        let data = match root.remove("Data") {
            Some(Value::Object(data)) => data,
            Some(other) => {
                return Err(Rejection::new(format!(
                    "Data: expected an object, got {}",
                    kind_of(&other)
                )));
            }
            None => {
                return Err(Rejection::new(
                    "Data: missing; the host always sends `Data` (PascalCase)",
                ));
            }
        };
        let metadata = match root.remove("Metadata") {
            None | Some(Value::Null) => Metadata::default(),
            // The path is tracked only to explain a failure (it costs an allocation per field).
            Some(value @ Value::Object(_)) => match Metadata::deserialize(&value) {
                Ok(metadata) => metadata,
                Err(_) => serde_path_to_error::deserialize(value).map_err(|e| {
                    Rejection::at_path("Metadata", &e.path().to_string(), &e.inner().to_string())
                })?,
            },
            Some(other) => {
                return Err(Rejection::new(format!(
                    "Metadata: expected an object, got {}",
                    kind_of(&other)
                )));
            }
        };
        Ok(Self { data, metadata })
    }

    /// The value of the trigger binding `name`. When `Data` holds exactly one other key (a
    /// function.json with another binding name), that value is used and the source says so.
    pub fn take_binding(&mut self, name: &str) -> Result<(Value, BindingSource), Rejection> {
        if let Some(value) = self.data.remove(name) {
            return Ok((value, BindingSource::Named));
        }
        if self.data.len() == 1
            && let Some((key, value)) = self.data.iter_mut().next()
        {
            let key = key.clone();
            return Ok((value.take(), BindingSource::OnlyEntry(key)));
        }
        // The keys are input: a few, each bounded, are enough to see the mistake.
        const SHOWN_KEYS: usize = 5;
        let mut present: Vec<String> = self
            .data
            .keys()
            .take(SHOWN_KEYS)
            .map(|key| crate::text::field(key).into_owned())
            .collect();
        if self.data.len() > SHOWN_KEYS {
            present.push(format!("… {} more", self.data.len() - SHOWN_KEYS));
        }
        Err(Rejection::new(format!(
            "Data: no binding named `{name}` (present: [{}])",
            present.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_data_and_metadata() {
        let body = br#"{"Data":{"event":{"id":"1"}},"Metadata":{"sys":{"MethodName":"OnKeyVaultEvent","UtcNow":"2024-10-24T01:08:34.5Z","RandGuid":"g"},"RetryContext":{"RetryCount":1,"MaxRetryCount":2,"Exception":null,"Instance":null,"State":{}},"data":{"x":1},"unknown":"\"x\""}}"#;
        let mut invocation = Invocation::parse(body).unwrap();
        assert_eq!(
            invocation
                .metadata
                .sys
                .as_ref()
                .unwrap()
                .method_name
                .as_deref(),
            Some("OnKeyVaultEvent")
        );
        assert_eq!(
            invocation
                .metadata
                .retry_context
                .as_ref()
                .unwrap()
                .retry_count,
            Some(1)
        );
        let (value, source) = invocation.take_binding("event").unwrap();
        assert_eq!(value["id"], "1");
        assert_eq!(source, BindingSource::Named);
    }

    #[test]
    fn falls_back_to_the_only_binding_and_says_so() {
        let mut invocation =
            Invocation::parse(br#"{"Data":{"eventGridEvent":{"id":"1"}},"Metadata":{}}"#).unwrap();
        let (_, source) = invocation.take_binding("event").unwrap();
        assert_eq!(source, BindingSource::OnlyEntry("eventGridEvent".into()));
    }

    #[test]
    fn rejects_with_the_part_that_was_wrong() {
        for (body, expected) in [
            (&br#"{"Data":{"event":"#[..], "body: not valid JSON"),
            (b"[1]", "got an array"),
            (br#"{"Metadata":{}}"#, "Data: missing"),
            (br#"{"Data":"x"}"#, "Data: expected an object, got a string"),
            (
                br#"{"Data":{},"Metadata":{"sys":{"MethodName":5}}}"#,
                "Metadata.sys.MethodName",
            ),
            (b"{\"Data\":{\"a\":\"\xff\"}}", "not valid JSON"),
        ] {
            let err = Invocation::parse(body).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
        let mut two = Invocation::parse(br#"{"Data":{"a":1,"b":2}}"#).unwrap();
        assert!(
            two.take_binding("event")
                .unwrap_err()
                .to_string()
                .contains("present: [a, b]")
        );
    }

    /// The reason of the slow parse, which is what every rejection said before the fast one.
    fn slow_reason(body: &[u8]) -> String {
        Invocation::parse_value(body).unwrap_err().to_string()
    }

    #[test]
    fn a_body_wrong_anywhere_is_refused_with_the_slow_parse_s_reason() {
        let metadata_copy = br#"{"Data":{"event":{"id":"1"}},"Metadata":{"data":{"x":[1,2,{"y":"z"}]},"sys":{"MethodName":"M"}}}"#;
        let mut bodies: Vec<Vec<u8>> = (1..metadata_copy.len())
            .map(|end| metadata_copy[..end].to_vec())
            .collect();
        bodies.extend([
            br#"{"Data":{},"Metadata":{"data":{"x":tru}}}"#.to_vec(),
            br#"{"Data":{},"Metadata":{"data":{"x":1,}}}"#.to_vec(),
            br#"{"Data":{},"Metadata":{"data":"\q"}}"#.to_vec(),
            br#"{"Data":{},"Metadata":{"data":[01]}}"#.to_vec(),
            br#"{"Data":{},"Other":[1 2]}"#.to_vec(),
            br#"{"Data":{}} {}"#.to_vec(),
            b"{\"Data\":{},\"Metadata\":{\"data\":\"\xff\"}}".to_vec(),
            b"{\"Data\":{},\"Metadata\":{\"data\":\"a\x01b\"}}".to_vec(),
            br#"{"Data":{},"Metadata":{"sys":{"MethodName":5}}}"#.to_vec(),
            br#"{"Data":{},"Metadata":"x"}"#.to_vec(),
        ]);
        for body in bodies {
            let fast = Invocation::parse(&body).unwrap_err().to_string();
            assert_eq!(
                fast,
                slow_reason(&body),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn malformed_json_in_parts_cmk_guard_does_not_read_is_still_refused() {
        // What serde's skipping lets through: a lone surrogate escape, nesting past the
        // recursion limit, in Metadata's copy of the event's data, an unknown key or a key.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for (body, expected) in [
            (
                r#"{"Data":{"event":{}},"Metadata":{"data":"\ud800"}}"#.to_owned(),
                "hex escape",
            ),
            (
                r#"{"Data":{"event":{}},"Metadata":{"sys":{"Other":"\udc00x"}}}"#.to_owned(),
                "hex escape",
            ),
            (
                r#"{"Data":{"event":{}},"Other":{"\ud83d":1}}"#.to_owned(),
                "hex escape",
            ),
            (
                format!(r#"{{"Data":{{"event":{{}}}},"Metadata":{{"data":{deep}}}}}"#),
                "recursion limit",
            ),
            (
                format!(r#"{{"Data":{{"event":{{}}}},"Other":{deep}}}"#),
                "recursion limit",
            ),
            (
                format!(r#"{{"Data":{{"event":{deep}}}}}"#),
                "recursion limit",
            ),
        ] {
            let err = Invocation::parse(body.as_bytes()).unwrap_err().to_string();
            assert!(err.starts_with("body: not valid JSON"), "{err}");
            assert!(err.contains(expected), "{err}");
            assert_eq!(err, slow_reason(body.as_bytes()));
        }
        // A surrogate pair is one character, and nesting within the limit is fine.
        let pair = r#"{"Data":{"event":{}},"Metadata":{"data":"\ud83d\ude00","x":[[[[1]]]]}}"#;
        assert!(Invocation::parse(pair.as_bytes()).is_ok());
    }

    #[test]
    fn a_key_given_twice_keeps_its_last_value_as_before() {
        let body = br#"{"Data":{"event":{"id":"old"}},"Metadata":{"sys":{"MethodName":"A"},"sys":{"MethodName":"B"}},"Data":{"event":{"id":"new"}}}"#;
        let mut invocation = Invocation::parse(body).unwrap();
        let method = invocation
            .metadata
            .sys
            .as_ref()
            .unwrap()
            .method_name
            .clone();
        assert_eq!(method.as_deref(), Some("B"));
        assert_eq!(invocation.take_binding("event").unwrap().0["id"], "new");
    }

    #[test]
    fn escaped_keys_and_unknown_keys_are_read_like_any_other() {
        let body = br#"{"Extra":{"a":[null]},"D\u0061ta":{"ev\u0065nt":{"id":"\u00e9"}},"Metadata":{"sys":{"Rand\u0047uid":"g","Other":1},"RetryContext":{"RetryCount":2,"State":{}}}}"#;
        let mut invocation = Invocation::parse(body).unwrap();
        assert_eq!(
            invocation
                .metadata
                .sys
                .as_ref()
                .unwrap()
                .rand_guid
                .as_deref(),
            Some("g")
        );
        let retry = invocation.metadata.retry_context.as_ref().unwrap();
        assert_eq!(retry.retry_count, Some(2));
        assert_eq!(invocation.take_binding("event").unwrap().0["id"], "é");
        let null = Invocation::parse(br#"{"Data":{},"Metadata":null}"#).unwrap();
        assert!(null.metadata.sys.is_none());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let depth = 10_000;
        let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let err = Invocation::parse(body.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("recursion limit"), "{err}");
    }
}

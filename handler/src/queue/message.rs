//! One message of the sweep's queue: which subscription to sweep for which run, where to
//! resume, and its place among the run's subscriptions. Small JSON, validated on receipt like
//! any input from outside: whoever can write to the queue is not trusted with the scope.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{ArmResourceId, SubscriptionId};

/// The largest message text accepted (a real one is under 400 bytes).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;
/// The most subscriptions one run fans out to.
pub const MAX_SUBSCRIPTIONS: u32 = 10_000;
/// The longest run id: a UUID is 36 characters.
const MAX_RUN_CHARS: usize = 64;
/// How often the host may have wrapped the message in JSON text or base64 before it arrives.
const MAX_WRAPPING: usize = 3;

/// One subscription's share of a sweep run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepMessage {
    /// The run: one Sweep invocation's fan-out (letters, digits and hyphens).
    pub run: String,
    pub subscription: SubscriptionId,
    /// The last workspace done (lower-case ARM id) when an earlier invocation's budget ran
    /// out; the work resumes after it.
    pub after: Option<String>,
    /// This subscription's place in the run (0-based) and how many the run has: the run is
    /// complete when every place is done.
    pub index: u32,
    pub of: u32,
}

/// The message as it travels.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    run: String,
    subscription: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<String>,
    index: u32,
    of: u32,
}

/// Why a message was refused; each says what was wrong, bounded, without echoing it whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the sweep message is larger than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    #[error("the sweep message is not JSON of the expected shape: {0}")]
    Shape(String),
    #[error("the sweep message's run id is not 1 to {MAX_RUN_CHARS} letters, digits or hyphens")]
    Run,
    #[error("the sweep message's subscription is not a subscription id")]
    Subscription,
    #[error("the sweep message's `after` is not a workspace id in its subscription")]
    After,
    #[error(
        "the sweep message's place ({index} of {of}) is not within 1 to {MAX_SUBSCRIPTIONS} subscriptions"
    )]
    Place { index: u32, of: u32 },
}

impl SweepMessage {
    /// The JSON text.
    pub fn to_json(&self) -> String {
        let wire = Wire {
            run: self.run.clone(),
            subscription: self.subscription.to_string(),
            after: self.after.clone(),
            index: self.index,
            of: self.of,
        };
        serde_json::to_string(&wire).unwrap_or_default()
    }

    /// A message's text as the queue holds it: base64 of the JSON (or the JSON itself).
    pub fn from_queue_text(text: &str) -> Result<Self, Refusal> {
        decode_binding(Value::String(text.to_owned()))
    }

    fn from_wire(wire: Wire) -> Result<Self, Refusal> {
        let run_ok = (1..=MAX_RUN_CHARS).contains(&wire.run.len())
            && wire
                .run
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !run_ok {
            return Err(Refusal::Run);
        }
        let subscription =
            SubscriptionId::parse(&wire.subscription).map_err(|_| Refusal::Subscription)?;
        if wire.of == 0 || wire.of > MAX_SUBSCRIPTIONS || wire.index >= wire.of {
            return Err(Refusal::Place {
                index: wire.index,
                of: wire.of,
            });
        }
        let after = match wire.after {
            None => None,
            Some(text) => {
                let id = ArmResourceId::parse(&text).map_err(|_| Refusal::After)?;
                if id.subscription() != &subscription {
                    return Err(Refusal::After);
                }
                Some(id.as_str().to_ascii_lowercase())
            }
        };
        Ok(Self {
            run: wire.run,
            subscription,
            after,
            index: wire.index,
            of: wire.of,
        })
    }
}

/// The message from the trigger binding's value. The host passes a queue message's text as
/// JSON text inside a string (protocol §2.2), an extension may hand over the JSON object, and
/// the text itself may still be base64: each layer is undone, a bounded number of times.
pub fn decode_binding(value: Value) -> Result<SweepMessage, Refusal> {
    let mut value = value;
    for _ in 0..=MAX_WRAPPING {
        match value {
            Value::Object(_) => {
                let wire: Wire = serde_json::from_value(value).map_err(|e| {
                    Refusal::Shape(crate::text::clean_owned(e.to_string(), crate::text::REASON))
                })?;
                return SweepMessage::from_wire(wire);
            }
            Value::String(text) => {
                if text.len() > MAX_MESSAGE_BYTES * 2 {
                    return Err(Refusal::TooLarge);
                }
                value = unwrap_text(text.trim())?;
            }
            other => {
                return Err(Refusal::Shape(format!(
                    "expected an object, got {}",
                    kind(&other)
                )));
            }
        }
    }
    Err(Refusal::Shape("wrapped too many times".to_owned()))
}

/// One layer off a text: JSON if it parses, else base64 of UTF-8.
fn unwrap_text(text: &str) -> Result<Value, Refusal> {
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        return Ok(value);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| Refusal::Shape("neither JSON nor base64".to_owned()))?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(Refusal::TooLarge);
    }
    let decoded =
        String::from_utf8(bytes).map_err(|_| Refusal::Shape("base64 of non-UTF-8".to_owned()))?;
    Ok(Value::String(decoded))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "00000000-0000-0000-0000-0000000000a1";

    fn message() -> SweepMessage {
        SweepMessage {
            run: "7f1c2d3e-0000-4000-8000-000000000001".to_owned(),
            subscription: SubscriptionId::parse(SUB).unwrap(),
            after: Some(format!(
                "/subscriptions/{SUB}/resourcegroups/rg/providers/microsoft.machinelearningservices/workspaces/ws1"
            )),
            index: 2,
            of: 3,
        }
    }

    #[test]
    fn every_wrapping_the_host_may_use_decodes_to_the_same_message() {
        let json = message().to_json();
        let base64 = base64::engine::general_purpose::STANDARD.encode(&json);
        let object: Value = serde_json::from_str(&json).unwrap();
        for value in [
            object.clone(),
            Value::String(json.clone()),
            Value::String(serde_json::to_string(&json).unwrap()),
            Value::String(base64.clone()),
            Value::String(serde_json::to_string(&base64).unwrap()),
        ] {
            assert_eq!(decode_binding(value.clone()).unwrap(), message(), "{value}");
        }
        assert_eq!(SweepMessage::from_queue_text(&base64).unwrap(), message());
    }

    #[test]
    fn hostile_messages_are_refused_with_a_bounded_reason() {
        let cases = [
            (
                serde_json::json!({"run": "r", "subscription": SUB, "index": 0, "of": 1, "extra": 1}),
                "shape",
            ),
            (
                serde_json::json!({"run": "r;drop", "subscription": SUB, "index": 0, "of": 1}),
                "run id",
            ),
            (
                serde_json::json!({"run": "r", "subscription": "../x", "index": 0, "of": 1}),
                "not a subscription",
            ),
            (
                serde_json::json!({"run": "r", "subscription": SUB, "index": 1, "of": 1}),
                "place",
            ),
            (
                serde_json::json!({"run": "r", "subscription": SUB, "index": 0, "of": 4_000_000_000u32}),
                "place",
            ),
            (
                serde_json::json!({"run": "r", "subscription": SUB, "index": 0, "of": 1,
                "after": "/subscriptions/00000000-0000-0000-0000-0000000000b2/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w"}),
                "`after`",
            ),
            (serde_json::json!([1, 2]), "an array"),
            (Value::String("x".repeat(MAX_MESSAGE_BYTES * 3)), "larger"),
            (Value::String("%%%".to_owned()), "neither JSON nor base64"),
        ];
        for (value, expected) in cases {
            let reason = decode_binding(value.clone()).unwrap_err().to_string();
            assert!(reason.contains(expected), "{value}: {reason}");
            assert!(reason.len() < 400, "{reason}");
        }
    }
}

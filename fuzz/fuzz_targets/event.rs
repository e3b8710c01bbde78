//! One Event Grid or CloudEvents event as the binding value: a JSON value, or the same bytes as
//! JSON text (the string form some publishers send), read and classified. No input may panic.
#![no_main]

use cmk_guard::intake::RawEvent;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

#[path = "classify.rs"]
mod classify;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<Value>(data)
        && let Ok(event) = RawEvent::from_binding(value)
    {
        classify::classify_both_ways(&event);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(event) = RawEvent::from_binding(Value::String(text.to_owned()))
    {
        classify::classify_both_ways(&event);
    }
});

//! One `OnKeyVaultAudit` binding value: an array of Event Hub messages (JSON text or objects,
//! each `{"records": [...]}`), or the same bytes as one message's text — read into per-vault
//! activity under both kinds of configuration, and every trigger built from it. No input may
//! panic.
#![no_main]

use cmk_guard::intake::AuditBatch;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

#[path = "classify.rs"]
mod classify;

fuzz_target!(|data: &[u8]| {
    let mut values = Vec::new();
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        values.push(value);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        values.push(Value::Array(vec![Value::String(text.to_owned())]));
    }
    for value in values {
        for settings in classify::settings() {
            if let Ok(batch) = AuditBatch::parse(value.clone(), &settings) {
                let _ = batch.summary();
                for activity in &batch.vaults {
                    let _ = format!("{:?}", activity.trigger("eventhub:fuzz/0:1-2"));
                }
            }
        }
    }
});

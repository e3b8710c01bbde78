//! The host envelope (`{"Data":{…},"Metadata":{…}}`) and everything intake does with it: the
//! binding taken out, the event read in either schema, and classified. No input may panic.
#![no_main]

use cmk_guard::intake::{Invocation, RawEvent};
use libfuzzer_sys::fuzz_target;

#[path = "classify.rs"]
mod classify;

fuzz_target!(|data: &[u8]| {
    let Ok(mut invocation) = Invocation::parse(data) else {
        return;
    };
    let _ = format!("{:?}", invocation.metadata);
    for binding in ["event", "timer"] {
        if let Ok((value, _source)) = invocation.take_binding(binding)
            && let Ok(event) = RawEvent::from_binding(value)
        {
            classify::classify_both_ways(&event);
        }
    }
});

//! The TOML policy file: any text either loads or fails with a message naming the line and
//! key; a loaded policy can be summarised. No input may panic.
#![no_main]

use cmk_guard::policy::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::from_toml_str(text, "fuzz.toml") {
        Ok(policy) => {
            let today = time::Date::from_calendar_date(2026, time::Month::November, 28)
                .unwrap_or(time::Date::MIN);
            let _ = policy.summary(today);
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
});

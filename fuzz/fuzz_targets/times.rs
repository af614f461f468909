//! Times and positions typed by people: --since, --until, Last-Event-ID.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(ms) = iapeer::core::clock::parse_rfc3339(&text) {
        let shown = iapeer::core::clock::format_ms(ms);
        if !shown.starts_with('@') {
            assert_eq!(iapeer::core::clock::parse_rfc3339(&shown), Some(ms));
        }
    }
    let _ = iapeer::core::clock::parse_duration(&text);
    if let Ok(pos) = text.parse::<iapeer::store::log::Position>() {
        assert_eq!(pos.to_string().parse::<iapeer::store::log::Position>(), Ok(pos));
    }
});

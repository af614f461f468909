//! `.session` records: parsed, they serialize and parse back unchanged.
#![no_main]

use iapeer::core::session::SessionRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = SessionRecord::parse(data) {
        let bytes = serde_json::to_vec(&rec).expect("a record serializes");
        assert_eq!(SessionRecord::parse(&bytes).expect("and parses back"), rec);
        let _ = rec.started_ms();
    }
});

//! lifecycle.log lines: whatever a torn write or a hand edit leaves, every
//! reader (parse, metrics, why, the human form) takes it.
#![no_main]

use iapeer::core::record::{Entry, Record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    if let Some(entry) = Entry::parse(&line) {
        let mut metrics = iapeer::core::metrics::Metrics::default();
        metrics.apply(&entry);
        let _ = metrics.prometheus(&Default::default());
        let _ = iapeer::core::history::history([&entry]);
        let _ = iapeer::cmd::log::human(&entry);
    }
    if let Ok(record) = serde_json::from_str::<Record>(&line) {
        // What we can read, we can write back, and read again the same.
        let again: Record = serde_json::from_str(&record.to_line()).expect("a written line parses");
        assert_eq!(again, record);
    }
});

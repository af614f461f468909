//! Boolean markers, `.topic` and `.deaths`, as any script or crash may
//! leave them.
#![no_main]

use iapeer::core::marker::{parse_deaths, parse_flag, parse_topic, TOPIC_MAX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_flag(data);
    if let Ok(Some(topic)) = parse_topic(data) {
        assert!(topic.len() <= TOPIC_MAX && !topic.contains('\n'));
    }
    let deaths = parse_deaths(data);
    let ring = deaths.ring.entries();
    assert!(ring.len() <= iapeer::core::crash_ring::CAPACITY);
    assert!(ring.windows(2).all(|w| w[0] <= w[1]));
    // Whatever was read, the guard's maths hold.
    let policy = iapeer::core::crash_ring::Policy { max: 3, window_ms: 300_000 };
    let _ = deaths.ring.guard(1_800_000_000_000, policy);
});

//! `peers/<name>.json`: a definition loads (and then saves and reloads to
//! the same thing) or is an error naming the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let file = Path::new("peers/x.json");
    match iapeer::core::peer::parse(file, data, None) {
        Ok(peer) => {
            let saved = serde_json::to_vec(&peer).expect("a loaded peer serializes");
            let again = iapeer::core::peer::parse(file, &saved, None).expect("a saved peer loads");
            assert_eq!(peer, again);
        }
        Err(e) => assert!(e.to_string().contains("peers/x.json")),
    }
});

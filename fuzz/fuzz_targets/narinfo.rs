//! Invariants: parsing never panics; whatever parses serializes to text that parses back equal,
//! and serializing that again is stable.
#![no_main]

use cachecore::narinfo::NarInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = NarInfo::parse_bytes(data) {
        let text = info.to_string();
        let again = NarInfo::parse(&text).expect("a serialized narinfo must parse");
        assert_eq!(again, info);
        assert_eq!(again.to_string(), text);
        let _ = info.fingerprint();
    }
});

//! Invariants: parsing never panics; a parsed path prints back as its input.
#![no_main]

use cachecore::store_path::{StoreDir, StorePath};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(path) = StorePath::from_base_name(text) {
        assert_eq!(path.to_string(), text);
    }
    let dir = StoreDir::default();
    if let Ok(path) = dir.parse_path(text) {
        assert_eq!(dir.display(&path).to_string(), text);
    }
    let _ = dir.parse_path_with_subpath(text);
    let _ = cachecore::hash::Hash::parse(text);
    let _ = cachecore::nixbase32::decode(data);
});

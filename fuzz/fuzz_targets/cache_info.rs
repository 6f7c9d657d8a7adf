//! Invariants of `nix-cache-info` parsing (the first file read from any cache), for any text:
//! it never panics; what parses prints to text that parses equal and prints the same again.
#![no_main]

use cachecore::cache_info::CacheInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(info) = CacheInfo::parse(text) else { return };
    let printed = info.to_string();
    let again = CacheInfo::parse(&printed).expect("a printed nix-cache-info parses");
    assert_eq!(again, info);
    assert_eq!(again.to_string(), printed);
});

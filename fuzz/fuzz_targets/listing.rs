//! Invariants: parsing a listing never panics; a parsed listing serializes to JSON that parses
//! back equal.
#![no_main]

use cachecore::nar::Listing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(listing) = Listing::parse(data) {
        let json = serde_json::to_vec(&listing).expect("a listing serializes");
        let again = Listing::parse(&json).expect("a serialized listing parses");
        assert_eq!(again, listing);
    }
});

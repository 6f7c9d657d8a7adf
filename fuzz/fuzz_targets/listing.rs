//! Invariants: parsing a listing never panics; a parsed listing serializes to JSON that parses
//! back equal; reading one node (`Listing::parse_node`) never panics, and out of a listing that
//! parses it finds what `Listing::get` finds.
#![no_main]

use cachecore::nar::Listing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for path in ["", "a", "a/b", "bin/app"] {
        let _ = Listing::parse_node(data, path);
    }
    if let Ok(listing) = Listing::parse(data) {
        for (path, node) in listing.walk().take(64) {
            let found = Listing::parse_node(data, &path).expect("a node of a listing that parses");
            assert_eq!(found.as_ref(), Some(node), "{path}");
        }
        let json = serde_json::to_vec(&listing).expect("a listing serializes");
        let again = Listing::parse(&json).expect("a serialized listing parses");
        assert_eq!(again, listing);
    }
});

//! Invariants of realisation parsing (`realisations/<drv hash>!<output>.doi`, JSON from the
//! cache), for any text: it never panics; what parses prints to JSON that parses equal and
//! prints the same again.
#![no_main]

use cachecore::realisation::{DrvOutput, Realisation};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(id) = DrvOutput::parse(text) {
        let printed = id.to_string();
        assert_eq!(DrvOutput::parse(&printed).expect("a printed id parses"), id);
    }
    let Ok(r) = Realisation::parse(text) else { return };
    let json = r.to_json();
    let again = Realisation::parse(&json).expect("printed JSON parses");
    assert_eq!(again, r);
    assert_eq!(again.to_json(), json);
});

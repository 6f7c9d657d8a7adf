//! Invariants: parsing a seek table from any tail never panics; a parsed table is consistent
//! (offsets add up, `frames_covering` and `compressed_range` agree), writes back to bytes that
//! parse to the same frames, and decoding ranges of the input itself with it errors or succeeds
//! but never panics.
#![no_main]

use cachecore::seekable::{decompress_range, SeekTable};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(table) = SeekTable::parse_from_tail(data) else {
        return;
    };
    let (mut c, mut d) = (0u64, 0u64);
    for f in table.frames() {
        assert_eq!(f.compressed_offset, c);
        assert_eq!(f.decompressed_offset, d);
        c += u64::from(f.compressed_size);
        d += u64::from(f.decompressed_size);
    }
    assert_eq!(table.compressed_len(), c);
    assert_eq!(table.decompressed_len(), d);
    assert!(table.seek_table_len() <= data.len() as u64);

    let again = SeekTable::parse_from_tail(&table.to_bytes()).expect("a written table parses");
    assert_eq!(again.frames(), table.frames());

    // Ranges: the whole, the first and last bytes, the middle; decoded against the input itself
    // when it is long enough to be the object.
    let len = table.decompressed_len();
    let object_ok = table.check_object_len(data.len() as u64).is_ok();
    for range in [0..len, 0..len.min(1), len.saturating_sub(1)..len, len / 3..len / 2] {
        let covering = table.frames_covering(range.clone());
        let cr = table.compressed_range(range.clone()).expect("an in-bounds range");
        if let (Some(first), Some(last)) = (covering.first(), covering.last()) {
            assert_eq!(cr, first.compressed_offset..last.compressed_range().end);
        }
        if object_ok && len <= 1 << 20 {
            let _ = decompress_range(&table, &data[cr.start as usize..], range);
        }
    }
    assert!(table.compressed_range(0..len + 1).is_err());
});

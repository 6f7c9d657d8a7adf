//! Invariant of reading a seekable `.nar.zst` whose seek table is valid but whose frames were
//! damaged (a cache serves bytes it may have corrupted): a decoded range is either exactly the
//! original bytes or an error — never other bytes. Each frame carries a checksum that
//! `decompress_range` checks, and its decompressed size must match the table.
//!
//! Input: pairs (position: u32 little-endian, xor: u8) applied to the frames (not the table),
//! then a range (start: u32, len: u16) to decode.
#![no_main]

use std::sync::OnceLock;

use cachecore::seekable::{decompress_range, SeekTable, SeekableOptions, SeekableWriter};
use libfuzzer_sys::fuzz_target;

/// 200 KiB of half-random, half-text bytes in frames of 8 KiB: (data, object, table).
fn fixture() -> &'static (Vec<u8>, Vec<u8>, SeekTable) {
    static F: OnceLock<(Vec<u8>, Vec<u8>, SeekTable)> = OnceLock::new();
    F.get_or_init(|| {
        let mut data = Vec::new();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        while data.len() < 200 << 10 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (data.len() / 5000) % 2 == 0 {
                data.extend_from_slice(&x.to_le_bytes());
            } else {
                data.extend_from_slice(format!("line {} ", x % 100).as_bytes());
            }
        }
        let opts = SeekableOptions { level: 3, frame_size: 8 << 10, threads: 1 };
        let mut w = SeekableWriter::new(Vec::new(), opts).expect("a writer");
        std::io::Write::write_all(&mut w, &data).expect("compress");
        let (object, table) = w.finish().expect("finish");
        assert!(table.len() > 10);
        (data, object, table)
    })
}

fuzz_target!(|input: &[u8]| {
    let (data, object, table) = fixture();
    if input.len() < 6 {
        return;
    }
    let (edits, range) = input.split_at(input.len() - 6);
    let frames_len = table.compressed_len() as usize;
    let mut damaged = object.clone();
    for e in edits.chunks_exact(5) {
        let pos = u32::from_le_bytes([e[0], e[1], e[2], e[3]]) as usize % frames_len;
        damaged[pos] ^= e[4].max(1);
    }
    let len = table.decompressed_len();
    let start = u64::from(u32::from_le_bytes([range[0], range[1], range[2], range[3]])) % len;
    let end = (start + u64::from(u16::from_le_bytes([range[4], range[5]]))).min(len);
    let cr = table.compressed_range(start..end).expect("an in-bounds range");
    let decoded = decompress_range(table, &damaged[cr.start as usize..], start..end);
    if let Ok(bytes) = decoded {
        assert!(
            bytes[..] == data[start as usize..end as usize],
            "damaged frames decoded to other bytes for {start}..{end}"
        );
    }
});

//! Invariants of `nar::unpack` into a temporary directory, for any input:
//! - it never panics;
//! - it never writes outside its destination: a sibling directory stays empty, and the parent
//!   holds nothing but the destination (or nothing at all after an error: nothing half-written,
//!   no staging directory left behind);
//! - it never follows a symlink it created: whatever the NAR says, every path written is a
//!   real directory entry under the destination (checked by walking it without following links);
//! - a NAR it accepts is canonical: packing the unpacked tree gives the input back, byte for
//!   byte.
#![no_main]

use std::fs;
use std::path::Path;

use cachecore::nar;
use libfuzzer_sys::fuzz_target;

/// Every entry under `dir`, without following symlinks, as paths relative to `root`.
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in fs::read_dir(dir).expect("readable") {
        let entry = entry.expect("an entry");
        let path = entry.path();
        out.push(path.strip_prefix(root).expect("under root").display().to_string());
        if entry.file_type().expect("a type").is_dir() {
            walk(root, &path, out);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).expect("mkdir");
    let dest = tmp.path().join("out");
    let result = nar::unpack(data, &dest);

    let mut outside_entries = Vec::new();
    walk(&outside, &outside, &mut outside_entries);
    assert!(outside_entries.is_empty(), "unpack wrote outside its destination: {outside_entries:?}");
    let mut top: Vec<String> = fs::read_dir(tmp.path())
        .expect("readable")
        .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    match result {
        Err(_) => assert_eq!(top, ["outside"], "a failed unpack left something behind"),
        Ok(()) => {
            assert_eq!(top, ["out", "outside"], "unpack wrote beside its destination");
            // Packing what was unpacked (symlinks are packed as links, never followed) gives
            // the input back.
            let mut packed = Vec::new();
            nar::pack(&dest, &mut packed).expect("the unpacked tree packs");
            assert!(packed == data, "an accepted NAR is not what its unpacked tree packs to");
        }
    }
});

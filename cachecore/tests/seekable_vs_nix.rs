//! Real Nix (2.8) substitutes a NAR written by [`cachecore::seekable::SeekableWriter`]: a
//! `file://` cache made by `nix copy` gets its `.nar.zst` replaced by a seekable one (many frames,
//! ended at file boundaries) and its narinfo updated; `nix copy --from` that cache into a fresh
//! store must then succeed and produce the same tree. Nix must be installed: a missing `nix`
//! fails the test (`apt-get install -y nix-bin`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use cachecore::hash::{Hash, HashAlgo};
use cachecore::nar::{self, Listing, ListingNode};
use cachecore::narinfo::NarInfo;
use cachecore::seekable::{SeekTable, SeekableOptions, SeekableWriter};

mod common;

use common::{mixed_bytes as contents, nix, tempdir};

fn make_fixture(root: &Path) {
    fs::create_dir_all(root.join("lib/sub")).unwrap();
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(root.join("lib/big.bin"), contents(700_000, 1)).unwrap();
    fs::write(root.join("lib/sub/medium.txt"), contents(150_000, 2)).unwrap();
    for i in 0..40 {
        fs::write(
            root.join(format!("lib/sub/small-{i:02}")),
            contents(3_000 + i * 517, 10 + i as u64),
        )
        .unwrap();
    }
    fs::write(root.join("lib/empty"), b"").unwrap();
    fs::write(root.join("bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("../lib/big.bin", root.join("bin/link")).unwrap();
}

/// Compresses `nar` with the seekable writer, hinting at each file's contents.
fn seekable_compress(nar_bytes: &[u8]) -> (Vec<u8>, SeekTable) {
    let mut offsets: Vec<usize> = Listing::from_nar(nar_bytes)
        .unwrap()
        .walk()
        .filter_map(|(_, node)| match node {
            ListingNode::Regular {
                nar_offset: Some(o),
                ..
            } => Some(*o as usize),
            _ => None,
        })
        .collect();
    offsets.sort_unstable();
    let opts = SeekableOptions {
        level: 3,
        frame_size: 64 * 1024,
        threads: 2,
    };
    let mut w = SeekableWriter::new(Vec::new(), opts).unwrap();
    let mut pos = 0;
    for o in offsets {
        w.write_all(&nar_bytes[pos..o]).unwrap();
        w.boundary_hint().unwrap();
        pos = o;
    }
    w.write_all(&nar_bytes[pos..]).unwrap();
    w.finish().unwrap()
}

#[test]
fn nix_substitutes_a_seekable_nar() {
    let tmp = tempdir();
    let src = tmp.path().join("seekable-fixture");
    make_fixture(&src);
    let store_path = nix("nix-store", &["--add", src.to_str().unwrap()]);

    let cache = tmp.path().join("cache");
    let cache_url = format!("file://{}", cache.display());
    nix(
        "nix",
        &[
            "copy",
            "--to",
            &format!("{cache_url}?compression=zstd"),
            &store_path,
        ],
    );

    let hash_part = &store_path.rsplit('/').next().unwrap()[..32];
    let narinfo_file = cache.join(format!("{hash_part}.narinfo"));
    let mut info = NarInfo::parse(&fs::read_to_string(&narinfo_file).unwrap()).unwrap();
    assert_eq!(info.compression.as_deref(), Some("zstd"));

    // Replace Nix's NAR with a seekable one of the same NAR.
    let mut nar_bytes = Vec::new();
    nar::dump(Path::new(&store_path), &mut nar_bytes).unwrap();
    assert_eq!(Hash::digest(HashAlgo::Sha256, &nar_bytes), info.nar_hash);
    let (object, table) = seekable_compress(&nar_bytes);
    assert!(
        table.len() > 10,
        "the NAR should span many frames, got {}",
        table.len()
    );
    let file_starts: Vec<u64> = Listing::from_nar(&nar_bytes[..])
        .unwrap()
        .walk()
        .filter_map(|(_, node)| match node {
            ListingNode::Regular {
                nar_offset: Some(o),
                ..
            } => Some(*o),
            _ => None,
        })
        .collect();
    let ended_at_files = table.frames()[1..]
        .iter()
        .filter(|f| file_starts.contains(&f.decompressed_offset))
        .count();
    assert!(
        ended_at_files >= 5,
        "boundary hints should end frames at files, got {ended_at_files}"
    );
    let file_hash = Hash::digest(HashAlgo::Sha256, &object);
    let new_url = format!("nar/{}.nar.zst", file_hash.to_nix32());
    fs::remove_file(cache.join(&info.url)).unwrap();
    fs::write(cache.join(&new_url), &object).unwrap();
    info.url = new_url;
    info.file_hash = Some(file_hash);
    info.file_size = Some(object.len() as u64);
    fs::write(&narinfo_file, info.to_string()).unwrap();

    // Nix substitutes from it into a fresh store, checking the NarHash as it goes.
    let fresh = tmp.path().join("fresh-store");
    nix(
        "nix",
        &[
            "copy",
            "--from",
            &cache_url,
            "--to",
            fresh.to_str().unwrap(),
            "--no-check-sigs",
            &store_path,
        ],
    );
    let copied = fresh.join(store_path.trim_start_matches('/'));
    let mut copied_nar = Vec::new();
    nar::dump(&copied, &mut copied_nar).unwrap();
    assert!(
        copied_nar == nar_bytes,
        "the substituted tree differs from the original"
    );

    // The object Nix read is also seekable: every file's contents read by range.
    let parsed = SeekTable::parse_from_tail(&object).unwrap();
    parsed.check_object_len(object.len() as u64).unwrap();
    let listing = Listing::from_nar(&nar_bytes[..]).unwrap();
    for (path, node) in listing.walk() {
        if let ListingNode::Regular {
            size,
            nar_offset: Some(o),
            ..
        } = node
        {
            let range = *o..*o + *size;
            let cr = parsed.compressed_range(range.clone()).unwrap();
            let got = cachecore::seekable::decompress_range(
                &parsed,
                &object[cr.start as usize..cr.end as usize],
                range.clone(),
            )
            .unwrap();
            assert_eq!(got, fs::read(src.join(&path)).unwrap(), "{path}");
        }
    }
}

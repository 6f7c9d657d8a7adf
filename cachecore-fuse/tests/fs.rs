//! `CacheFs` without the kernel: a real tree pushed into a local-directory cache, walked through
//! lookup/getattr/readdir/readlink/read and compared with the tree on disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;

use cachecore::blocking;
use cachecore::compression::{Compression, NarCompression};
use cachecore::error::ErrorKind;
use cachecore::ops::{NoProgress, PushOptions};
use cachecore::signing::SecretKey;
use cachecore::store::BinaryCache;
use cachecore::store_path::{StoreDir, StorePath};
use cachecore_fuse::{CacheFs, Check, FileKind, FsOptions, ROOT};

/// Text-like bytes (compressible, not trivially).
fn text(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(format!("w{} ", x % 4099).as_bytes());
    }
    out.truncate(len);
    out
}

/// A tree with directories, an executable, a large file (several frames), an empty file and
/// symlinks.
fn tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("share/doc/empty")).unwrap();
    std::fs::write(dir.join("bin/app"), b"#!/bin/sh\necho app\n").unwrap();
    std::fs::set_permissions(dir.join("bin/app"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("share/big"), text(3, 5 << 20)).unwrap();
    std::fs::write(dir.join("share/doc/README"), b"read me\n").unwrap();
    std::fs::write(dir.join("share/empty-file"), b"").unwrap();
    std::os::unix::fs::symlink("../share/doc/README", dir.join("bin/readme")).unwrap();
    std::os::unix::fs::symlink("/nix/store/nowhere", dir.join("dangling")).unwrap();
}

struct Fixture {
    _src: tempfile::TempDir,
    src_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    url: String,
    path: StorePath,
    key: Arc<SecretKey>,
}

fn pushed(method: Compression, sign: bool) -> Fixture {
    let src = tempfile::tempdir().unwrap();
    let src_path = src.path().join("pkg");
    tree(&src_path);
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap().to_owned();
    let cache = blocking::BinaryCache::open(&url).unwrap();
    cache.init(&Default::default()).unwrap();
    let key = Arc::new(SecretKey::generate("test-1").unwrap());
    let opts = PushOptions {
        compression: NarCompression::new(method, None),
        signers: if sign {
            vec![key.clone() as Arc<dyn cachecore::signing::Signer>]
        } else {
            vec![]
        },
        ..PushOptions::default()
    };
    let (path, _) = cache
        .push_add(
            &StoreDir::default(),
            &src_path,
            "pkg",
            &opts,
            Arc::new(NoProgress),
        )
        .unwrap();
    Fixture {
        _src: src,
        src_path,
        _dir: dir,
        url,
        path,
        key,
    }
}

fn unchecked() -> FsOptions {
    FsOptions {
        trusted_keys: vec![],
        check_signatures: false,
        check: Check::Ranges,
        nar_cache: None,
        memory: 64 << 20,
    }
}

/// Walks the mounted tree from `ino`, collecting path → (kind, size, executable, contents or
/// target).
fn walk(
    fs: &CacheFs,
    ino: u64,
    prefix: &str,
    out: &mut BTreeMap<String, (FileKind, bool, Vec<u8>)>,
) {
    for e in fs.readdir(ino).unwrap() {
        let name = format!("{prefix}/{}", e.name.to_str().unwrap());
        let attr = fs.lookup(ino, &e.name).unwrap();
        assert_eq!(attr.ino, e.ino, "{name}: lookup and readdir agree");
        assert_eq!(fs.getattr(e.ino).unwrap(), attr, "{name}");
        let data = match attr.kind {
            FileKind::Directory => {
                walk(fs, e.ino, &name, out);
                Vec::new()
            }
            FileKind::Symlink => {
                use std::os::unix::ffi::OsStrExt as _;
                fs.readlink(e.ino).unwrap().as_bytes().to_vec()
            }
            FileKind::Regular => {
                // In 128 KiB reads, as the kernel asks.
                let mut data = Vec::new();
                loop {
                    let chunk = fs.read(e.ino, data.len() as u64, 128 << 10).unwrap();
                    if chunk.is_empty() {
                        break;
                    }
                    data.extend_from_slice(&chunk);
                }
                assert_eq!(data.len() as u64, attr.size, "{name}");
                data
            }
        };
        out.insert(name, (attr.kind, attr.executable, data));
    }
}

fn on_disk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, (FileKind, bool, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = format!("{prefix}/{}", entry.file_name().to_str().unwrap());
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        let value = if meta.is_dir() {
            on_disk(&entry.path(), &name, out);
            (FileKind::Directory, true, Vec::new())
        } else if meta.file_type().is_symlink() {
            use std::os::unix::ffi::OsStrExt as _;
            let target = std::fs::read_link(entry.path()).unwrap();
            (
                FileKind::Symlink,
                false,
                target.as_os_str().as_bytes().to_vec(),
            )
        } else {
            let exec = meta.permissions().mode() & 0o100 != 0;
            (
                FileKind::Regular,
                exec,
                std::fs::read(entry.path()).unwrap(),
            )
        };
        out.insert(name, value);
    }
}

#[test]
fn the_tree_reads_as_it_is_on_disk_in_every_check_mode() {
    for (method, check) in [
        (Compression::Zstd, Check::Ranges),
        (Compression::Xz, Check::Ranges),
        (Compression::Zstd, Check::Nar),
    ] {
        let f = pushed(method, false);
        let kept = tempfile::tempdir().unwrap();
        let options = FsOptions {
            check,
            nar_cache: Some(cachecore::access::NarCache::open(kept.path(), 1 << 30).unwrap()),
            ..unchecked()
        };
        let fs = CacheFs::new(BinaryCache::open(&f.url).unwrap(), options).unwrap();
        // The root lists the pushed path (a local directory can list).
        let root = fs.readdir(ROOT).unwrap();
        assert_eq!(root.len(), 1);
        assert_eq!(root[0].name, OsStr::new(&f.path.to_string()));
        let top = fs.lookup(ROOT, &root[0].name).unwrap();
        assert_eq!(top.kind, FileKind::Directory);
        let mut mounted = BTreeMap::new();
        walk(&fs, top.ino, "", &mut mounted);
        let mut expected = BTreeMap::new();
        on_disk(&f.src_path, "", &mut expected);
        assert_eq!(
            mounted.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{method} {check:?}"
        );
        for (name, value) in &expected {
            assert!(
                mounted[name] == *value,
                "{name} differs ({method} {check:?})"
            );
        }
        // Inodes are stable: a second walk finds the same numbers.
        let again = fs.lookup(ROOT, &root[0].name).unwrap();
        assert_eq!(again, top);
        // Reads past the end give nothing; a read across it gives the rest.
        let share = fs.lookup(top.ino, "share".as_ref()).unwrap();
        let readme = fs.lookup(share.ino, "doc".as_ref()).unwrap();
        let readme = fs.lookup(readme.ino, "README".as_ref()).unwrap();
        assert!(fs.read(readme.ino, 100, 10).unwrap().is_empty());
        assert_eq!(&fs.read(readme.ino, 5, 100).unwrap()[..], b"me\n");
        // What is not there.
        let e = fs.lookup(top.ino, "nope".as_ref()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let e = fs.readlink(readme.ino).unwrap_err();
        assert_ne!(e.kind(), ErrorKind::NotFound);
        // xz cannot be read at random: the NAR was fetched once into the NAR cache; Check::Nar
        // keeps it too; ranged reads of seekable zstd keep nothing.
        let kept_files = std::fs::read_dir(kept.path()).unwrap().count();
        let expected_kept = usize::from(method == Compression::Xz || check == Check::Nar);
        assert_eq!(kept_files, expected_kept, "{method} {check:?}");
    }
}

#[test]
fn only_paths_signed_by_a_trusted_key_appear() {
    let signed = pushed(Compression::Zstd, true);
    let trusted = FsOptions {
        trusted_keys: vec![signed.key.public_key()],
        check_signatures: true,
        ..unchecked()
    };
    let fs = CacheFs::new(BinaryCache::open(&signed.url).unwrap(), trusted.clone()).unwrap();
    assert_eq!(fs.paths(), 1);
    // The same cache with another trusted key: nothing appears, and a lookup by name fails.
    let other = FsOptions {
        trusted_keys: vec![SecretKey::generate("other-1").unwrap().public_key()],
        ..trusted
    };
    let fs = CacheFs::new(BinaryCache::open(&signed.url).unwrap(), other).unwrap();
    assert_eq!(fs.paths(), 0);
    let e = fs
        .lookup(ROOT, signed.path.to_string().as_ref())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    // A name that is no store path is not looked for.
    let e = fs.lookup(ROOT, "hello".as_ref()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

/// Rewrites the `.ls` listing of the fixture's path with `change` applied to its JSON.
fn tamper_listing(f: &Fixture, change: impl FnOnce(&mut serde_json::Value)) {
    let ls = Path::new(&f.url).join(format!("{}.ls", f.path.hash_part()));
    let json = std::fs::read_to_string(&ls).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    change(&mut value);
    std::fs::write(&ls, serde_json::to_vec(&value).unwrap()).unwrap();
}

#[test]
fn a_listing_that_points_outside_the_nar_is_refused() {
    let f = pushed(Compression::Zstd, false);
    // Move the README far past the end of the NAR.
    tamper_listing(&f, |value| {
        value["root"]["entries"]["share"]["entries"]["doc"]["entries"]["README"]["narOffset"] =
            serde_json::json!(1u64 << 40);
    });
    let fs = CacheFs::new(BinaryCache::open(&f.url).unwrap(), unchecked()).unwrap();
    let e = fs.lookup(ROOT, f.path.to_string().as_ref()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("outside"), "{e}");
}

#[test]
fn with_check_nar_a_flipped_byte_is_an_error_never_wrong_bytes() {
    // Uncompressed, so that the flipped byte decodes fine and only the NarHash can tell.
    let f = pushed(Compression::None, true);
    let cache = BinaryCache::open(&f.url).unwrap();
    let info = blocking::BinaryCache::from_async(cache.clone())
        .narinfo(&f.path)
        .unwrap()
        .unwrap();
    let object = Path::new(&f.url).join(&info.url);
    let mut bytes = std::fs::read(&object).unwrap();
    let at = bytes.windows(8).position(|w| w == b"read me\n").unwrap();
    bytes[at] = b'R';
    std::fs::write(&object, &bytes).unwrap();
    let open = |check| {
        let fs = CacheFs::new(
            cache.clone(),
            FsOptions {
                trusted_keys: vec![f.key.public_key()],
                check_signatures: true,
                check,
                nar_cache: None,
                memory: 64 << 20,
            },
        )
        .unwrap();
        let top = fs.lookup(ROOT, f.path.to_string().as_ref());
        (fs, top)
    };
    // Ranged reads cannot tell (this is what --check nar is for).
    let (fs, top) = open(Check::Ranges);
    let top = top.unwrap();
    let share = fs.lookup(top.ino, "share".as_ref()).unwrap();
    let doc = fs.lookup(share.ino, "doc".as_ref()).unwrap();
    let readme = fs.lookup(doc.ino, "README".as_ref()).unwrap();
    assert_eq!(&fs.read(readme.ino, 0, 100).unwrap()[..], b"Read me\n");
    // Check::Nar: listing needs no NAR byte, but no content is served from a NAR that fails
    // its check.
    let (fs, top) = open(Check::Nar);
    let top = top.unwrap();
    let share = fs.lookup(top.ino, "share".as_ref()).unwrap();
    let doc = fs.lookup(share.ino, "doc".as_ref()).unwrap();
    let readme = fs.lookup(doc.ino, "README".as_ref()).unwrap();
    let e = fs.read(readme.ino, 0, 100).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    let bin = fs.lookup(top.ino, "bin".as_ref()).unwrap();
    let link = fs.lookup(bin.ino, "readme".as_ref()).unwrap();
    assert_eq!(
        fs.readlink(link.ino).unwrap_err().kind(),
        ErrorKind::Corrupt
    );
}

#[test]
fn with_check_nar_a_listing_that_lies_serves_nothing() {
    let f = pushed(Compression::Zstd, true);
    // The listing claims the script is not executable (and the NAR is intact).
    tamper_listing(&f, |value| {
        let app = &mut value["root"]["entries"]["bin"]["entries"]["app"];
        app.as_object_mut().unwrap().remove("executable");
    });
    let options = |check| FsOptions {
        trusted_keys: vec![f.key.public_key()],
        check_signatures: true,
        check,
        nar_cache: None,
        memory: 64 << 20,
    };
    let fs = CacheFs::new(BinaryCache::open(&f.url).unwrap(), options(Check::Nar)).unwrap();
    let top = fs.lookup(ROOT, f.path.to_string().as_ref()).unwrap();
    let bin = fs.lookup(top.ino, "bin".as_ref()).unwrap();
    let app = fs.lookup(bin.ino, "app".as_ref()).unwrap();
    assert!(!app.executable, "the listing's word, until checked");
    let e = fs.read(app.ino, 0, 100).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("does not describe the NAR"), "{e}");
    // Every other file of the path too.
    let share = fs.lookup(top.ino, "share".as_ref()).unwrap();
    let big = fs.lookup(share.ino, "big".as_ref()).unwrap();
    assert_eq!(
        fs.read(big.ino, 0, 10).unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    // Ranged reads cannot tell (the contents are where the listing says).
    let fs = CacheFs::new(BinaryCache::open(&f.url).unwrap(), options(Check::Ranges)).unwrap();
    let top = fs.lookup(ROOT, f.path.to_string().as_ref()).unwrap();
    let bin = fs.lookup(top.ino, "bin".as_ref()).unwrap();
    let app = fs.lookup(bin.ino, "app".as_ref()).unwrap();
    assert_eq!(&fs.read(app.ino, 0, 9).unwrap()[..], b"#!/bin/sh");
}

#[test]
fn with_check_frames_a_signed_path_reads_by_checked_frames_and_refuses_what_was_changed() {
    let f = pushed(Compression::Zstd, true);
    let kept = tempfile::tempdir().unwrap();
    let options = |kept: &Path| FsOptions {
        trusted_keys: vec![f.key.public_key()],
        check_signatures: true,
        check: Check::Frames,
        nar_cache: Some(cachecore::access::NarCache::open(kept, 1 << 30).unwrap()),
        memory: 64 << 20,
    };
    let fs = CacheFs::new(BinaryCache::open(&f.url).unwrap(), options(kept.path())).unwrap();
    let top = fs.lookup(ROOT, f.path.to_string().as_ref()).unwrap();
    let mut mounted = BTreeMap::new();
    walk(&fs, top.ino, "", &mut mounted);
    let mut expected = BTreeMap::new();
    on_disk(&f.src_path, "", &mut expected);
    assert!(mounted == expected, "the tree differs");
    // Read by frames: no whole NAR was fetched; the frames read were kept.
    let names: Vec<String> = std::fs::read_dir(kept.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".nar")), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("frame-")), "{names:?}");

    // A byte flipped in the second frame: what it holds is refused, the first frame reads.
    let cache = BinaryCache::open(&f.url).unwrap();
    let info = blocking::BinaryCache::from_async(cache.clone())
        .narinfo(&f.path)
        .unwrap()
        .unwrap();
    let object = Path::new(&f.url).join(&info.url);
    let mut bytes = std::fs::read(&object).unwrap();
    let table = cachecore::seekable::SeekTable::parse_from_tail(&bytes).unwrap();
    assert!(table.len() >= 2);
    let second = table.frames()[1];
    bytes[second.compressed_offset as usize + 10] ^= 0x20;
    std::fs::write(&object, &bytes).unwrap();
    // (A directory of its own: the one above keeps the intact frames, and would serve them.)
    let fresh = tempfile::tempdir().unwrap();
    let fs = CacheFs::new(cache.clone(), options(fresh.path())).unwrap();
    let top = fs.lookup(ROOT, f.path.to_string().as_ref()).unwrap();
    let bin = fs.lookup(top.ino, "bin".as_ref()).unwrap();
    let app = fs.lookup(bin.ino, "app".as_ref()).unwrap();
    assert_eq!(&fs.read(app.ino, 0, 9).unwrap()[..], b"#!/bin/sh");
    let share = fs.lookup(top.ino, "share".as_ref()).unwrap();
    let big = fs.lookup(share.ino, "big".as_ref()).unwrap();
    let e = fs.read(big.ino, big.size - 10, 10).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("signed digest"), "{e}");
    bytes[second.compressed_offset as usize + 10] ^= 0x20;
    std::fs::write(&object, &bytes).unwrap();

    // A listing that lies (the script not executable): the path's tree is refused at once.
    tamper_listing(&f, |value| {
        let app = &mut value["root"]["entries"]["bin"]["entries"]["app"];
        app.as_object_mut().unwrap().remove("executable");
    });
    let fs = CacheFs::new(cache.clone(), options(fresh.path())).unwrap();
    let e = fs
        .lookup(ROOT, f.path.to_string().as_ref())
        .and_then(|top| fs.lookup(top.ino, "bin".as_ref()))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("ListingHash"), "{e}");
}

#[test]
fn memory_bounds_the_trees_of_loaded_listings_and_a_dropped_tree_comes_back_with_its_inodes() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap().to_owned();
    let cache = blocking::BinaryCache::open(&url).unwrap();
    cache.init(&Default::default()).unwrap();
    // Two paths of 2,000 files: each tree is larger than the quarter of --memory trees get.
    let paths: Vec<StorePath> = (0..2)
        .map(|p| {
            let src = tempfile::tempdir().unwrap();
            for i in 0..2000 {
                std::fs::write(src.path().join(format!("f{i:05}")), format!("{p}/{i}\n")).unwrap();
            }
            let (path, _) = cache
                .push_add(
                    &StoreDir::default(),
                    src.path(),
                    &format!("many{p}"),
                    &PushOptions::default(),
                    Arc::new(NoProgress),
                )
                .unwrap();
            path
        })
        .collect();
    let memory = 1 << 20;
    let fs = CacheFs::new(
        BinaryCache::open(&url).unwrap(),
        FsOptions {
            memory,
            ..unchecked()
        },
    )
    .unwrap();
    let top_a = fs.lookup(ROOT, paths[0].to_string().as_ref()).unwrap();
    let file_a = fs.lookup(top_a.ino, "f00042".as_ref()).unwrap();
    let one_tree = fs.tree_bytes();
    assert!(
        one_tree > memory / 4,
        "the test's trees are too small: {one_tree}"
    );
    let top_b = fs.lookup(ROOT, paths[1].to_string().as_ref()).unwrap();
    let file_b = fs.lookup(top_b.ino, "f01999".as_ref()).unwrap();
    // The first tree was dropped: one tree is held, not two.
    assert!(
        fs.tree_bytes() < one_tree * 3 / 2,
        "{} bytes of trees held, one is {one_tree}",
        fs.tree_bytes()
    );
    // Its inodes still answer, with the same numbers and contents (read again).
    assert_eq!(fs.getattr(file_a.ino).unwrap(), file_a);
    assert_eq!(&fs.read(file_a.ino, 0, 100).unwrap()[..], b"0/42\n");
    assert_eq!(fs.lookup(top_a.ino, "f00042".as_ref()).unwrap(), file_a);
    let listed = fs.readdir(top_a.ino).unwrap();
    assert_eq!(listed.len(), 2000);
    assert!(listed
        .iter()
        .any(|e| e.ino == file_a.ino && e.name == "f00042"));
    // And the second's, dropped in turn.
    assert_eq!(&fs.read(file_b.ino, 0, 100).unwrap()[..], b"1/1999\n");
    assert!(fs.tree_bytes() < one_tree * 3 / 2);
}

/// A reader going through a path's files in order is given the next files already in memory
/// (for the kernel's page cache): the same bytes as a read, none after a seek, none that are
/// not decoded yet, and no I/O for any of it.
#[test]
fn following_gives_the_next_files_in_memory_to_a_reader_going_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap().to_owned();
    let cache = blocking::BinaryCache::open(&url).unwrap();
    cache.init(&Default::default()).unwrap();
    let src = tempfile::tempdir().unwrap();
    // 400 files of ~30 KiB: 12 MB of text, three 4 MiB frames; a directory and a symlink
    // among them.
    for i in 0..400u64 {
        std::fs::write(
            src.path().join(format!("f{i:03}")),
            text(i, 30_000 + i as usize),
        )
        .unwrap();
    }
    std::fs::create_dir(src.path().join("f010-dir")).unwrap();
    std::fs::write(src.path().join("f010-dir/inner"), b"inner\n").unwrap();
    std::os::unix::fs::symlink("f000", src.path().join("f020-link")).unwrap();
    let (path, _) = cache
        .push_add(
            &StoreDir::default(),
            src.path(),
            "in-order",
            &PushOptions::default(),
            Arc::new(NoProgress),
        )
        .unwrap();
    // A listing that lies (unsigned, read unchecked): f050 said to be where f051 is (the
    // contents header there gives another size).
    let ls = dir.path().join(format!("{}.ls", path.hash_part()));
    let mut listing: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ls).unwrap()).unwrap();
    let entries = &mut listing["root"]["entries"];
    entries["f050"]["narOffset"] = entries["f051"]["narOffset"].clone();
    std::fs::write(&ls, serde_json::to_vec(&listing).unwrap()).unwrap();
    let fs = CacheFs::new(BinaryCache::open(&url).unwrap(), unchecked()).unwrap();
    let top = fs.lookup(ROOT, path.to_string().as_ref()).unwrap();
    let ino = |name: &str| fs.lookup(top.ino, name.as_ref()).unwrap().ino;
    let expected = |name: &str| std::fs::read(src.path().join(name)).unwrap();

    // The first file read: nothing (one read is not an order yet).
    assert_eq!(
        &fs.read(ino("f000"), 0, 1 << 20).unwrap()[..],
        &expected("f000")[..]
    );
    assert!(fs.following(ino("f000"), 0).is_empty());
    // The next one: the files after it whose frames are decoded, each whole and right.
    assert_eq!(
        &fs.read(ino("f001"), 0, 1 << 20).unwrap()[..],
        &expected("f001")[..]
    );
    let given = fs.following(ino("f001"), 0);
    // Up to the file the listing lies about: never given (a read of it fails).
    // (f002..f049, and the file inside f010-dir: 49.)
    assert_eq!(given.len(), 49, "{} files given", given.len());
    assert_eq!(given.last().unwrap().0, ino("f049"));
    let e = fs.read(ino("f050"), 0, 1 << 20).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    let names: BTreeMap<u64, String> = (0..400)
        .map(|i| format!("f{i:03}"))
        .chain(["f010-dir/inner".to_owned()])
        .map(|n| {
            let i = match n.split_once('/') {
                Some((d, f)) => fs.lookup(ino(d), f.as_ref()).unwrap().ino,
                None => ino(&n),
            };
            (i, n)
        })
        .collect();
    for (i, bytes) in &given {
        let name = &names[i];
        assert_eq!(&bytes[..], &expected(name)[..], "{name}");
    }
    // In order from the next file, skipping the directory itself and the symlink, at most
    // 4 MiB.
    let inodes: Vec<u64> = given.iter().map(|(i, _)| *i).collect();
    assert_eq!(inodes[0], ino("f002"));
    assert!(inodes.windows(2).all(|w| w[0] < w[1]));
    assert!(inodes.iter().all(|i| names.contains_key(i)));
    let held: u64 = given.iter().map(|(_, b)| b.len() as u64).sum();
    assert!(held < 4 << 20, "{held}");
    // A read elsewhere (a seek) gives nothing; nor does a read not from a file's start.
    assert_eq!(
        &fs.read(ino("f390"), 0, 1 << 20).unwrap()[..],
        &expected("f390")[..]
    );
    assert!(fs.following(ino("f390"), 0).is_empty());
    assert!(fs.following(ino("f391"), 10).is_empty());
}

//! One conformance suite for `cachecore::store::BinaryCache` and its object layer, run on every
//! backend we can run here for real: `memory://`, a local directory, a private Garage (S3)
//! server and Azurite (Azure Blob Storage), each asserting what the store honours of
//! conditional writes as probed; and Google Cloud Storage through fake-gcs-server, for reads
//! only (the emulator takes none of the XML API's writes; see testkit's `emulators.rs`). Plus a plain
//! HTTP cache (read-only) served by Python's `http.server`, and the errors a user sees when the
//! server is unreachable, the credentials are wrong or missing, or the bucket does not exist.
#![cfg(feature = "cache")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use cachecore::cache_info::CacheInfo;
use cachecore::compression::Compression;
use cachecore::error::ErrorKind;
use cachecore::hash::{Hash, HashAlgo};
use cachecore::narinfo::NarInfo;
use cachecore::store::{
    BinaryCache, Objects, ReadRange, StoreError, VersionTag, WriteMode, MULTIPART_THRESHOLD,
};
use cachecore::store_path::{StoreDir, StorePath};
use futures::{stream, StreamExt, TryStreamExt};

// ---------------------------------------------------------------------------------------------
// Generated data: byte `i` of the test stream is a function of `i`, so any range can be checked
// without keeping the whole object.

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn gen_bytes(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64)
        .map(|i| (splitmix(i / 8) >> ((i % 8) * 8)) as u8)
        .collect()
}

/// `total` bytes of generated data in chunks of `chunk` bytes (the last one shorter).
fn gen_stream(
    total: u64,
    chunk: usize,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    stream::iter((0..total.div_ceil(chunk as u64)).map(move |i| {
        let off = i * chunk as u64;
        let len = (total - off).min(chunk as u64) as usize;
        Ok(Bytes::from(gen_bytes(off, len)))
    }))
}

/// Reads the object at `key` as a stream and checks it equals the generated data.
async fn assert_generated(o: &Objects, key: &str, total: u64) {
    let object = o
        .get(key, ReadRange::All)
        .await
        .unwrap()
        .expect("object present");
    assert_eq!(object.meta.size, total, "{key}: size in the metadata");
    assert_eq!(object.range, 0..total, "{key}: range of a whole GET");
    let mut s = object.body;
    let mut off = 0u64;
    while let Some(chunk) = s.try_next().await.unwrap() {
        assert_eq!(
            &chunk[..],
            &gen_bytes(off, chunk.len())[..],
            "{key}: bytes differ in {off}..{}",
            off + chunk.len() as u64
        );
        off += chunk.len() as u64;
    }
    assert_eq!(off, total, "{key}: length");
}

// ---------------------------------------------------------------------------------------------
// Narinfo fixtures.

fn store_path(i: u8, name: &str) -> StorePath {
    let d = Hash::digest(HashAlgo::Sha256, &[i, 0x5a]);
    let mut digest = [0u8; 20];
    digest.copy_from_slice(&d.digest_bytes()[..20]);
    StorePath::from_parts(digest, name).unwrap()
}

fn narinfo_for(path: &StorePath, refs: &[StorePath]) -> NarInfo {
    let file_hash = Hash::digest(HashAlgo::Sha256, path.name().as_bytes());
    let mut info = NarInfo::new(
        StoreDir::default(),
        path.clone(),
        BinaryCache::nar_url(&file_hash, Compression::Zstd),
        Hash::digest(HashAlgo::Sha256, path.hash_part().as_bytes()),
        1234,
    );
    info.compression = Some("zstd".to_owned());
    info.file_hash = Some(file_hash);
    info.file_size = Some(567);
    info.references = refs.to_vec();
    info
}

// ---------------------------------------------------------------------------------------------
// The suite.

/// What a backend is expected to honour (the probe must find exactly this).
#[derive(Debug, Clone, Copy)]
struct Expect {
    create_only: bool,
    if_unchanged: bool,
    /// Create-only writes above the multipart threshold (staged, then a create-only copy).
    large_create_only: bool,
}

/// The large object of the stream and failing-source parts (over two multipart thresholds).
const BIG: u64 = 30 * 1024 * 1024;

/// Everything a backend must do. `cache` must be empty and writable. Each part is a function,
/// so a failure's backtrace names the part that broke; they run in order (later parts use
/// what earlier ones wrote).
async fn conformance(cache: &BinaryCache, expect: Expect) {
    let url = cache.url().to_owned();
    eprintln!("conformance: {url}");
    let o = cache.objects();
    cache_info_init(cache, &url).await;
    small_objects(o, &url).await;
    conditional_writes(o, &url, expect).await;
    streams_ranges_listing(o, &url).await;
    failing_source(o, &url).await;
    narinfos(cache, &url).await;
}

/// Nix-cache-info: absent, init, idempotent init, StoreDir mismatch.
async fn cache_info_init(cache: &BinaryCache, url: &str) {
    assert!(
        cache.cache_info().await.unwrap().is_none(),
        "{url}: fresh store has no nix-cache-info"
    );
    let wanted = CacheInfo {
        priority: Some(30),
        ..CacheInfo::default()
    };
    assert_eq!(cache.init(&wanted).await.unwrap(), wanted);
    assert_eq!(cache.cache_info().await.unwrap(), Some(wanted.clone()));
    let other_priority = CacheInfo {
        priority: Some(99),
        ..CacheInfo::default()
    };
    // A second init keeps what is there.
    assert_eq!(cache.init(&other_priority).await.unwrap(), wanted);
    let other_dir = CacheInfo {
        store_dir: "/other/store".to_owned(),
        ..CacheInfo::default()
    };
    match cache.init(&other_dir).await {
        Err(e @ StoreError::StoreDirMismatch { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&url) && msg.contains("/other/store") && msg.contains("/nix/store"),
                "{msg}"
            );
        }
        other => panic!("{url}: expected StoreDirMismatch, got {other:?}"),
    }
    assert_eq!(cache.cache_info().await.unwrap(), Some(wanted.clone()));
}

/// Small objects: put, get, head, rename, delete.
async fn small_objects(o: &Objects, url: &str) {
    assert!(o
        .get("log/missing.drv", ReadRange::All)
        .await
        .unwrap()
        .is_none());
    assert!(o.get_bytes("log/missing.drv").await.unwrap().is_none());
    assert_eq!(o.head("log/missing.drv").await.unwrap(), None);
    let before = std::time::SystemTime::now() - Duration::from_secs(120);
    let written = o
        .put(
            "log/a.drv",
            Bytes::from_static(b"build log\n"),
            WriteMode::Overwrite,
        )
        .await
        .unwrap();
    assert_eq!(written.size, 10);
    assert_eq!(
        o.get_bytes("log/a.drv").await.unwrap().unwrap(),
        Bytes::from_static(b"build log\n")
    );
    // HEAD and GET give the same metadata: size, a recent last-modified, an ETag.
    let meta = o.head("log/a.drv").await.unwrap().unwrap();
    assert_eq!((meta.key.as_str(), meta.size), ("log/a.drv", 10));
    assert!(meta.last_modified > before, "{url}: last-modified {meta:?}");
    assert!(meta.e_tag.is_some(), "{url}: no ETag: {meta:?}");
    let got = o.get("log/a.drv", ReadRange::All).await.unwrap().unwrap();
    assert_eq!(got.meta.size, meta.size);
    assert_eq!(
        got.meta.e_tag, meta.e_tag,
        "{url}: GET and HEAD ETags differ"
    );
    let streamed: Vec<Bytes> = got.body.try_collect().await.unwrap();
    assert_eq!(streamed.concat(), b"build log\n");
    // Overwrite: a new ETag.
    o.put("log/a.drv", Bytes::from_static(b"v2"), WriteMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(
        o.get_bytes("log/a.drv").await.unwrap().unwrap(),
        Bytes::from_static(b"v2")
    );
    let meta2 = o.head("log/a.drv").await.unwrap().unwrap();
    assert_eq!(meta2.size, 2);
    assert_ne!(
        meta2.e_tag, meta.e_tag,
        "{url}: ETag unchanged by a rewrite"
    );
    // Rename (onto a fresh key, and over an existing one).
    o.rename("log/a.drv", "log/b.drv").await.unwrap();
    assert_eq!(o.head("log/a.drv").await.unwrap(), None);
    assert_eq!(
        o.get_bytes("log/b.drv").await.unwrap().unwrap(),
        Bytes::from_static(b"v2")
    );
    o.put(
        "log/c.drv",
        Bytes::from_static(b"old"),
        WriteMode::Overwrite,
    )
    .await
    .unwrap();
    // Garage orders an object's versions by millisecond timestamps, and its CopyObject takes
    // `now` without stepping past the destination's newest version (garage_api_s3 2.5
    // copy.rs), so a copy landing in the same millisecond as the put above may lose to it.
    // cachecore only ever renames over keys that hold the same bytes (content-addressed NARs).
    // The put is stamped before it returns: wait until the (shared) clock has left that
    // millisecond.
    let put_done = unix_millis();
    while unix_millis() <= put_done {
        tokio::task::yield_now().await;
    }
    o.rename("log/b.drv", "log/c.drv").await.unwrap();
    assert_eq!(
        o.get_bytes("log/c.drv").await.unwrap().unwrap(),
        Bytes::from_static(b"v2")
    );
    match o.rename("log/nope.drv", "log/d.drv").await {
        Err(e @ StoreError::NotFound { .. }) => {
            assert!(e.to_string().contains("log/nope.drv"), "{e}");
            assert_eq!(e.kind(), ErrorKind::NotFound);
        }
        other => panic!("{url}: rename of a missing key: {other:?}"),
    }
    o.delete("log/c.drv").await.unwrap();
    assert_eq!(o.head("log/c.drv").await.unwrap(), None);
    o.delete("log/c.drv").await.unwrap(); // deleting a missing key is fine
                                          // Keys no backend accepts.
    for bad in ["", "/abs", "a//b", "dir/", "a/../b"] {
        match o.put(bad, Bytes::new(), WriteMode::Overwrite).await {
            Err(e @ StoreError::BadKey { .. }) => assert_eq!(e.kind(), ErrorKind::InvalidInput),
            other => panic!("{url}: key {bad:?}: {other:?}"),
        }
    }
}

/// Conditional writes: what the store honours (probed), and what a caller then gets.
async fn conditional_writes(o: &Objects, url: &str, expect: Expect) {
    let support = o.write_support().await.unwrap();
    eprintln!("  write support: {support:?}");
    assert!(support.writable);
    assert_eq!(
        (support.create_only, support.if_unchanged),
        (expect.create_only, expect.if_unchanged),
        "{url}: probed conditional writes"
    );
    // The probe leaves nothing behind.
    let leftovers: Vec<String> = o
        .list("")
        .map_ok(|m| m.key)
        .try_filter(|k| futures::future::ready(k.starts_with(".cachecore")))
        .try_collect()
        .await
        .unwrap();
    assert!(
        leftovers.is_empty(),
        "{url}: probe objects left: {leftovers:?}"
    );
    let created = o
        .put("roots/a", Bytes::from_static(b"first"), WriteMode::Create)
        .await;
    if support.create_only {
        created.unwrap();
        match o
            .put("roots/a", Bytes::from_static(b"second"), WriteMode::Create)
            .await
        {
            Err(e @ StoreError::AlreadyExists { .. }) => {
                assert_eq!(e.kind(), ErrorKind::Conflict);
                assert!(e.to_string().contains("roots/a"), "{e}");
            }
            other => panic!("{url}: second create-only write: {other:?}"),
        }
        assert_eq!(
            o.get_bytes("roots/a").await.unwrap().unwrap(),
            Bytes::from_static(b"first"),
            "{url}: a refused create-only write left the object alone"
        );
        // A streamed create-only write, small (one request) and above the multipart
        // threshold (staged, then copied into place only if the key is free).
        let w = o
            .put_stream("roots/a", gen_stream(1000, 100), WriteMode::Create)
            .await;
        assert!(
            matches!(w, Err(StoreError::AlreadyExists { .. })),
            "{url}: {w:?}"
        );
        let big = (MULTIPART_THRESHOLD + 1_000_000) as u64;
        match o
            .put_stream("roots/big", gen_stream(big, 65_536), WriteMode::Create)
            .await
        {
            Ok(w) => {
                assert_eq!(w.size, big);
                assert_generated(o, "roots/big", big).await;
                let again = o
                    .put_stream("roots/big", gen_stream(big, 65_536), WriteMode::Create)
                    .await;
                assert!(
                    matches!(again, Err(StoreError::AlreadyExists { .. })),
                    "{url}: {again:?}"
                );
                assert!(
                    expect.large_create_only,
                    "{url}: large create-only writes worked"
                );
            }
            Err(e) => {
                assert!(
                    !expect.large_create_only,
                    "{url}: large create-only write: {e}"
                );
                assert_eq!(e.kind(), ErrorKind::Unsupported, "{e:?}");
                assert_eq!(o.head("roots/big").await.unwrap(), None);
            }
        }
    } else {
        // Never a silent overwrite: refused before anything is written.
        match created {
            Err(e @ StoreError::Unsupported { .. }) => {
                assert_eq!(e.kind(), ErrorKind::Unsupported);
                eprintln!("  create-only: {e}");
            }
            other => panic!("{url}: create-only write on a store without it: {other:?}"),
        }
        assert_eq!(o.head("roots/a").await.unwrap(), None);
        o.put(
            "roots/a",
            Bytes::from_static(b"first"),
            WriteMode::Overwrite,
        )
        .await
        .unwrap();
    }
    let current = o.head("roots/a").await.unwrap().unwrap().version_tag();
    let stale = VersionTag {
        e_tag: Some("\"not-the-etag\"".to_owned()),
        version: current.version.as_ref().map(|_| "1".to_owned()),
    };
    let swapped = o
        .put(
            "roots/a",
            Bytes::from_static(b"swapped"),
            WriteMode::IfUnchanged(current.clone()),
        )
        .await;
    if support.if_unchanged {
        swapped.unwrap();
        match o
            .put(
                "roots/a",
                Bytes::from_static(b"lost"),
                WriteMode::IfUnchanged(current),
            )
            .await
        {
            Err(e @ StoreError::Changed { .. }) => assert_eq!(e.kind(), ErrorKind::Conflict),
            other => panic!("{url}: replace with an old version: {other:?}"),
        }
        assert!(matches!(
            o.put(
                "roots/a",
                Bytes::from_static(b"lost"),
                WriteMode::IfUnchanged(stale)
            )
            .await,
            Err(StoreError::Changed { .. })
        ));
        assert_eq!(
            o.get_bytes("roots/a").await.unwrap().unwrap(),
            Bytes::from_static(b"swapped")
        );
    } else {
        match swapped {
            Err(e @ StoreError::Unsupported { .. }) => {
                eprintln!("  replace-if-unchanged: {e}");
            }
            other => panic!("{url}: replace-if-unchanged on a store without it: {other:?}"),
        }
        assert_eq!(
            o.get_bytes("roots/a").await.unwrap().unwrap(),
            Bytes::from_static(b"first")
        );
    }
    o.delete("roots/a").await.unwrap();
    o.delete("roots/big").await.unwrap();
}

/// Streams (empty, small, multipart), ranges of a large object, listing a prefix.
async fn streams_ranges_listing(o: &Objects, url: &str) {
    // --- streams: empty, small (single put), large (multipart).
    assert_eq!(
        o.put_stream("nar/empty.nar", stream::empty(), WriteMode::Overwrite)
            .await
            .unwrap()
            .size,
        0
    );
    assert_eq!(o.head("nar/empty.nar").await.unwrap().unwrap().size, 0);
    assert_eq!(
        o.put_stream(
            "nar/small.nar",
            gen_stream(100_000, 7_000),
            WriteMode::Overwrite
        )
        .await
        .unwrap()
        .size,
        100_000
    );
    assert_generated(o, "nar/small.nar", 100_000).await;
    assert!(BIG as usize > 2 * MULTIPART_THRESHOLD);
    let t = Instant::now();
    let key = "nar/.tmp-big";
    assert_eq!(
        o.put_stream(key, gen_stream(BIG, 100_003), WriteMode::Overwrite)
            .await
            .unwrap()
            .size,
        BIG
    );
    eprintln!("  put_stream 30 MiB: {:?}", t.elapsed());
    assert_eq!(o.head(key).await.unwrap().unwrap().size, BIG);
    let final_key = "nar/big.nar.zst";
    o.rename(key, final_key).await.unwrap();
    assert_eq!(o.head(key).await.unwrap(), None);
    assert_generated(o, final_key, BIG).await;

    // --- ranges, streamed: inside, across a part boundary, at the end, clamped past the end,
    // from an offset, the last n bytes, empty; each says the object's whole size.
    for (range, want) in [
        (ReadRange::Bounded(0..10), 0..10u64),
        (
            ReadRange::Bounded(10 * 1024 * 1024 - 5..10 * 1024 * 1024 + 5),
            10 * 1024 * 1024 - 5..10 * 1024 * 1024 + 5,
        ),
        (ReadRange::Bounded(BIG - 7..BIG), BIG - 7..BIG),
        (ReadRange::Bounded(12_345..1_012_345), 12_345..1_012_345),
        (ReadRange::Bounded(BIG - 5..BIG + 100), BIG - 5..BIG),
        (ReadRange::From(BIG - 3000), BIG - 3000..BIG),
        (ReadRange::Last(4096), BIG - 4096..BIG),
    ] {
        let got = o.get(final_key, range.clone()).await.unwrap().unwrap();
        assert_eq!(got.meta.size, BIG, "{url}: {range:?}: size");
        assert_eq!(got.range, want, "{url}: {range:?}: range");
        let body: Vec<Bytes> = got.body.try_collect().await.unwrap();
        let body = body.concat();
        assert_eq!(
            body,
            gen_bytes(want.start, (want.end - want.start) as usize),
            "{url}: range {range:?}"
        );
    }
    let empty = o
        .get(final_key, ReadRange::Bounded(5..5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((empty.meta.size, empty.range), (BIG, 5..5));
    match o.get(final_key, ReadRange::From(BIG + 10)).await {
        Err(e @ StoreError::RangeNotSatisfiable { .. }) => {
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
        other => panic!("{url}: a range past the end: {other:?}"),
    }
    assert!(o
        .get("nar/missing.nar", ReadRange::Bounded(0..10))
        .await
        .unwrap()
        .is_none());

    // --- listing a prefix, recursively and one directory.
    let mut under_nar: Vec<(String, u64)> = o
        .list("nar")
        .map_ok(|m| (m.key, m.size))
        .try_collect()
        .await
        .unwrap();
    under_nar.sort();
    assert_eq!(
        under_nar,
        vec![
            ("nar/big.nar.zst".to_owned(), BIG),
            ("nar/empty.nar".to_owned(), 0),
            ("nar/small.nar".to_owned(), 100_000),
        ],
        "{url}: list(nar)"
    );
    let root: Vec<String> = o
        .list_dir("")
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        root,
        vec!["nix-cache-info".to_owned()],
        "{url}: list_dir(root)"
    );
}

/// A failing source: nothing appears at the key, small or multipart.
async fn failing_source(o: &Objects, url: &str) {
    for (size, fail_after) in [(1000u64, 500usize), (BIG, 15 * 1024 * 1024)] {
        let key = format!("nar/failing-{size}.nar");
        let mut sent = 0usize;
        let failing = gen_stream(size, 65_536).map(move |c| {
            let c = c?;
            sent += c.len();
            if sent > fail_after {
                return Err(std::io::Error::other("disk on fire"));
            }
            Ok(c)
        });
        match o.put_stream(&key, failing, WriteMode::Overwrite).await {
            Err(e @ StoreError::Source { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&key) && msg.contains("disk on fire"), "{msg}");
                assert_eq!(e.kind(), ErrorKind::Local);
            }
            other => panic!("{url}: failing stream: {other:?}"),
        }
        assert_eq!(
            o.head(&key).await.unwrap(),
            None,
            "{url}: {key} must not exist"
        );
    }
}

/// Narinfos: writes, missing, listing, a bad one naming its key.
async fn narinfos(cache: &BinaryCache, url: &str) {
    let o = cache.objects();
    // --- narinfos.
    let paths: Vec<StorePath> = (0..6).map(|i| store_path(i, &format!("pkg-{i}"))).collect();
    let present = [0usize, 2, 3];
    for &i in &present {
        let refs = if i > 0 {
            vec![paths[0].clone()]
        } else {
            vec![]
        };
        cache
            .put_narinfo(&narinfo_for(&paths[i], &refs))
            .await
            .unwrap();
    }
    for (i, p) in paths.iter().enumerate() {
        let got = cache.narinfo(p).await.unwrap();
        if present.contains(&i) {
            let refs = if i > 0 {
                vec![paths[0].clone()]
            } else {
                vec![]
            };
            assert_eq!(got, Some(narinfo_for(p, &refs)), "{url}: narinfo {p}");
            assert!(cache.has_narinfo(p).await.unwrap());
        } else {
            assert_eq!(got, None);
            assert!(!cache.has_narinfo(p).await.unwrap());
        }
    }
    let missing = cache.missing(&paths, 3).await.unwrap();
    assert_eq!(
        missing,
        vec![paths[1].clone(), paths[4].clone(), paths[5].clone()],
        "{url}: missing, in order"
    );
    assert_eq!(cache.missing(&[], 3).await.unwrap(), vec![]);
    assert_eq!(cache.missing(&paths[..1], 0).await.unwrap(), vec![]);

    // --- listing: only root-level <hash>.narinfo keys.
    for key in [
        "nar/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.narinfo",
        "not-a-hash.narinfo",
    ] {
        o.put(key, Bytes::from_static(b"x"), WriteMode::Overwrite)
            .await
            .unwrap();
    }
    cache
        .put_listing_bytes(&paths[0], Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert_eq!(
        cache.listing_bytes(&paths[0]).await.unwrap(),
        Some(Bytes::from_static(b"{}"))
    );
    let mut listed: Vec<String> = cache.list_narinfo_hashes().try_collect().await.unwrap();
    listed.sort();
    let mut expected: Vec<String> = present.iter().map(|&i| paths[i].hash_part()).collect();
    expected.sort();
    assert_eq!(listed, expected, "{url}: list_narinfo_hashes");

    // --- a bad narinfo names its key.
    let bad = store_path(9, "broken");
    let bad_key = format!("{}.narinfo", bad.hash_part());
    o.put(
        &bad_key,
        Bytes::from_static(b"StorePath: /nix/store/nonsense\nthis is not a narinfo\n"),
        WriteMode::Overwrite,
    )
    .await
    .unwrap();
    match cache.narinfo(&bad).await {
        Err(e @ StoreError::BadNarInfo { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&bad_key) && msg.contains(&url), "{msg}");
            assert_eq!(e.key(), Some(bad_key.as_str()));
            assert_eq!(e.kind(), ErrorKind::Corrupt);
            eprintln!("  bad narinfo: {msg}");
        }
        other => panic!("{url}: expected BadNarInfo, got {other:?}"),
    }
    // ... and a bad nix-cache-info too.
    o.put(
        "nix-cache-info",
        Bytes::from_static(b"Priority: high\n"),
        WriteMode::Overwrite,
    )
    .await
    .unwrap();
    match cache.cache_info().await {
        Err(e @ StoreError::BadCacheInfo { .. }) => {
            assert!(e.to_string().contains("nix-cache-info"), "{e}");
        }
        other => panic!("{url}: expected BadCacheInfo, got {other:?}"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn conformance_memory() {
    runtime().block_on(async {
        let cache = BinaryCache::open("memory://").unwrap();
        // object_store's in-memory store keeps ETags and honours both preconditions.
        let expect = Expect {
            create_only: true,
            if_unchanged: true,
            large_create_only: true,
        };
        conformance(&cache, expect).await;
        // A fresh store per open.
        assert!(BinaryCache::open("memory://")
            .unwrap()
            .cache_info()
            .await
            .unwrap()
            .is_none());
    });
}

#[test]
fn conformance_local_directory() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache"); // created by open
        let cache = BinaryCache::open(root.to_str().unwrap()).unwrap();
        // A directory creates by hard link (refused when the name exists) and has no
        // compare-and-swap.
        let expect = Expect {
            create_only: true,
            if_unchanged: false,
            large_create_only: true,
        };
        conformance(&cache, expect).await;
        // The objects are plain files where Nix expects them, and no staging files are left.
        assert!(root.join("nix-cache-info").is_file());
        assert_eq!(
            std::fs::metadata(root.join("nar/big.nar.zst"))
                .unwrap()
                .len(),
            30 * 1024 * 1024
        );
        let leftovers: Vec<_> = walk(&root)
            .into_iter()
            .filter(|p| p.contains('#'))
            .collect();
        assert!(leftovers.is_empty(), "staging files left: {leftovers:?}");
        // The file:// spelling reaches the same store.
        let again = BinaryCache::open(&format!("file://{}", root.display())).unwrap();
        assert_eq!(
            again
                .objects()
                .head("nar/big.nar.zst")
                .await
                .unwrap()
                .map(|m| m.size),
            Some(30 * 1024 * 1024)
        );
    });
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

#[test]
fn conformance_garage() {
    let garage = common::garage::Garage::start();
    runtime().block_on(async {
        let env = garage.env();
        let cache = BinaryCache::open_with_env(&garage.url(""), &env).unwrap();
        // Garage ignores If-None-Match and If-Match on PUT (it answers 200 and overwrites):
        // the probe must find that out, and conditional writes must be refused.
        let expect = Expect {
            create_only: false,
            if_unchanged: false,
            large_create_only: false,
        };
        conformance(&cache, expect).await;

        // Under a prefix: the same suite, and the root listing does not see the other tree.
        let prefixed = BinaryCache::open_with_env(&garage.url("team/a"), &env).unwrap();
        conformance(&prefixed, expect).await;
        assert!(cache.objects().head("team/a/nix-cache-info").await.unwrap().is_some());

        // Credentials from a profile in ~/.aws/credentials (HOME from our env).
        let home = garage.dir().join("home");
        std::fs::create_dir_all(home.join(".aws")).unwrap();
        std::fs::write(
            home.join(".aws/credentials"),
            format!("[other]\naws_access_key_id = nope\naws_secret_access_key = nope\n\n[garage-test]\naws_access_key_id = {}\naws_secret_access_key = {}\n", garage.key_id, garage.secret),
        )
        .unwrap();
        std::fs::write(
            home.join(".aws/config"),
            format!("[profile garage-test]\nregion = garage\nendpoint_url = {}\n", garage.endpoint),
        )
        .unwrap();
        let home_env = vec![("HOME".to_owned(), home.display().to_string())];
        let by_profile = BinaryCache::open_with_env(&format!("s3://{}?profile=garage-test", garage.bucket), &home_env).unwrap();
        // (The suite left a deliberately bad nix-cache-info behind; look at the big NAR.)
        assert_eq!(
            by_profile.objects().head("nar/big.nar.zst").await.unwrap().map(|m| m.size),
            Some(30 * 1024 * 1024)
        );
        // AWS_PROFILE works the same; ?profile= wins over keys in the environment.
        let mut env_profile = home_env.clone();
        env_profile.push(("AWS_PROFILE".to_owned(), "garage-test".to_owned()));
        let by_env_profile = BinaryCache::open_with_env(&format!("s3://{}", garage.bucket), &env_profile).unwrap();
        by_env_profile.objects().put("log/profile.drv", Bytes::from_static(b"p"), WriteMode::Overwrite).await.unwrap();
        let mut wrong_keys_env = home_env.clone();
        wrong_keys_env.push(("AWS_ACCESS_KEY_ID".to_owned(), "GKwrong".to_owned()));
        wrong_keys_env.push(("AWS_SECRET_ACCESS_KEY".to_owned(), "wrong".to_owned()));
        let profile_wins = BinaryCache::open_with_env(&format!("s3://{}?profile=garage-test", garage.bucket), &wrong_keys_env).unwrap();
        assert!(profile_wins.objects().head("log/profile.drv").await.unwrap().is_some());

        // Wrong secret, unknown key: access denied, said clearly, secret never shown.
        let mut bad_secret = env.clone();
        bad_secret[1].1 = "0".repeat(64);
        let c = BinaryCache::open_with_env(&garage.url(""), &bad_secret).unwrap();
        let e = c.cache_info().await.unwrap_err();
        eprintln!("wrong secret: {e}");
        assert!(matches!(e, StoreError::AccessDenied { .. }), "{e:?}");
        assert!(e.to_string().contains("nix-cache-info") && e.to_string().contains(&garage.url("")));
        let e = c.objects().put("log/x", Bytes::from_static(b"x"), WriteMode::Overwrite).await.unwrap_err();
        eprintln!("wrong secret (write): {e}");
        assert!(matches!(e, StoreError::AccessDenied { .. }), "{e:?}");
        let e = c.objects().head("x.narinfo").await.unwrap_err();
        eprintln!("wrong secret (head): {e}");
        assert!(matches!(e, StoreError::AccessDenied { .. }), "{e:?}");
        let mut bad_key = env.clone();
        bad_key[0].1 = "GK0000000000000000000000".to_owned();
        let c = BinaryCache::open_with_env(&garage.url(""), &bad_key).unwrap();
        let e = c.cache_info().await.unwrap_err();
        eprintln!("unknown key id: {e}");
        assert!(matches!(e, StoreError::AccessDenied { .. }), "{e:?}");
        for shown in [format!("{e}"), format!("{e:?}"), format!("{c:?}")] {
            assert!(!shown.contains(&garage.secret), "secret shown: {shown}");
        }

        // No such bucket.
        let url = format!("s3://no-such-bucket?endpoint={}&region=garage", garage.endpoint);
        let c = BinaryCache::open_with_env(&url, &env).unwrap();
        let e = c.cache_info().await.unwrap_err();
        eprintln!("no such bucket (read): {e}");
        assert!(matches!(e, StoreError::NoSuchBucket { .. }), "{e:?}");
        assert!(e.to_string().contains("no-such-bucket"), "{e}");
        let e = c.objects().put("nix-cache-info", Bytes::from_static(b"StoreDir: /nix/store\n"), WriteMode::Overwrite).await.unwrap_err();
        eprintln!("no such bucket (write): {e}");
        assert!(matches!(e, StoreError::NoSuchBucket { .. }), "{e:?}");

        // No credentials at all for a custom endpoint: refused at open, with advice.
        let empty_home = vec![("HOME".to_owned(), garage.dir().join("empty-home").display().to_string())];
        match BinaryCache::open_with_env(&garage.url(""), &empty_home) {
            Err(e @ StoreError::MissingCredentials { .. }) => {
                eprintln!("no credentials: {e}");
                let msg = e.to_string();
                assert!(msg.contains("AWS_ACCESS_KEY_ID") && msg.contains(&garage.url("")), "{msg}");
            }
            other => panic!("expected MissingCredentials, got {other:?}"),
        }
        match BinaryCache::open_with_env(&format!("s3://{}?profile=absent", garage.bucket), &home_env) {
            Err(e @ StoreError::MissingCredentials { .. }) => {
                eprintln!("absent profile: {e}");
                assert!(e.to_string().contains("\"absent\""), "{e}");
            }
            other => panic!("expected MissingCredentials, got {other:?}"),
        }
    });
}

/// Azure Blob Storage, through Azurite. What Azurite does not do that Azure does: it checks
/// the shared key but has no Entra ID (OAuth) or managed identities, no storage firewall, no
/// lifecycle rules for uncommitted blocks, and keeps everything on one node; conditional
/// headers (`If-None-Match: *`, `If-Match`) are implemented as in Azure.
#[test]
fn conformance_azurite() {
    let azurite = common::emulators::Azurite::start();
    runtime().block_on(async {
        let env = azurite.env();
        let expect = Expect {
            create_only: true,
            if_unchanged: true,
            large_create_only: true,
        };
        let cache = BinaryCache::open_with_env(&azurite.url(""), &env).unwrap();
        conformance(&cache, expect).await;
        let prefixed = BinaryCache::open_with_env(&azurite.url("team/a"), &env).unwrap();
        conformance(&prefixed, expect).await;
        assert!(cache
            .objects()
            .head("team/a/nix-cache-info")
            .await
            .unwrap()
            .is_some());

        // A container that does not exist, and a wrong key.
        let c = BinaryCache::open_with_env("az://no-such-container", &env).unwrap();
        let e = c.cache_info().await.unwrap_err();
        eprintln!("azure, no such container: {e}");
        assert!(matches!(e, StoreError::NoSuchBucket { .. }), "{e:?}");
        assert_eq!(e.kind(), ErrorKind::Denied);
        let mut wrong = env.clone();
        wrong[1].1 = common::emulators::AZURITE_KEY.replace('E', "F");
        let c = BinaryCache::open_with_env(&azurite.url(""), &wrong).unwrap();
        let e = c.cache_info().await.unwrap_err();
        eprintln!("azure, wrong key: {e}");
        assert_eq!(e.kind(), ErrorKind::Denied, "{e:?}\n{}", azurite.log());
    });
}

/// Bytes `range` of the object at `key`.
async fn range_bytes(o: &Objects, key: &str, range: std::ops::Range<u64>) -> Vec<u8> {
    let object = o
        .get(key, ReadRange::Bounded(range))
        .await
        .unwrap()
        .unwrap();
    let chunks: Vec<Bytes> = object.body.try_collect().await.unwrap();
    chunks.concat()
}

/// Google Cloud Storage, through fake-gcs-server: what cachecore reads of a GCS cache. The
/// emulator answers object_store's reads (GET, ranges, HEAD, the XML listing) but none of its
/// writes (see testkit's `emulators.rs`), so the cache is pushed to a directory by cachecore and
/// uploaded object by object through the emulator's JSON API; a write through `gs://` is
/// asserted to fail the emulator's way, so that an emulator which learns the XML API shows up.
#[test]
fn gcs_reads_through_fake_gcs_server() {
    use cachecore::ops::{self, NoProgress, PushOptions, VerifyOptions};
    use cachecore::signing::{SecretKey, Signer};
    use std::sync::Arc;

    let gcs = common::emulators::FakeGcs::start();
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::generate("gcs-test-1").unwrap();
    let public = key.public_key();
    let local_dir = tmp.path().join("cache");
    runtime().block_on(async {
        let local = BinaryCache::open(local_dir.to_str().unwrap()).unwrap();
        let signer: Arc<dyn Signer> = Arc::new(key);
        let opts = PushOptions {
            signers: vec![signer],
            ..PushOptions::default()
        };
        // A small path, and one whose NAR is several seekable frames.
        let mut pushed = Vec::new();
        for (name, size) in [("small", 3000usize), ("large", 9 << 20)] {
            let src = tmp.path().join(name);
            std::fs::create_dir(&src).unwrap();
            std::fs::write(src.join("f"), gen_bytes(0, size)).unwrap();
            std::fs::write(src.join("g"), name).unwrap();
            let (path, _) = ops::push_add(
                &local,
                &StoreDir::default(),
                &src,
                name,
                &opts,
                Arc::new(NoProgress),
            )
            .await
            .unwrap();
            pushed.push(path);
        }
        let files = walk(&local_dir);
        for f in &files {
            let rel = f.strip_prefix(&format!("{}/", local_dir.display())).unwrap();
            gcs.upload(rel, std::path::Path::new(f));
        }

        let cache = BinaryCache::open_with_env(&gcs.url(), &gcs.env()).unwrap();
        // The whole cache: the listing, every narinfo and every NAR read and checked.
        let report = ops::verify(
            &cache,
            &[],
            &VerifyOptions {
                trusted_keys: vec![public],
                ..VerifyOptions::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("verify gs://: {e}\n{}", gcs.log()));
        assert_eq!(report.checked, 2, "{report:?}");
        assert!(report.problems.is_empty(), "{report:?}");
        // Object metadata, a listing of a prefix, and ranges agree with the directory.
        let nars: Vec<_> = cache.objects().list("nar").try_collect().await.unwrap();
        let local_nars = files.iter().filter(|f| f.contains("/nar/")).count();
        assert_eq!(nars.len(), local_nars, "{nars:?}");
        for meta in &nars {
            let local_meta = local.objects().head(&meta.key).await.unwrap().unwrap();
            assert_eq!(meta.size, local_meta.size, "{}", meta.key);
            let range = 5..meta.size.min(70_000);
            let ours = range_bytes(cache.objects(), &meta.key, range.clone()).await;
            let theirs = range_bytes(local.objects(), &meta.key, range).await;
            assert_eq!(ours, theirs, "{}", meta.key);
        }
        assert!(cache
            .objects()
            .head("nar/none.nar.zst")
            .await
            .unwrap()
            .is_none());
        // Random access: one file out of the large NAR, by ranged reads.
        let file = ops::open_file(&cache, &pushed[1], "f").await.unwrap();
        assert_eq!(
            file.read(4_000_000..4_000_100).await.unwrap().to_vec(),
            gen_bytes(4_000_000, 100)
        );

        // What the emulator lacks: every write of the XML API.
        let e = cache
            .objects()
            .put("log/x", Bytes::from_static(b"x"), WriteMode::Overwrite)
            .await
            .unwrap_err();
        assert!(
            format!("{e:?}").contains("invalid uploadType"),
            "fake-gcs-server took an XML-API write, so the write tests can run against it now: {e:?}"
        );
    });
}

#[test]
fn unreachable_endpoint_is_said_clearly() {
    runtime().block_on(async {
        let env = vec![
            ("AWS_ACCESS_KEY_ID".to_owned(), "GKtest".to_owned()),
            (
                "AWS_SECRET_ACCESS_KEY".to_owned(),
                "s3cr3t-value".to_owned(),
            ),
        ];
        let url = "s3://nixcache?endpoint=http://127.0.0.1:1&region=garage";
        let cache = BinaryCache::open_with_env(url, &env).unwrap();
        let t = Instant::now();
        let e = cache.cache_info().await.unwrap_err();
        eprintln!("unreachable ({:?}): {e}", t.elapsed());
        assert!(matches!(e, StoreError::Unreachable { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains(url)
                && msg.contains("nix-cache-info")
                && msg.contains("connection refused"),
            "{msg}"
        );
        assert!(!format!("{e:?}").contains("s3cr3t-value"));
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "gave up after {:?}",
            t.elapsed()
        );

        let e = cache
            .objects()
            .put("x.narinfo", Bytes::from_static(b"x"), WriteMode::Overwrite)
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Unreachable { .. }), "{e:?}");
        // AWS proper without any keys: object_store asks the instance metadata service (here
        // pointed at a closed port so the test does not wait for 169.254.169.254).
        let no_keys = vec![
            ("HOME".to_owned(), "/nonexistent".to_owned()),
            (
                "AWS_METADATA_ENDPOINT".to_owned(),
                "http://127.0.0.1:1".to_owned(),
            ),
        ];
        let cache = BinaryCache::open_with_env("s3://some-bucket", &no_keys).unwrap();
        let e = cache.cache_info().await.unwrap_err();
        eprintln!("no keys, no instance metadata: {e}");
        assert!(matches!(e, StoreError::MissingCredentials { .. }), "{e:?}");
        assert!(e.to_string().contains("AWS_ACCESS_KEY_ID"), "{e}");

        let e = BinaryCache::open("http://127.0.0.1:1/")
            .unwrap()
            .cache_info()
            .await
            .unwrap_err();
        eprintln!("unreachable http: {e}");
        assert!(matches!(e, StoreError::Unreachable { .. }), "{e:?}");
    });
}

#[test]
fn http_cache_is_readable_and_read_only() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        // Write a small cache with the local backend, in a subdirectory to exercise base paths.
        let local = BinaryCache::open(dir.path().join("sub/cache").to_str().unwrap()).unwrap();
        local.init(&CacheInfo::default()).await.unwrap();
        let p = store_path(1, "hello");
        let info = narinfo_for(&p, &[]);
        local.put_narinfo(&info).await.unwrap();
        local
            .put_nar_stream(&info.url, gen_stream(200_000, 65_536))
            .await
            .unwrap();

        let server = common::http_server::HttpServer::serve(dir.path());
        for base in [
            format!("{}/sub/cache", server.url()),
            format!("{}/sub/cache/", server.url()),
        ] {
            let cache = BinaryCache::open(&base).unwrap();
            assert!(cache.is_read_only());
            assert_eq!(
                cache.cache_info().await.unwrap(),
                Some(CacheInfo::default())
            );
            assert_eq!(cache.narinfo(&p).await.unwrap(), Some(info.clone()));
            assert!(cache.has_narinfo(&p).await.unwrap());
            let q = store_path(2, "absent");
            assert_eq!(cache.narinfo(&q).await.unwrap(), None);
            assert_eq!(
                cache.missing(&[p.clone(), q.clone()], 2).await.unwrap(),
                vec![q.clone()]
            );
            let o = cache.objects();
            let meta = o.head(&info.url).await.unwrap().unwrap();
            assert_eq!(meta.size, 200_000);
            // Python's http.server sends Last-Modified but no ETag; the metadata says so.
            assert_eq!(meta.e_tag, None, "{meta:?}");
            assert!(
                meta.last_modified > std::time::SystemTime::now() - Duration::from_secs(600),
                "{meta:?}"
            );
            assert_generated(o, &info.url, 200_000).await;
            assert_eq!(
                &o.get(&info.url, ReadRange::Bounded(1000..2000))
                    .await
                    .unwrap()
                    .unwrap()
                    .body
                    .try_collect::<Vec<_>>()
                    .await
                    .unwrap()
                    .concat()[..],
                &gen_bytes(1000, 1000)[..]
            );

            for result in [
                o.put("x.narinfo", Bytes::from_static(b"x"), WriteMode::Overwrite)
                    .await
                    .map(drop),
                o.put_stream("nar/x", gen_stream(10, 10), WriteMode::Create)
                    .await
                    .map(drop),
                o.delete(&info.url).await,
                o.rename(&info.url, "nar/y").await,
            ] {
                match result {
                    // Without a token (a `cachecore serve` takes uploads with one).
                    Err(e @ StoreError::NeedsToken { .. }) => {
                        assert!(e.to_string().contains(cache.url()), "{e}")
                    }
                    other => panic!("write to {base}: {other:?}"),
                }
            }
            let e = cache
                .objects()
                .put("x.narinfo", Bytes::new(), WriteMode::Overwrite)
                .await
                .unwrap_err();
            eprintln!("read-only: {e}");
            // Plain HTTP has no listing (object_store asks with WebDAV PROPFIND).
            let e = cache
                .list_narinfo_hashes()
                .try_collect::<Vec<_>>()
                .await
                .unwrap_err();
            eprintln!("http listing: {e}");
            assert!(matches!(e, StoreError::Unsupported { .. }), "{e:?}");
            assert!(e.to_string().contains(cache.url()), "{e}");
            // init of an initialised read-only cache only reads.
            assert_eq!(
                cache.init(&CacheInfo::default()).await.unwrap(),
                CacheInfo::default()
            );
        }
        // init on an uninitialised HTTP cache must refuse to write: no cache is there.
        let empty = BinaryCache::open(&format!("{}/sub", server.url())).unwrap();
        match empty.init(&CacheInfo::default()).await {
            Err(StoreError::NoCacheInfo { .. }) => {}
            other => panic!("init on http: {other:?}"),
        }
    });
}

/// Milliseconds since the Unix epoch, by the clock this machine's servers share.
fn unix_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

// ---------------------------------------------------------------------------------------------
// Listing in ranges side by side (`Objects::list_all`, which GC uses) lists exactly what one
// listing lists.

/// Writes more than a page (1,000 keys) of narinfo, NAR and other keys, some on the boundaries
/// of the ranges `list_all` lists side by side, and checks it lists exactly what `list("")`
/// does.
async fn list_all_lists_what_list_lists(cache: &BinaryCache) {
    let objects = cache.objects();
    let mut keys: Vec<String> = [
        ".cachecore/gc/1-a",
        "0",
        "1",
        "e",
        "log/x.drv",
        "n",
        "na.narinfo",
        "nar/0",
        "nar/00",
        "nar/0z",
        "nar/1",
        "nar/1z",
        "nar/x.frames",
        "nix-cache-info",
        "realisations/a.doi",
        "z",
        "zz.narinfo",
        "index/1-2",
        "gcroots/h/n",
    ]
    .map(str::to_owned)
    .to_vec();
    for i in 0..700u64 {
        let path = StorePath::from_parts(
            splitmix(i).to_le_bytes().repeat(3)[..20]
                .try_into()
                .unwrap(),
            "p",
        )
        .unwrap();
        let hash = path.hash_part();
        keys.push(format!("{hash}.narinfo"));
        keys.push(format!("nar/{}{hash}{}.nar.zst", i % 2, &hash[..19]));
    }
    stream::iter(&keys)
        .map(|k| objects.put(k, Bytes::from_static(b"x"), WriteMode::Overwrite))
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let fields = |m: cachecore::store::ObjectInfo| (m.key, m.size, m.e_tag, m.last_modified);
    let mut serial: Vec<_> = objects.list("").map_ok(fields).try_collect().await.unwrap();
    let mut ranged: Vec<_> = objects
        .list_all(8)
        .map_ok(fields)
        .try_collect()
        .await
        .unwrap();
    serial.sort();
    ranged.sort();
    keys.sort();
    let listed: Vec<&String> = ranged.iter().map(|f| &f.0).collect();
    assert_eq!(listed, keys.iter().collect::<Vec<_>>());
    assert_eq!(ranged, serial);
}

#[test]
fn list_all_lists_what_list_lists_on_a_local_directory_and_garage() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let local = BinaryCache::open(dir.path().to_str().unwrap()).unwrap();
        list_all_lists_what_list_lists(&local).await;
    });
    let garage = common::garage::Garage::start();
    runtime().block_on(async {
        let env = garage.env();
        let cache = BinaryCache::open_with_env(&garage.url("ranges"), &env).unwrap();
        // Beside the cache, keys its listing must not see.
        let bucket = BinaryCache::open_with_env(&garage.url(""), &env).unwrap();
        for k in ["rangesx", "ranges0/a", "r.narinfo"] {
            bucket
                .objects()
                .put(k, Bytes::from_static(b"y"), WriteMode::Overwrite)
                .await
                .unwrap();
        }
        list_all_lists_what_list_lists(&cache).await;
        // And the whole bucket.
        let mut serial: Vec<String> = bucket
            .objects()
            .list("")
            .map_ok(|m| m.key)
            .try_collect()
            .await
            .unwrap();
        let mut ranged: Vec<String> = bucket
            .objects()
            .list_all(8)
            .map_ok(|m| m.key)
            .try_collect()
            .await
            .unwrap();
        serial.sort();
        ranged.sort();
        assert_eq!(ranged, serial);
        assert!(ranged.len() > 1400, "{}", ranged.len());
    });
}

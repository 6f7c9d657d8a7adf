//! A small valid cache in `memory://`, mutated a few hundred ways (bytes flipped, objects cut,
//! extended, swapped or deleted, narinfo fields replaced by other hashes, huge numbers or
//! garbage), then run through `verify` and `copy`. Nothing may panic; whatever `copy` writes,
//! `verify` accepts (a hostile source never gets an object into a destination that the
//! destination's own checks would refuse); a source `verify` finds sound copies whole, and a copy
//! that fails says the source is corrupt, untrusted or incomplete. Beside the random mutations, a
//! table of one mutation per class checks the exact kind `copy` refuses it with and that
//! `verify` reports it.
//!
//! Deterministic (a seeded generator), so a failure names the seed that reproduces it. The
//! libFuzzer target of the same idea needs the fuzz crate to build the `cache` feature.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use cachecore::error::ErrorKind;
use cachecore::ops::{self, CopyOptions, NoProgress, PushOptions, VerifyOptions};
use cachecore::signing::{SecretKey, Signer};
use cachecore::store::{BinaryCache, WriteMode};
use cachecore::store_path::StoreDir;
use cachecore_testkit::Xorshift;
use futures::TryStreamExt as _;

/// A value in `0..n` (0 when `n` is 0: mutations may have deleted every narinfo).
fn below(rng: &mut Xorshift, n: usize) -> usize {
    rng.below(n.max(1) as u64) as usize
}

async fn objects(cache: &BinaryCache) -> BTreeMap<String, Bytes> {
    let metas: Vec<_> = cache.objects().list("").try_collect().await.unwrap();
    let mut out = BTreeMap::new();
    for m in metas {
        let key = m.key.clone();
        let bytes = cache.objects().get_bytes(&key).await.unwrap().unwrap();
        out.insert(key, bytes);
    }
    out
}

async fn load(objects: &BTreeMap<String, Bytes>) -> BinaryCache {
    let cache = BinaryCache::open("memory://").unwrap();
    for (k, v) in objects {
        cache
            .objects()
            .put(k, v.clone(), WriteMode::Overwrite)
            .await
            .unwrap();
    }
    cache
}

/// One mutation of the clean cache, described for the failure message.
fn mutate(objects: &mut BTreeMap<String, Bytes>, rng: &mut Xorshift) -> String {
    let keys: Vec<String> = objects.keys().cloned().collect();
    let narinfos: Vec<String> = keys
        .iter()
        .filter(|k| k.ends_with(".narinfo"))
        .cloned()
        .collect();
    let key = keys[below(rng, keys.len())].clone();
    let mut bytes = objects[&key].to_vec();
    let what = match below(rng, 8) {
        0 if !bytes.is_empty() => {
            let i = below(rng, bytes.len());
            bytes[i] ^= 1 << below(rng, 8);
            format!("flip a bit of {key} at {i}")
        }
        1 => {
            let n = below(rng, bytes.len() + 1);
            bytes.truncate(n);
            format!("cut {key} to {n} bytes")
        }
        2 => {
            let n = 1 + below(rng, 5000);
            bytes.extend((0..n).map(|i| (i * 31) as u8));
            format!("append {n} bytes to {key}")
        }
        3 => {
            objects.remove(&key);
            return format!("delete {key}");
        }
        4 if narinfos.len() > 1 => {
            let (a, b) = (&narinfos[0], &narinfos[1]);
            let (va, vb) = (objects[a].clone(), objects[b].clone());
            objects.insert(a.clone(), vb);
            objects.insert(b.clone(), va);
            return format!("swap {a} and {b}");
        }
        _ => {
            // Replace one field of a narinfo.
            let key = narinfos[below(rng, narinfos.len())].clone();
            let text = String::from_utf8_lossy(&objects[&key]).into_owned();
            let fields = [
                "StorePath",
                "URL",
                "Compression",
                "FileHash",
                "FileSize",
                "NarHash",
                "NarSize",
                "References",
            ];
            let field = fields[below(rng, fields.len())];
            let values = [
                "18446744073709551615".to_owned(),
                "1125899906842625".to_owned(),
                "0".to_owned(),
                "md5:00000000000000000000000000000000".to_owned(),
                "sha1:0000000000000000000000000000000000000000".to_owned(),
                "sha512:".to_owned() + &"0".repeat(128),
                "nar/../../etc/passwd".to_owned(),
                "nix-cache-info".to_owned(),
                "/other/store/00000000000000000000000000000000-x".to_owned(),
                "xz".to_owned(),
                "gzip".to_owned(),
                "x".repeat(5000),
                String::new(),
            ];
            let value = values[below(rng, values.len())].clone();
            let new: String = text
                .lines()
                .map(|l| {
                    if l.starts_with(&format!("{field}:")) {
                        format!("{field}: {value}\n")
                    } else {
                        format!("{l}\n")
                    }
                })
                .collect();
            objects.insert(key.clone(), Bytes::from(new));
            return format!(
                "set {field} of {key} to {:?}",
                &value[..value.len().min(40)]
            );
        }
    };
    objects.insert(key, Bytes::from(bytes));
    what
}

/// The clean cache: two signed paths pushed to `memory://`, as its objects.
fn clean_cache(rt: &tokio::runtime::Runtime, key: SecretKey) -> BTreeMap<String, Bytes> {
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let cache = BinaryCache::open("memory://").unwrap();
        let signer: Arc<dyn Signer> = Arc::new(key);
        let opts = PushOptions {
            signers: vec![signer],
            ..PushOptions::default()
        };
        for (name, size) in [("small", 3000usize), ("medium", 300_000)] {
            let src = dir.path().join(name);
            std::fs::create_dir(&src).unwrap();
            let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            std::fs::write(src.join("f"), data).unwrap();
            std::fs::write(src.join("g"), name).unwrap();
            ops::push_add(
                &cache,
                &StoreDir::default(),
                &src,
                name,
                &opts,
                Arc::new(NoProgress),
            )
            .await
            .unwrap();
        }
        objects(&cache).await
    })
}

fn narinfo_count(objects: &BTreeMap<String, Bytes>) -> usize {
    objects.keys().filter(|k| k.ends_with(".narinfo")).count()
}

/// Copies `from` into a fresh `memory://` cache, trusting `trusted`.
async fn copy_out(
    from: &BinaryCache,
    trusted: &[cachecore::signing::PublicKey],
) -> (Result<ops::CopySummary, ops::OpError>, BinaryCache) {
    let to = BinaryCache::open("memory://").unwrap();
    let opts = CopyOptions {
        trusted_keys: trusted.to_vec(),
        ..CopyOptions::default()
    };
    let copied = ops::copy(from, &to, &[], &opts, Arc::new(NoProgress)).await;
    (copied, to)
}

async fn verify_report(
    cache: &BinaryCache,
    trusted: &[cachecore::signing::PublicKey],
) -> ops::VerifyReport {
    ops::verify(
        cache,
        &[],
        &VerifyOptions {
            trusted_keys: trusted.to_vec(),
            ..VerifyOptions::default()
        },
    )
    .await
    .unwrap()
}

#[test]
fn each_class_of_mutation_is_refused_with_its_kind_and_reported_by_verify() {
    let rt = ops::runtime().unwrap();
    let key = SecretKey::generate("mutations-1").unwrap();
    let public = key.public_key();
    let clean = clean_cache(&rt, key);
    assert_eq!(narinfo_count(&clean), 2, "{:?}", clean.keys());
    let narinfo = |objects: &BTreeMap<String, Bytes>, which: usize| {
        objects
            .keys()
            .filter(|k| k.ends_with(".narinfo"))
            .nth(which)
            .unwrap()
            .clone()
    };
    let nar_of = |objects: &BTreeMap<String, Bytes>, narinfo: &str| {
        let text = String::from_utf8(objects[narinfo].to_vec()).unwrap();
        let url = text.lines().find_map(|l| l.strip_prefix("URL: ")).unwrap();
        url.to_owned()
    };
    let set_field = |objects: &mut BTreeMap<String, Bytes>, key: &str, field: &str, value: &str| {
        let text = String::from_utf8(objects[key].to_vec()).unwrap();
        let new: String = text
            .lines()
            .filter_map(|l| match l.split_once(": ") {
                Some((f, _)) if f == field && value.is_empty() => None,
                Some((f, _)) if f == field => Some(format!("{f}: {value}\n")),
                _ => Some(format!("{l}\n")),
            })
            .collect();
        objects.insert(key.to_owned(), Bytes::from(new));
    };

    // The clean cache verifies, and copies whole with and without trusted keys.
    rt.block_on(async {
        let from = load(&clean).await;
        let report = verify_report(&from, std::slice::from_ref(&public)).await;
        assert!(report.is_ok() && report.checked == 2, "{report:?}");
        for trusted in [vec![], vec![public.clone()]] {
            let (copied, to) = copy_out(&from, &trusted).await;
            assert_eq!(copied.unwrap().copied, 2);
            assert_eq!(narinfo_count(&objects(&to).await), 2);
        }
    });

    type Mutation<'a> = Box<dyn Fn(&mut BTreeMap<String, Bytes>) + 'a>;
    let cases: Vec<(&str, Mutation, ErrorKind)> = vec![
        (
            "a bit of a NAR flipped",
            Box::new(|o: &mut BTreeMap<String, Bytes>| {
                let nar = nar_of(o, &narinfo(o, 0));
                let mut b = o[&nar].to_vec();
                let i = b.len() / 2;
                b[i] ^= 0x10;
                o.insert(nar, Bytes::from(b));
            }),
            ErrorKind::Corrupt,
        ),
        (
            "a NAR cut short",
            Box::new(|o: &mut BTreeMap<String, Bytes>| {
                let nar = nar_of(o, &narinfo(o, 1));
                let b = o[&nar].slice(..o[&nar].len() / 2);
                o.insert(nar, b);
            }),
            ErrorKind::Corrupt,
        ),
        (
            "a NAR deleted",
            Box::new(|o: &mut BTreeMap<String, Bytes>| {
                let nar = nar_of(o, &narinfo(o, 0));
                o.remove(&nar);
            }),
            ErrorKind::Corrupt,
        ),
        (
            "two narinfos swapped",
            Box::new(|o: &mut BTreeMap<String, Bytes>| {
                let (a, b) = (narinfo(o, 0), narinfo(o, 1));
                let (va, vb) = (o[&a].clone(), o[&b].clone());
                o.insert(a, vb);
                o.insert(b, va);
            }),
            ErrorKind::Corrupt,
        ),
        (
            "a narinfo cut in half",
            Box::new(|o: &mut BTreeMap<String, Bytes>| {
                let k = narinfo(o, 0);
                let b = o[&k].slice(..o[&k].len() / 2);
                o.insert(k, b);
            }),
            ErrorKind::Corrupt,
        ),
        (
            "a narinfo's URL leading outside the cache",
            Box::new(|o: &mut BTreeMap<String, Bytes>| {
                let k = narinfo(o, 1);
                set_field(o, &k, "URL", "nar/../../etc/passwd");
            }),
            ErrorKind::Corrupt,
        ),
        (
            "a narinfo's NarHash replaced (signature no longer matches)",
            Box::new(|o: &mut BTreeMap<String, Bytes>| {
                let k = narinfo(o, 0);
                set_field(
                    o,
                    &k,
                    "NarHash",
                    "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s",
                );
            }),
            ErrorKind::Untrusted,
        ),
        (
            "a narinfo's signature removed",
            Box::new(|o: &mut BTreeMap<String, Bytes>| {
                let k = narinfo(o, 1);
                set_field(o, &k, "Sig", "");
            }),
            ErrorKind::Untrusted,
        ),
    ];
    for (what, mutation, kind) in &cases {
        let mut mutated = clean.clone();
        mutation(&mut mutated);
        rt.block_on(async {
            let from = load(&mutated).await;
            let report = verify_report(&from, std::slice::from_ref(&public)).await;
            assert!(!report.is_ok(), "{what}: verify found nothing wrong");
            let (copied, to) = copy_out(&from, std::slice::from_ref(&public)).await;
            let e = copied.expect_err(what);
            assert_eq!(e.kind(), *kind, "{what}: copy refused it as {e}");
            let written = verify_report(&to, std::slice::from_ref(&public)).await;
            assert!(
                written.is_ok(),
                "{what}: copy wrote what verify refuses: {written:?}"
            );
        });
    }
}

#[test]
fn whatever_copy_writes_from_a_mutated_cache_verify_accepts() {
    let rt = ops::runtime().unwrap();
    let key = SecretKey::generate("mutations-1").unwrap();
    let public = key.public_key();
    let clean = clean_cache(&rt, key);

    let seeds: u64 = std::env::var("HOSTILE_MUTATION_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let (mut refused, mut whole) = (0, 0);
    for seed in 1..=seeds {
        let mut rng = Xorshift::new(seed);
        let mut mutated = clean.clone();
        let mut applied = Vec::new();
        for _ in 0..1 + below(&mut rng, 3) {
            applied.push(mutate(&mut mutated, &mut rng));
        }
        let applied = applied.join("; ");
        rt.block_on(async {
            let from = load(&mutated).await;
            // What verify says of the source decides what copy must do with it.
            let sound = ops::verify(
                &from,
                &[],
                &VerifyOptions {
                    trusted_keys: vec![public.clone()],
                    ..VerifyOptions::default()
                },
            )
            .await
            .is_ok_and(|r| r.is_ok() && r.checked == narinfo_count(&mutated));
            for trusted in [vec![], vec![public.clone()]] {
                let (copied, to) = copy_out(&from, &trusted).await;
                match &copied {
                    Ok(summary) => {
                        if sound {
                            assert_eq!(
                                summary.copied,
                                narinfo_count(&mutated),
                                "seed {seed} ({applied}): a sound source was not copied whole"
                            );
                            whole += 1;
                        }
                    }
                    Err(e) => {
                        assert!(
                            !(sound && !trusted.is_empty()),
                            "seed {seed} ({applied}): verify finds the source sound, copy refused it: {e}"
                        );
                        assert!(
                            matches!(
                                e.kind(),
                                ErrorKind::Corrupt
                                    | ErrorKind::Untrusted
                                    | ErrorKind::NotFound
                                    | ErrorKind::InvalidInput
                            ),
                            "seed {seed} ({applied}): copy failed as {:?}, not as a bad source: {e}",
                            e.kind()
                        );
                        refused += 1;
                    }
                }
                if to.cache_info().await.unwrap().is_none() {
                    // The copy stopped before it began (the source's nix-cache-info is
                    // unusable): then it wrote nothing at all.
                    let written: Vec<_> = to.objects().list("").try_collect().await.unwrap();
                    assert!(
                        copied.is_err() && written.is_empty(),
                        "seed {seed} ({applied}): a copy that never initialised the destination wrote {written:?}",
                    );
                    continue;
                }
                let report = verify_report(&to, &trusted).await;
                assert!(
                    report.is_ok(),
                    "seed {seed} ({applied}): copy wrote what verify refuses: {:?}",
                    report.problems.iter().map(ToString::to_string).collect::<Vec<_>>()
                );
            }
        });
    }
    // The mutations hit: most seeds break something copy must refuse; some leave it whole.
    assert!(
        refused > seeds as usize / 2,
        "only {refused} of {} copies refused",
        2 * seeds
    );
    assert!(whole > 0, "no mutated source was sound and copied whole");
}

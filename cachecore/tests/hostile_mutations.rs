//! A small valid cache in `memory://`, mutated a few hundred ways (bytes flipped, objects cut,
//! extended, swapped or deleted, narinfo fields replaced by other hashes, huge numbers or
//! garbage), then run through `verify` and `copy`. Nothing may panic, and whatever `copy`
//! writes, `verify` accepts: a hostile source never gets an object into a destination that the
//! destination's own checks would refuse.
//!
//! Deterministic (a seeded generator), so a failure names the seed that reproduces it. The
//! libFuzzer target of the same idea needs the fuzz crate to build the `cache` feature.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use cachecore::ops::{self, CopyOptions, NoProgress, PushOptions, VerifyOptions};
use cachecore::signing::{SecretKey, Signer};
use cachecore::store::{BinaryCache, PutMode};
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
            .put(k, v.clone(), PutMode::Overwrite)
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

#[test]
fn whatever_copy_writes_from_a_mutated_cache_verify_accepts() {
    let rt = ops::runtime().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate("mutations-1").unwrap();
    let public = key.public_key();
    let clean = rt.block_on(async {
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
    });

    let seeds: u64 = std::env::var("HOSTILE_MUTATION_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    for seed in 1..=seeds {
        let mut rng = Xorshift::new(seed);
        let mut mutated = clean.clone();
        let mut applied = Vec::new();
        for _ in 0..1 + below(&mut rng, 3) {
            applied.push(mutate(&mut mutated, &mut rng));
        }
        rt.block_on(async {
            let from = load(&mutated).await;
            // verify must not panic, whatever it finds.
            let _ = ops::verify(&from, &[], &VerifyOptions::default()).await;
            for trusted in [vec![], vec![public.clone()]] {
                let to = BinaryCache::open("memory://").unwrap();
                let opts = CopyOptions {
                    trusted_keys: trusted.clone(),
                    ..CopyOptions::default()
                };
                let copied = ops::copy(&from, &to, &[], &opts, Arc::new(NoProgress)).await;
                if to.cache_info().await.unwrap().is_none() {
                    // The copy stopped before it began (the source's nix-cache-info is
                    // unusable): then it wrote nothing at all.
                    let written: Vec<_> = to.objects().list("").try_collect().await.unwrap();
                    assert!(
                        copied.is_err() && written.is_empty(),
                        "seed {seed} ({}): a copy that never initialised the destination wrote {written:?}",
                        applied.join("; "),
                    );
                    continue;
                }
                let report = ops::verify(
                    &to,
                    &[],
                    &VerifyOptions {
                        trusted_keys: trusted,
                        ..VerifyOptions::default()
                    },
                )
                .await
                .unwrap();
                assert!(
                    report.is_ok(),
                    "seed {seed} ({}): copy wrote what verify refuses: {:?}",
                    applied.join("; "),
                    report.problems.iter().map(ToString::to_string).collect::<Vec<_>>()
                );
            }
        });
    }
}

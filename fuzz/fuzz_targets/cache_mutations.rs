//! A small valid cache (two paths pushed into `memory://`, signed), with one of its objects
//! replaced, patched, cut, deleted or swapped as the input says, run through `verify` and
//! `copy` (with and without a trusted key) into a fresh `memory://`.
//!
//! Invariants: nothing panics; whatever `copy` writes, `verify` of the destination accepts (a
//! hostile source never gets an object past the destination's own checks); a copy that stops
//! before it initialised the destination wrote nothing at all.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use cachecore::ops::{self, CopyOptions, NoProgress, PushOptions, VerifyOptions};
use cachecore::signing::{PublicKey, SecretKey, Signer};
use cachecore::store::{BinaryCache, PutMode};
use cachecore::store_path::StoreDir;
use futures::TryStreamExt as _;
use libfuzzer_sys::fuzz_target;

struct Clean {
    rt: tokio::runtime::Runtime,
    objects: BTreeMap<String, Bytes>,
    public: PublicKey,
}

fn clean() -> &'static Clean {
    static CLEAN: OnceLock<Clean> = OnceLock::new();
    CLEAN.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let key = SecretKey::generate("fuzz-1").unwrap();
        let public = key.public_key();
        let dir = tempfile::tempdir().unwrap();
        let objects = rt.block_on(async {
            let cache = BinaryCache::open("memory://").unwrap();
            let signer: Arc<dyn Signer> = Arc::new(key);
            let opts = PushOptions {
                signers: vec![signer],
                ..PushOptions::default()
            };
            for (name, size) in [("small", 700usize), ("medium", 70_000)] {
                let src = dir.path().join(name);
                std::fs::create_dir(&src).unwrap();
                let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
                std::fs::write(src.join("f"), data).unwrap();
                std::fs::write(src.join("g"), name).unwrap();
                ops::push_add(&cache, &StoreDir::default(), &src, name, &opts, Arc::new(NoProgress))
                    .await
                    .unwrap();
            }
            all_objects(&cache).await
        });
        Clean { rt, objects, public }
    })
}

async fn all_objects(cache: &BinaryCache) -> BTreeMap<String, Bytes> {
    let metas: Vec<_> = cache.objects().list("").try_collect().await.unwrap();
    let mut out = BTreeMap::new();
    for m in metas {
        let bytes = cache.objects().get_bytes(&m.key).await.unwrap().unwrap();
        out.insert(m.key, bytes);
    }
    out
}

/// The clean objects with the mutation `data` describes: its first byte picks the object, the
/// second what to do, the rest is the material.
fn mutated(clean: &BTreeMap<String, Bytes>, data: &[u8]) -> BTreeMap<String, Bytes> {
    let mut objects = clean.clone();
    let (Some(&pick), Some(&op)) = (data.first(), data.get(1)) else {
        return objects;
    };
    let rest = &data[2..];
    let keys: Vec<String> = objects.keys().cloned().collect();
    let key = keys[pick as usize % keys.len()].clone();
    let mut bytes = objects[&key].to_vec();
    match op % 5 {
        // Replaced whole.
        0 => bytes = rest.to_vec(),
        // Patched: XORed with the material from an offset the first two bytes give.
        1 => {
            if let [a, b, patch @ ..] = rest {
                let at = usize::from(u16::from_le_bytes([*a, *b]));
                for (i, p) in patch.iter().enumerate() {
                    if let Some(x) = bytes.get_mut(at + i) {
                        *x ^= p;
                    }
                }
            }
        }
        // Cut, or extended with the material.
        2 => {
            let n = rest.first().map_or(0, |&n| usize::from(n) * bytes.len() / 256);
            bytes.truncate(n);
            bytes.extend_from_slice(rest.get(1..).unwrap_or_default());
        }
        // Deleted.
        3 => {
            objects.remove(&key);
            return objects;
        }
        // Moved over another key.
        _ => {
            let other = keys[rest.first().map_or(0, |&n| n as usize) % keys.len()].clone();
            objects.remove(&key);
            objects.insert(other, Bytes::from(bytes));
            return objects;
        }
    }
    objects.insert(key, Bytes::from(bytes));
    objects
}

fuzz_target!(|data: &[u8]| {
    let clean = clean();
    let objects = mutated(&clean.objects, data);
    clean.rt.block_on(async {
        let from = BinaryCache::open("memory://").unwrap();
        for (k, v) in &objects {
            from.objects().put(k, v.clone(), PutMode::Overwrite).await.unwrap();
        }
        let _ = ops::verify(&from, &[], &VerifyOptions::default()).await;
        for trusted in [vec![], vec![clean.public.clone()]] {
            let to = BinaryCache::open("memory://").unwrap();
            let opts = CopyOptions {
                trusted_keys: trusted.clone(),
                ..CopyOptions::default()
            };
            let copied = ops::copy(&from, &to, &[], &opts, Arc::new(NoProgress)).await;
            if to.cache_info().await.unwrap().is_none() {
                let written: Vec<_> = to.objects().list("").try_collect().await.unwrap();
                assert!(copied.is_err() && written.is_empty(), "wrote {written:?}");
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
            assert!(report.is_ok(), "copy wrote what verify refuses: {:?}", report.problems);
        }
    });
});

//! A small valid cache (two paths pushed into `memory://`, signed), with one of its objects
//! replaced, patched, cut, deleted or swapped as the input says, run through `verify` and
//! `copy` (with and without a trusted key) into a fresh `memory://`, and used as the upstream of
//! a pull-through proxy (`cachecore::server` on a loopback socket, trusting the clean key) asked
//! over HTTP for each path's narinfo and NAR.
//!
//! Invariants: nothing panics; whatever `copy` writes, `verify` of the destination accepts (a
//! hostile source never gets an object past the destination's own checks); a copy that stops
//! before it initialised the destination wrote nothing at all; the proxy answers every request
//! (a hostile upstream is a miss, 404, never a server error), serves the NAR of every narinfo it
//! serves, and what it stored `verify` with the trusted key accepts.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use cachecore::narinfo::NarInfo;
use cachecore::ops::{self, CopyOptions, NoProgress, PushOptions, VerifyOptions};
use cachecore::server::{self, Config, Upstream};
use cachecore::signing::{PublicKey, SecretKey, Signer};
use cachecore::store::{BinaryCache, WriteMode};
use cachecore::store_path::StoreDir;
use futures::TryStreamExt as _;
use libfuzzer_sys::fuzz_target;

struct Clean {
    rt: tokio::runtime::Runtime,
    objects: BTreeMap<String, Bytes>,
    public: PublicKey,
    /// The hash parts of the clean cache's narinfos.
    hash_parts: Vec<String>,
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
        let hash_parts = objects
            .keys()
            .filter_map(|k| k.strip_suffix(".narinfo"))
            .map(str::to_owned)
            .collect();
        Clean {
            rt,
            objects,
            public,
            hash_parts,
        }
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
            from.objects().put(k, v.clone(), WriteMode::Overwrite).await.unwrap();
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
        through_proxy(&from, clean).await;
    });
});

/// Serves an empty `memory://` store filling itself from `from` (trusting the clean key) on a
/// loopback socket, asks it for every path's narinfo and the NAR each served narinfo names, and
/// checks the invariants of the module's header.
async fn through_proxy(from: &BinaryCache, clean: &Clean) {
    let store = BinaryCache::open("memory://").unwrap();
    let mut config = Config::default();
    config
        .upstreams
        .push(Upstream::new(from.clone(), vec![clean.public.clone()]));
    let app = server::router(store.clone(), config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server::serve(listener, app, async {
        let _ = stopped.await;
    }));
    for hash in &clean.hash_parts {
        let (status, body) = get(addr, &format!("/{hash}.narinfo")).await;
        assert!(status == 200 || status == 404, "narinfo: {status} {body:?}");
        if status != 200 {
            continue;
        }
        let info = NarInfo::parse_bytes(&body).expect("the proxy serves a narinfo it parsed");
        let (status, nar) = get(addr, &format!("/{}", info.url)).await;
        assert_eq!(status, 200, "the NAR {} of a served narinfo", info.url);
        assert_eq!(Some(nar.len() as u64), info.file_size, "the NAR {} as served", info.url);
    }
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
    if store.cache_info().await.unwrap().is_none() {
        // Nothing filled (every upstream answer refused): the store was never initialised, and
        // then holds nothing at all.
        let stored: Vec<_> = store.objects().list("").try_collect().await.unwrap();
        assert!(stored.is_empty(), "the proxy stored {stored:?} without nix-cache-info");
        return;
    }
    let report = ops::verify(
        &store,
        &[],
        &VerifyOptions {
            trusted_keys: vec![clean.public.clone()],
            ..VerifyOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(report.is_ok(), "the proxy stored what verify refuses: {:?}", report.problems);
}

/// `GET path` over HTTP/1.0 from the server at `addr`: (status, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: fuzz\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).await.unwrap();
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&response[..end]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, response[end + 4..].to_vec())
}

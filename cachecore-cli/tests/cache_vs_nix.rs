//! Binary cache files written by real Nix (`nix copy --to file://…`): NAR listings (`.ls`),
//! narinfos (parse and print back byte for byte), and signatures in both directions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use cachecore::compression::{decompress, Compression};
use cachecore::hash::{Hash, HashAlgo};
use cachecore::narinfo::NarInfo;
use cachecore::signing::{PublicKey, SecretKey};
use serde_json::Value;

use common::*;

fn hash_part(store_path: &str) -> &str {
    let base = store_path.rsplit('/').next().unwrap();
    &base[..32]
}

/// Every narinfo in a cache directory, as (file, text), sorted by file name.
fn narinfos(cache: &Path) -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "narinfo"))
        .map(|p| {
            let text = fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    out.sort();
    out
}

/// Decompresses by sniffing the magic number, so the test sees what Nix really wrote.
fn sniff_and_decompress(bytes: &[u8]) -> (Compression, Vec<u8>) {
    let method = if bytes.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Compression::Xz
    } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else if bytes.starts_with(b"BZh") {
        Compression::Bzip2
    } else {
        Compression::None
    };
    let mut out = Vec::new();
    decompress(method, bytes)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    (method, out)
}

/// The first place two JSON values differ, as a JSON-pointer-like path.
fn first_json_difference(path: &str, a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(ma), Value::Object(mb)) => {
            let ka: Vec<_> = ma.keys().collect();
            let mut ka_sorted = ka.clone();
            ka_sorted.sort();
            let mut kb: Vec<_> = mb.keys().collect();
            kb.sort();
            if ka_sorted != kb {
                return Some(format!("{path}: keys {ka_sorted:?} vs {kb:?}"));
            }
            ma.iter().find_map(|(k, va)| {
                first_json_difference(&format!("{path}/{k}"), va, &mb[k.as_str()])
            })
        }
        _ if a == b => None,
        _ => Some(format!("{path}: Nix has {a}, cachecore has {b}")),
    }
}

fn nar_path_of(cache: &Path, narinfo: &NarInfo) -> PathBuf {
    cache.join(&narinfo.url)
}

// ---------------------------------------------------------------------------------------------
// Listings
// ---------------------------------------------------------------------------------------------

#[test]
fn nar_ls_json_equals_the_listing_nix_copy_writes() {
    let dir = tempdir();
    // The fixture tree, single-file and symlink roots, and a built closure.
    let added: Vec<String> = make_all_roots(dir.path())
        .iter()
        .map(|r| nix_store_add(r))
        .collect();
    let closure = build_closure(dir.path());
    let cache = dir.path().join("cache");
    let mut paths: Vec<&str> = closure.iter().map(String::as_str).collect();
    paths.extend(added.iter().map(String::as_str));
    nix_copy_to_file(&cache, "compression=none&write-nar-listing=true", &paths);

    for path in paths {
        let hash = hash_part(path);
        let ls_bytes = fs::read(cache.join(format!("{hash}.ls")))
            .unwrap_or_else(|e| panic!("Nix wrote no {hash}.ls for {path}: {e}"));
        let (method, ls_json) = sniff_and_decompress(&ls_bytes);
        assert_eq!(
            method,
            Compression::None,
            "with compression=none Nix 2.8 writes the .ls as plain JSON"
        );
        let expected: Value = serde_json::from_slice(&ls_json).unwrap();

        let narinfo =
            NarInfo::parse(&fs::read_to_string(cache.join(format!("{hash}.narinfo"))).unwrap())
                .unwrap();
        let nar_file = nar_path_of(&cache, &narinfo);
        let out = cachecore_ok(
            &[
                "nar".as_ref(),
                "ls".as_ref(),
                "--json".as_ref(),
                nar_file.as_os_str(),
            ],
            b"",
        );
        let actual: Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
            panic!(
                "`cachecore nar ls --json` printed invalid JSON ({e}): {}",
                String::from_utf8_lossy(&out)
            )
        });
        if let Some(diff) = first_json_difference("", &expected, &actual) {
            panic!(
                "`cachecore nar ls --json {}` differs from Nix's {hash}.ls for {path}: {diff}",
                nar_file.display()
            );
        }
        assert_eq!(expected, actual);

        // Through stdin too.
        let nar = fs::read(&nar_file).unwrap();
        let out = cachecore_ok(&["nar", "ls", "--json", "-"], &nar);
        assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), expected);

        // narOffset and size point at each file's bytes in the NAR.
        check_offsets(&expected["root"], &nar, Path::new(path), "");
    }
}

fn check_offsets(node: &Value, nar: &[u8], store_path: &Path, rel: &str) {
    match node["type"].as_str().unwrap() {
        "regular" => {
            let size = node["size"].as_u64().unwrap() as usize;
            let offset = node["narOffset"].as_u64().unwrap() as usize;
            let file = if rel.is_empty() {
                store_path.to_owned()
            } else {
                store_path.join(rel)
            };
            let on_disk = fs::read(&file).unwrap();
            assert_same_bytes(
                &format!("NAR bytes at narOffset {offset} for {rel}"),
                &on_disk,
                &nar[offset..offset + size],
            );
        }
        "directory" => {
            for (name, child) in node["entries"].as_object().unwrap() {
                let sub = if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                };
                check_offsets(child, nar, store_path, &sub);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Narinfos
// ---------------------------------------------------------------------------------------------

/// Parses every narinfo of `cache`, checks that printing gives back Nix's bytes, and that the
/// fields agree with the store and the NAR files. Returns the parsed narinfos.
fn check_narinfos_round_trip(cache: &Path, compression: &str) -> Vec<NarInfo> {
    let infos = narinfos(cache);
    assert!(!infos.is_empty(), "no narinfo in {}", cache.display());
    let mut parsed = Vec::new();
    for (file, text) in infos {
        let info = NarInfo::parse(&text).unwrap_or_else(|e| {
            panic!(
                "cannot parse {} written by Nix: {e}\n{text}",
                file.display()
            )
        });
        assert_same_bytes(
            &format!("NarInfo::parse + to_string of {}", file.display()),
            text.as_bytes(),
            info.to_string().as_bytes(),
        );
        assert_eq!(
            info.compression.as_deref(),
            Some(compression),
            "{}",
            file.display()
        );

        // NarHash and NarSize are those of the store path's NAR.
        let store_path = info.store_dir.full_path(&info.store_path);
        assert_eq!(
            cachecore_str(&["nar", "hash", "--size", &store_path]),
            format!("{} {}", info.nar_hash, info.nar_size),
            "NarHash/NarSize of {store_path}"
        );
        // The NAR file decompresses to what `cachecore nar pack` writes, and FileHash/FileSize
        // describe the compressed file.
        let compressed = fs::read(nar_path_of(cache, &info)).unwrap();
        assert_eq!(
            info.file_size,
            Some(compressed.len() as u64),
            "FileSize of {store_path}"
        );
        assert_eq!(
            info.file_hash,
            Some(Hash::digest(HashAlgo::Sha256, &compressed)),
            "FileHash of {store_path}"
        );
        let mut nar = Vec::new();
        decompress(
            Compression::from_name(compression).unwrap(),
            &compressed[..],
        )
        .unwrap()
        .read_to_end(&mut nar)
        .unwrap();
        assert_same_bytes(
            &format!(
                "{} decompressed vs `cachecore nar pack {store_path}`",
                info.url
            ),
            &nar,
            &cachecore_ok(&["nar", "pack", &store_path], b""),
        );
        parsed.push(info);
    }
    parsed
}

fn by_name<'a>(infos: &'a [NarInfo], name: &str) -> &'a NarInfo {
    infos
        .iter()
        .find(|i| i.store_path.name() == name)
        .unwrap_or_else(|| panic!("no narinfo for {name}"))
}

#[test]
fn narinfos_written_by_nix_round_trip_byte_for_byte() {
    let dir = tempdir();
    let closure = build_closure(dir.path());
    let tree = make_fixture_tree(dir.path());
    let tree_path = nix_store_add(&tree);
    let mut paths: Vec<&str> = closure.iter().map(String::as_str).collect();
    paths.push(&tree_path);

    for compression in ["xz", "zstd", "br", "none"] {
        let cache = dir.path().join(format!("cache-{compression}"));
        nix_copy_to_file(&cache, &format!("compression={compression}"), &paths);
        let infos = check_narinfos_round_trip(&cache, compression);
        assert_eq!(infos.len(), 4);

        let app = by_name(&infos, "cachecore-e2e-app");
        let mut refs: Vec<String> = app.references.iter().map(|r| r.name().to_owned()).collect();
        refs.sort();
        assert_eq!(refs, ["cachecore-e2e-liba", "cachecore-e2e-libb"]);
        assert!(app
            .deriver
            .as_ref()
            .is_some_and(|d| d.name() == "cachecore-e2e-app.drv"));
        assert!(app.signatures.is_empty());
        let fixture = by_name(&infos, "fixture-tree");
        assert!(
            fixture.ca.is_some(),
            "a path added with nix-store --add has a CA field"
        );
        assert!(fixture.deriver.is_none());
    }
}

#[test]
fn narinfos_signed_by_nix_verify_in_cachecore() {
    let dir = tempdir();
    let closure = build_closure(dir.path());
    let app = closure.last().unwrap();
    let (secret, public) = nix_generate_key(dir.path(), "test-1");
    let (_, other_public) = nix_generate_key(dir.path(), "test-1-other");
    let cache = dir.path().join("cache");
    nix_copy_to_file(
        &cache,
        &format!("compression=zstd&secret-key={}", secret.display()),
        &[app],
    );
    let infos = check_narinfos_round_trip(&cache, "zstd");
    assert_eq!(infos.len(), 3);
    let key = PublicKey::parse(&public).unwrap();
    let other = PublicKey::parse(&other_public).unwrap();
    for info in &infos {
        assert_eq!(info.signatures.len(), 1);
        assert!(
            info.signatures[0].starts_with("test-1:"),
            "{:?}",
            info.signatures
        );
        assert_eq!(
            info.valid_signatures(std::slice::from_ref(&key)).count(),
            1,
            "Nix's signature on {} does not verify with {public}",
            info.store_path
        );
        assert_eq!(
            info.valid_signatures(std::slice::from_ref(&other)).count(),
            0
        );
        // A tampered narinfo no longer verifies.
        let mut tampered = info.clone();
        tampered.nar_size += 1;
        assert_eq!(
            tampered
                .valid_signatures(std::slice::from_ref(&key))
                .count(),
            0
        );
    }

    // A second signature added by Nix (`nix store sign`): both verify, and the two-Sig narinfo
    // still prints back byte for byte.
    let (secret2, public2) = nix_generate_key(dir.path(), "second-2");
    nix_ok(
        nix_command("nix")
            .args(["store", "sign", "-r", "--store"])
            .arg(format!("file://{}", cache.display()))
            .arg("--key-file")
            .arg(&secret2)
            .arg(app),
        b"",
    );
    let key2 = PublicKey::parse(&public2).unwrap();
    for info in check_narinfos_round_trip(&cache, "zstd") {
        assert_eq!(info.signatures.len(), 2);
        assert_eq!(
            info.valid_signatures(&[key.clone(), key2.clone()]).count(),
            2
        );
    }
}

#[test]
fn cachecore_signature_equals_nix_signature() {
    // ed25519 is deterministic: signing Nix's unsigned narinfo with the same key must give
    // exactly the narinfo Nix signs.
    let dir = tempdir();
    let closure = build_closure(dir.path());
    let app = closure.last().unwrap();
    let (secret, _) = nix_generate_key(dir.path(), "same-1");
    let signed = dir.path().join("signed");
    let unsigned = dir.path().join("unsigned");
    nix_copy_to_file(
        &signed,
        &format!("compression=none&secret-key={}", secret.display()),
        &[app],
    );
    nix_copy_to_file(&unsigned, "compression=none", &[app]);
    let key = SecretKey::parse(&fs::read_to_string(&secret).unwrap()).unwrap();
    for (file, text) in narinfos(&unsigned) {
        let mut info = NarInfo::parse(&text).unwrap();
        info.sign(&key).unwrap();
        let nix_signed = fs::read_to_string(signed.join(file.file_name().unwrap())).unwrap();
        assert_same_bytes(
            &format!("{} signed by cachecore vs signed by Nix", file.display()),
            nix_signed.as_bytes(),
            info.to_string().as_bytes(),
        );
    }
}

/// Re-signs every narinfo of `cache` with `key` (dropping other signatures).
fn resign_cache(cache: &Path, key: &SecretKey) {
    for (file, text) in narinfos(cache) {
        let mut info = NarInfo::parse(&text).unwrap();
        info.signatures.clear();
        info.sign(key).unwrap();
        fs::write(&file, info.to_string()).unwrap();
    }
}

/// `nix copy --from` the cache into fresh chroot stores: refused when unsigned, refused with the
/// wrong trusted key, accepted with the right one.
fn assert_nix_accepts_signatures(
    dir: &Path,
    cache: &Path,
    store_path: &str,
    right_public: &str,
    wrong_public: &str,
    resign: impl FnOnce(),
) {
    let closure_names: Vec<String> = nix("nix-store", &["-qR", store_path])
        .lines()
        .map(|l| l.rsplit('/').next().unwrap().to_owned())
        .collect();

    let unsigned_store = dir.join("store-unsigned");
    let out = nix_copy_from_file_checking_sigs(cache, &unsigned_store, store_path, right_public);
    assert!(
        !out.status.success(),
        "Nix accepted an unsigned cache with require-sigs: the check is not effective"
    );

    resign();

    let wrong_store = dir.join("store-wrong-key");
    let out = nix_copy_from_file_checking_sigs(cache, &wrong_store, store_path, wrong_public);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "Nix accepted cachecore's signatures with the wrong trusted key {wrong_public}"
    );
    assert!(
        stderr.contains("lacks a valid signature"),
        "unexpected Nix error:\n{stderr}"
    );

    let store = dir.join("store-right-key");
    let out = nix_copy_from_file_checking_sigs(cache, &store, store_path, right_public);
    assert!(
        out.status.success(),
        "Nix refused narinfos signed by cachecore (trusted key {right_public}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in &closure_names {
        assert!(
            store.join("nix/store").join(name).exists(),
            "{name} missing from the chroot store after nix copy"
        );
    }
}

#[test]
fn narinfos_signed_by_cachecore_with_a_nix_key_are_accepted_by_nix() {
    let dir = tempdir();
    let closure = build_closure(dir.path());
    let app = closure.last().unwrap();
    let (secret, public) = nix_generate_key(dir.path(), "test-1");
    // Same key name, different key: only the key bytes can make Nix refuse.
    let wrong_dir = dir.path().join("wrong");
    fs::create_dir(&wrong_dir).unwrap();
    let (_, wrong_public) = nix_generate_key(&wrong_dir, "test-1");
    assert_ne!(public, wrong_public);
    let cache = dir.path().join("cache");
    nix_copy_to_file(&cache, "compression=zstd", &[app]);
    let key = SecretKey::parse(&fs::read_to_string(&secret).unwrap()).unwrap();
    assert_nix_accepts_signatures(dir.path(), &cache, app, &public, &wrong_public, || {
        resign_cache(&cache, &key)
    });
}

#[test]
fn narinfos_signed_with_a_cachecore_generated_key_are_accepted_by_nix() {
    let dir = tempdir();
    let closure = build_closure(dir.path());
    let app = closure.last().unwrap();
    let secret = dir.path().join("cachecore.sk");
    cachecore_ok(
        &[
            "key",
            "generate",
            "cachecore-test-1",
            "--out",
            path_str(&secret),
        ],
        b"",
    );
    let public = cachecore_str(&["key", "public", path_str(&secret)]);
    let wrong = dir.path().join("wrong.sk");
    cachecore_ok(
        &[
            "key",
            "generate",
            "cachecore-test-1",
            "--out",
            path_str(&wrong),
        ],
        b"",
    );
    let wrong_public = cachecore_str(&["key", "public", path_str(&wrong)]);
    assert_ne!(public, wrong_public);

    let cache = dir.path().join("cache");
    nix_copy_to_file(&cache, "compression=zstd", &[app]);
    let key = SecretKey::parse(&fs::read_to_string(&secret).unwrap()).unwrap();
    assert_nix_accepts_signatures(dir.path(), &cache, app, &public, &wrong_public, || {
        resign_cache(&cache, &key)
    });

    // And Nix itself can sign with a key cachecore generated; cachecore verifies the result.
    let nix_signed = dir.path().join("nix-signed");
    nix_copy_to_file(
        &nix_signed,
        &format!("compression=none&secret-key={}", secret.display()),
        &[app],
    );
    let pk = PublicKey::parse(&public).unwrap();
    for info in check_narinfos_round_trip(&nix_signed, "none") {
        assert_eq!(info.valid_signatures(std::slice::from_ref(&pk)).count(), 1);
    }
}

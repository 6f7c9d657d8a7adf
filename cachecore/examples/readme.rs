//! The README's library examples, compiled: `cargo test` builds examples, and
//! `tests/readme_examples.rs` checks that every `rust` block of the README appears here line for
//! line. They are not run (they need a tree, a narinfo, a key and a server).

#![allow(clippy::unwrap_used)]

/// The README's first example.
fn formats() -> Result<(), Box<dyn std::error::Error>> {
    use cachecore::{nar, narinfo::NarInfo, signing::SecretKey};

    // Hash a tree as Nix does, streaming (nothing is held in memory).
    let (nar_hash, nar_size) = nar::hash_path("/some/tree".as_ref())?;
    println!("{nar_hash} {nar_size}");

    // Parse, sign and print a narinfo; unknown fields are kept and Nix's files print back identically.
    let mut info = NarInfo::parse(&std::fs::read_to_string("x.narinfo")?)?;
    info.sign(&SecretKey::parse(&std::fs::read_to_string("cache.sec")?)?)?;
    print!("{info}");
    Ok(())
}

/// The README's second example.
async fn objects() -> Result<(), Box<dyn std::error::Error>> {
    use cachecore::store::{BinaryCache, ReadRange};

    let cache = BinaryCache::open("s3://cache?endpoint=http://127.0.0.1:3900&region=garage")?;
    // A ranged read streams only the bytes asked for, with the object's size, ETag, mtime.
    let object = cache
        .objects()
        .get("nix-cache-info", ReadRange::Bounded(0..16))
        .await?;
    println!("{:?}", object.map(|o| o.meta));
    // What the store honours, probed once: Garage answers create_only: false.
    println!("{:?}", cache.objects().write_support().await?);
    Ok(())
}

fn main() {
    // Compiled, not run.
    let _ = (formats, objects);
}

//! `Content-Encoding` of a cache's small objects: narinfos, listings and build logs, stored
//! compressed with the encoding recorded as the object's metadata — as Nix's own S3 store
//! writes them with `narinfo-compression`, `ls-compression` and `log-compression`, and as
//! niks3 writes every small object. Nix, a CDN, a bucket's website endpoint and `cachecore
//! serve` hand the header on; every read through [`Objects`](super::Objects) decodes it.
//!
//! Encodings are named as Nix names compression methods (`zstd`, `br`, `xz`, `bzip2`), which is what
//! Nix writes into the header; `identity` (or none) is plain. Decoding is bounded like every
//! other read of untrusted metadata: what expands past the read's limit is refused as a bomb.
//! A local directory cannot keep the header (Nix reads its files raw), so its objects stay
//! plain.

use std::io::Read as _;

use bytes::Bytes;

use super::error::StoreError;
use crate::compression::Compression;

/// The encodings decoded here, for messages and `Accept-Encoding`.
pub const DECODED: &str = "zstd, br, xz, bzip2";

/// The compression method of a `Content-Encoding` value: `None` for plain (`identity`, empty).
///
/// ```
/// use cachecore::{compression::Compression, store::encoding::method_of};
/// assert_eq!(method_of("zstd"), Ok(Some(Compression::Zstd)));
/// assert_eq!(method_of(" identity "), Ok(None));
/// assert_eq!(method_of("br"), Ok(Some(Compression::Brotli)));
/// assert!(method_of("gzip").unwrap_err().contains("gzip"));
/// ```
pub fn method_of(encoding: &str) -> Result<Option<Compression>, String> {
    match encoding.trim() {
        "" | "identity" | "none" => Ok(None),
        name => match Compression::from_name(name) {
            Ok(Compression::None) => Ok(None),
            Ok(method) => Ok(Some(method)),
            Err(_) => Err(format!(
                "its Content-Encoding is {name:?}, which cachecore does not decode (it decodes {DECODED})"
            )),
        },
    }
}

/// `bytes`, stored with `Content-Encoding: encoding`, decoded; refused when the encoding is
/// unknown, the bytes do not decode, or they expand past `limit` bytes.
pub(crate) fn decode(
    url: &str,
    key: &str,
    encoding: &str,
    bytes: Bytes,
    limit: u64,
) -> Result<Bytes, StoreError> {
    let bad = |reason: String| StoreError::BadEncoding {
        url: url.to_owned(),
        key: key.to_owned(),
        reason,
    };
    let Some(method) = method_of(encoding).map_err(bad)? else {
        return Ok(bytes);
    };
    let mut decoder = crate::compression::decompress(method, &bytes[..])
        .map_err(|e| bad(format!("its {method} encoding does not decode: {e}")))?
        .take(limit.saturating_add(1));
    let mut out = Vec::new();
    decoder
        .read_to_end(&mut out)
        .map_err(|e| bad(format!("its {method} encoding does not decode: {e}")))?;
    if out.len() as u64 > limit {
        return Err(StoreError::TooLarge {
            url: url.to_owned(),
            key: key.to_owned(),
            limit,
        });
    }
    Ok(Bytes::from(out))
}

/// `bytes` compressed with `method`, for storing with `Content-Encoding: <method>` (a plain
/// zstd stream, not the seekable one NARs get): the streaming [`Encoder`], fed once.
pub(crate) fn encode(method: Compression, bytes: &[u8]) -> std::io::Result<Bytes> {
    let Some(mut encoder) = Encoder::new(method)? else {
        return Ok(Bytes::copy_from_slice(bytes));
    };
    let head = encoder.push(bytes)?;
    let tail = encoder.finish()?;
    Ok(if head.is_empty() {
        tail
    } else {
        Bytes::from([head, tail].concat())
    })
}

/// A streaming encoder: what each chunk written produced so far, then the rest at the end.
enum Encoder {
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Xz(xz2::write::XzEncoder<Vec<u8>>),
    Bzip2(bzip2::write::BzEncoder<Vec<u8>>),
    /// Boxed: brotli's state is over 5 KiB.
    Brotli(Box<crate::compression::BrotliWriter<Vec<u8>>>),
}

impl Encoder {
    fn new(method: Compression) -> std::io::Result<Option<Encoder>> {
        Ok(Some(match method {
            Compression::None => return Ok(None),
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), 3)?),
            Compression::Xz => Encoder::Xz(xz2::write::XzEncoder::new(Vec::new(), 6)),
            Compression::Bzip2 => Encoder::Bzip2(bzip2::write::BzEncoder::new(
                Vec::new(),
                bzip2::Compression::best(),
            )),
            Compression::Brotli => {
                Encoder::Brotli(Box::new(crate::compression::BrotliWriter::new(
                    Vec::new(),
                    crate::compression::DEFAULT_BROTLI_LEVEL as u32,
                )))
            }
        }))
    }

    /// Compresses `chunk`; returns the output produced so far.
    fn push(&mut self, chunk: &[u8]) -> std::io::Result<Bytes> {
        use std::io::Write as _;
        let out = match self {
            Encoder::Zstd(e) => {
                e.write_all(chunk)?;
                e.get_mut()
            }
            Encoder::Xz(e) => {
                e.write_all(chunk)?;
                e.get_mut()
            }
            Encoder::Bzip2(e) => {
                e.write_all(chunk)?;
                e.get_mut()
            }
            Encoder::Brotli(e) => {
                e.write_all(chunk)?;
                e.get_mut()
            }
        };
        Ok(Bytes::from(std::mem::take(out)))
    }

    fn finish(self) -> std::io::Result<Bytes> {
        Ok(Bytes::from(match self {
            Encoder::Zstd(e) => e.finish()?,
            Encoder::Xz(e) => e.finish()?,
            Encoder::Bzip2(e) => e.finish()?,
            Encoder::Brotli(e) => e.finish()?,
        }))
    }
}

/// `data` compressed with `method` as it streams (memory: the codec's window and one chunk).
pub(crate) fn encode_stream(
    method: Compression,
    data: impl futures::Stream<Item = std::io::Result<Bytes>> + Send,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send {
    use futures::StreamExt as _;
    let data = Box::pin(data);
    let encoder = Encoder::new(method);
    futures::stream::unfold(Some((data, encoder)), |state| async move {
        let (mut data, encoder) = state?;
        let mut encoder = match encoder {
            Ok(Some(e)) => e,
            Ok(None) => return data.next().await.map(|item| (item, Some((data, Ok(None))))),
            Err(e) => return Some((Err(e), None)),
        };
        loop {
            match data.next().await {
                Some(Ok(chunk)) => match encoder.push(&chunk) {
                    Ok(out) if out.is_empty() => continue,
                    Ok(out) => return Some((Ok(out), Some((data, Ok(Some(encoder)))))),
                    Err(e) => return Some((Err(e), None)),
                },
                Some(Err(e)) => return Some((Err(e), None)),
                None => return Some((encoder.finish(), None)),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn each_method_round_trips_and_a_bomb_is_refused() {
        let text = b"StorePath: /nix/store/x\n".repeat(100);
        for method in [
            Compression::Zstd,
            Compression::Brotli,
            Compression::Xz,
            Compression::Bzip2,
        ] {
            let packed = encode(method, &text).unwrap();
            assert!(packed.len() < text.len());
            let back = decode(
                "memory://",
                "x.narinfo",
                method.name(),
                packed.clone(),
                4096,
            )
            .unwrap();
            assert_eq!(back, &text[..]);
            let e = decode("memory://", "x.narinfo", method.name(), packed, 1000).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
            assert!(e.to_string().contains("larger than 1000 bytes"), "{e}");
        }
    }

    #[test]
    fn a_cache_stores_what_its_url_says_encoded_and_reads_it_back_bounded() {
        use crate::store::{BinaryCache, ReadRange, MAX_LISTING_BYTES};
        use crate::store_path::StorePath;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let url = "memory://?narinfo-compression=zstd&ls-compression=xz&log-compression=bzip2";
            let cache = BinaryCache::open(url).unwrap();
            let path =
                StorePath::from_base_name("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12").unwrap();
            let info = crate::narinfo::NarInfo::new(
                crate::store_path::StoreDir::default(),
                path.clone(),
                "nar/x.nar".into(),
                crate::hash::Hash::digest(crate::hash::HashAlgo::Sha256, b"nar"),
                3,
            );
            cache.put_narinfo(&info).await.unwrap();
            let json = Bytes::from(format!(
                r#"{{"version":1,"root":{{"type":"regular","size":0}}}}{}"#,
                " ".repeat(1000)
            ));
            cache.put_listing_bytes(&path, json.clone()).await.unwrap();
            let drv =
                StorePath::from_base_name("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello.drv").unwrap();
            let log = Bytes::from(
                "building
"
                .repeat(500),
            );
            let chunks = log
                .chunks(100)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>();
            cache
                .put_log_stream(&drv, futures::stream::iter(chunks))
                .await
                .unwrap();
            let objects = cache.objects();
            for (key, encoding) in [
                (format!("{}.narinfo", path.hash_part()), "zstd"),
                (format!("{}.ls", path.hash_part()), "xz"),
                (format!("log/{drv}"), "bzip2"),
            ] {
                let raw = objects.get(&key, ReadRange::All).await.unwrap().unwrap();
                assert_eq!(
                    raw.meta.content_encoding.as_deref(),
                    Some(encoding),
                    "{key}"
                );
            }
            assert_eq!(cache.narinfo(&path).await.unwrap(), Some(info));
            assert_eq!(cache.listing_bytes(&path).await.unwrap(), Some(json));
            assert_eq!(cache.log(&drv).await.unwrap(), Some(log));

            // A listing of a few KiB that expands past the most a listing may be: refused.
            let bomb =
                zstd::stream::encode_all(std::io::repeat(b' ').take(MAX_LISTING_BYTES + 1), 19)
                    .unwrap();
            assert!(bomb.len() < 64 << 10);
            let store: std::sync::Arc<dyn object_store::ObjectStore> =
                std::sync::Arc::new(object_store::memory::InMemory::new());
            let mut attributes = object_store::Attributes::new();
            attributes.insert(object_store::Attribute::ContentEncoding, "zstd".into());
            let key = object_store::path::Path::from(format!("{}.ls", path.hash_part()));
            object_store::ObjectStore::put_opts(
                &*store,
                &key,
                bomb.into(),
                object_store::PutOptions::from(attributes),
            )
            .await
            .unwrap();
            let hostile = BinaryCache::from_object_store(store, "hostile://", true);
            let e = hostile.listing_bytes(&path).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
            assert!(e.to_string().contains("larger than"), "{e}");
        });
    }

    #[test]
    fn a_local_directory_refuses_to_encode() {
        for setting in ["narinfo-compression", "ls-compression", "log-compression"] {
            let url = format!("file:///tmp/cache?{setting}=zstd");
            let e = crate::store::StoreUrl::parse(&url).unwrap_err();
            assert!(
                e.to_string().contains(&format!(
                    "{setting} needs a store that keeps each object's Content-Encoding"
                )),
                "{e}"
            );
        }
        assert!(crate::store::StoreUrl::parse("file:///tmp/cache?ls-compression=none").is_ok());
    }

    #[test]
    fn unknown_and_broken_encodings_are_one_sentence() {
        let e = decode("memory://", "x.ls", "gzip", Bytes::from_static(b"x"), 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            "memory://: x.ls cannot be read: its Content-Encoding is \"gzip\", which cachecore does not decode (it decodes zstd, br, xz, bzip2)"
        );
        let e = decode(
            "memory://",
            "x.ls",
            "zstd",
            Bytes::from_static(b"plain"),
            10,
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(
            e.to_string()
                .starts_with("memory://: x.ls cannot be read: its zstd encoding does not decode"),
            "{e}"
        );
        assert_eq!(
            decode(
                "memory://",
                "x.ls",
                "identity",
                Bytes::from_static(b"plain"),
                10
            )
            .unwrap(),
            &b"plain"[..]
        );
    }
}

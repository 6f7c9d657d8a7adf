//! `PUT` of cache objects, as `nix copy --to http://…` sends them: NARs first, then listings,
//! then the narinfo (Nix uploads a path only after its references). Nothing is visible before
//! it was checked, and nothing present is ever replaced by something different.

use std::io;
use std::time::Duration;

use axum::extract::Request;
use axum::http::header::CONTENT_LENGTH;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use futures::{Stream, StreamExt as _};

use super::{store_failure, text, AppState, Config};
use crate::compression::Compression;
use crate::hash::{Hash, HashAlgo, Hasher};
use crate::nar::Listing;
use crate::narinfo::NarInfo;
use crate::realisation::Realisation;
use crate::store::layout::{self, ObjectKey, ObjectKind};
use crate::store::objects::PutMode;
use crate::store::StoreError;
use crate::store_path::StorePath;

/// How long a URL for a direct upload to the bucket stays valid.
const UPLOAD_URL_TTL: Duration = Duration::from_secs(3600);

/// Largest narinfo accepted (a path with thousands of references stays far below).
const MAX_NARINFO: u64 = 1 << 20;

/// Why reading an upload's body stopped.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the upload is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("the client sent nothing for {0} s")]
    Idle(u64),
    #[error("reading the upload failed: {0}")]
    Client(String),
    #[error("{0}")]
    Corrupt(String),
}

impl BodyError {
    fn response(&self, key: &str) -> Response {
        let status = match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Idle(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::Client(_) | BodyError::Corrupt(_) => StatusCode::BAD_REQUEST,
        };
        text(status, format!("{key} was not stored: {self}"))
    }
}

/// The request body as a stream, ending with an error when it exceeds `limit` bytes, when the
/// client is silent for `idle`, or — when `expected` is given — instead of its end when the
/// bytes do not hash to it.
fn body_stream(
    req: Request,
    limit: u64,
    idle: Duration,
    expected: Option<Hash>,
) -> impl Stream<Item = io::Result<Bytes>> + Send {
    let state = (
        req.into_body().into_data_stream(),
        0u64,
        expected.map(|h| (Hasher::new(h.algo()), h)),
        false,
    );
    futures::stream::unfold(state, move |(mut body, size, check, done)| async move {
        if done {
            return None;
        }
        let fail = |e: BodyError| Some((Err(io::Error::other(e)), (body_end(), 0, None, true)));
        let next = match tokio::time::timeout(idle, body.next()).await {
            Err(_) => return fail(BodyError::Idle(idle.as_secs())),
            Ok(next) => next,
        };
        match next {
            Some(Ok(chunk)) => {
                let size = size + chunk.len() as u64;
                if size > limit {
                    return fail(BodyError::TooLarge(limit));
                }
                let check = check.map(|(mut hasher, h)| {
                    hasher.update(&chunk);
                    (hasher, h)
                });
                Some((Ok(chunk), (body, size, check, false)))
            }
            Some(Err(e)) => fail(BodyError::Client(e.to_string())),
            None => {
                let (hasher, expected) = check?;
                let actual = hasher.finish();
                if actual == expected {
                    return None;
                }
                fail(BodyError::Corrupt(format!(
                    "its {size} bytes hash to {}, but its name says {}",
                    actual.to_nix32(),
                    expected.to_nix32()
                )))
            }
        }
    })
}

/// An empty body stream to put in place of a finished one.
fn body_end() -> axum::body::BodyDataStream {
    axum::body::Body::empty().into_data_stream()
}

/// The [`BodyError`] behind a failed upload, if that is why it failed.
fn body_error(e: &StoreError) -> Option<&BodyError> {
    match e {
        StoreError::Source { source, .. } => source.get_ref()?.downcast_ref::<BodyError>(),
        _ => None,
    }
}

fn stored(key: &str, what: &str) -> Response {
    text(StatusCode::OK, format!("{key}: {what}"))
}

fn conflict(message: String) -> Response {
    text(StatusCode::CONFLICT, message)
}

fn bad(key: &str, why: impl std::fmt::Display) -> Response {
    text(
        StatusCode::BAD_REQUEST,
        format!("{key} was not stored: {why}"),
    )
}

impl ObjectKind {
    /// The largest upload of this kind, or `None` where no upload is taken.
    fn upload_limit(self, config: &Config) -> Option<u64> {
        match self {
            ObjectKind::Nar => Some(config.max_nar_upload),
            ObjectKind::NarInfo => Some(MAX_NARINFO.min(config.max_small_upload)),
            ObjectKind::CacheInfo
            | ObjectKind::Listing
            | ObjectKind::Log
            | ObjectKind::Realisation => Some(config.max_small_upload),
            // Never served (`keys::is_served`), never taken.
            ObjectKind::GcRoot | ObjectKind::GcTrash | ObjectKind::Index | ObjectKind::Scratch => {
                None
            }
        }
    }
}

pub(super) async fn put(state: &AppState, key: &ObjectKey, req: Request) -> Response {
    let Some(limit) = key.kind.upload_limit(&state.config) else {
        return bad(&key.key, "objects of this kind are not taken");
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return BodyError::TooLarge(limit).response(&key.key);
    }
    let Ok(_permit) = state.uploads.acquire().await else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        );
    };
    let idle = state.config.upload_idle_timeout;
    if key.kind == ObjectKind::Nar {
        return put_nar(state, key, req, limit, idle).await;
    }
    let mut body = match read_small(body_stream(req, limit, idle, None)).await {
        Ok(b) => b,
        Err(e) => return e.response(&key.key),
    };
    // With the server's key, the narinfo is stored signed by it (replacing a signature under
    // its name), so uploaders never hold the signing key.
    if let (ObjectKind::NarInfo, Some(secret)) = (key.kind, &state.config.signing_key) {
        body = match sign_narinfo(&body, secret) {
            Ok(signed) => signed,
            Err(why) => return bad(&key.key, why),
        };
    }
    let _write = state.write_lock(&key.key).lock().await;
    // Present already: the same bytes are a harmless repeat (Nix re-uploads when copies run in
    // parallel); anything else would replace what clients may already have read.
    match state.cache.objects().get_bytes(&key.key).await {
        Ok(Some(existing)) if existing == body => {
            return stored(&key.key, "identical to the stored object")
        }
        Ok(Some(_)) => {
            return conflict(format!(
                "{} is present with other contents; objects of a cache are never replaced",
                key.key
            ))
        }
        Ok(None) => {}
        Err(e) => return store_failure(&key.key, &e),
    }
    let checked = match key.kind {
        ObjectKind::NarInfo => check_narinfo(state, key, &body).await,
        ObjectKind::Listing => Listing::parse(&body)
            .map(drop)
            .map_err(|e| bad(&key.key, format_args!("not a valid listing: {e}"))),
        ObjectKind::Realisation => check_realisation(state, key, &body).await,
        ObjectKind::Log => Ok(()),
        ObjectKind::CacheInfo => Err(conflict(
            "nix-cache-info is the server's own and differs from the one sent".to_owned(),
        )),
        ObjectKind::Nar => Ok(()),
        // Refused above (`upload_limit`).
        ObjectKind::GcRoot | ObjectKind::GcTrash | ObjectKind::Index | ObjectKind::Scratch => {
            Err(bad(&key.key, "objects of this kind are not taken"))
        }
    };
    if let Err(r) = checked {
        return r;
    }
    let n = body.len() as u64;
    match state
        .cache
        .objects()
        .put(&key.key, body, PutMode::Overwrite)
        .await
    {
        Ok(_) => {
            state
                .metrics
                .received_bytes
                .with_label_values(&[key.kind.label()])
                .inc_by(n);
            stored(&key.key, "stored")
        }
        Err(e) => store_failure(&key.key, &e),
    }
}

fn sign_narinfo(body: &[u8], secret: &crate::signing::SecretKey) -> Result<Bytes, String> {
    let mut info = NarInfo::parse_bytes(body).map_err(|e| format!("not a valid narinfo: {e}"))?;
    info.sign(secret)
        .map_err(|e| format!("it cannot be signed: {e}"))?;
    Ok(Bytes::from(info.to_string()))
}

/// `POST <key>?upload-url`: a presigned URL to `PUT` a large NAR straight into the bucket, so
/// its bytes never pass through this server (`cachecore push` asks for one per NAR it
/// streams). Only NARs named by a streaming push (`nar/<NarHash>-<unique>.nar<ext>`): their
/// name is new for each upload, so no one else's NAR can be overwritten, and the narinfo that
/// names one is taken only after its bytes were decompressed and hashed here. Answers 501 where
/// the store cannot sign URLs (or `direct_uploads` is off): the client then `PUT`s here.
pub(super) async fn upload_url(state: &AppState, key: &ObjectKey) -> Response {
    if !key.is_streamed_nar() {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "{}: only a NAR streamed by cachecore push (nar/<NarHash>-<unique>.nar<ext>) is uploaded straight to the bucket",
                key.key
            ),
        );
    }
    let signed = if state.config.direct_uploads {
        state
            .cache
            .objects()
            .presigned_put(&key.key, UPLOAD_URL_TTL)
            .await
    } else {
        Ok(None)
    };
    match signed {
        Ok(Some(url)) => text(StatusCode::OK, url.to_string()),
        Ok(None) => text(
            StatusCode::NOT_IMPLEMENTED,
            "this server takes the bytes of uploads itself: PUT them here",
        ),
        Err(e) => store_failure(&key.key, &e),
    }
}

async fn read_small(body: impl Stream<Item = io::Result<Bytes>>) -> Result<Bytes, BodyError> {
    let mut body = std::pin::pin!(body);
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => out.extend_from_slice(&c),
            Err(e) => {
                return Err(match e.into_inner().map(|b| b.downcast::<BodyError>()) {
                    Some(Ok(b)) => *b,
                    Some(Err(other)) => BodyError::Client(other.to_string()),
                    None => BodyError::Client("the body failed".to_owned()),
                })
            }
        }
    }
    Ok(Bytes::from(out))
}

/// A NAR: named after the sha256 of its bytes (Nix's `nar/<FileHash>.nar<ext>`), so the name
/// says what the bytes must be. It streams into the store while it is hashed, and the upload
/// completes only when the hash matches; a present NAR is not written again.
async fn put_nar(
    state: &AppState,
    key: &ObjectKey,
    req: Request,
    limit: u64,
    idle: Duration,
) -> Response {
    // A NAR named after its file's hash is checked as it arrives; one streamed by `cachecore
    // push` (named after its NarHash) when the narinfo naming it arrives, which decompresses
    // and hashes it whole before anything refers to it.
    let expected = match key.nar_name_hash() {
        Some(hash) => Some(hash),
        None if key.is_streamed_nar() => None,
        None => return bad(&key.key, "its name is not a sha256 hash"),
    };
    match state.cache.objects().head(&key.key).await {
        Ok(Some(_)) => return stored(&key.key, "already present (its name is its hash)"),
        Ok(None) => {}
        Err(e) => return store_failure(&key.key, &e),
    }
    let body = body_stream(req, limit, idle, expected);
    match state
        .cache
        .objects()
        .put_stream(&key.key, body, PutMode::Overwrite)
        .await
    {
        Ok(written) => {
            let n = written.size;
            state
                .metrics
                .received_bytes
                .with_label_values(&[key.kind.label()])
                .inc_by(n);
            stored(&key.key, "stored")
        }
        Err(e) => match body_error(&e) {
            Some(b) => b.response(&key.key),
            None => store_failure(&key.key, &e),
        },
    }
}

/// A narinfo is checked as a hostile cache's would be, before it becomes visible: it names the
/// path of its key; its NAR is in the cache and matches FileSize, FileHash, NarSize and NarHash;
/// the narinfos of its references are present.
async fn check_narinfo(state: &AppState, key: &ObjectKey, body: &[u8]) -> Result<(), Response> {
    let k = &key.key;
    let info =
        NarInfo::parse_bytes(body).map_err(|e| bad(k, format_args!("not a valid narinfo: {e}")))?;
    let hash = key.hash_part().unwrap_or_default();
    if info.store_path.hash_part() != hash {
        return Err(bad(
            k,
            format_args!(
                "its StorePath {} is not the path of the key",
                info.store_dir.full_path(&info.store_path)
            ),
        ));
    }
    if info.store_dir != state.store_dir {
        return Err(bad(
            k,
            format_args!(
                "its store directory is {}, this cache's is {}",
                info.store_dir.as_str(),
                state.store_dir.as_str()
            ),
        ));
    }
    let nar = ObjectKey::parse(info.url.clone())
        .ok()
        .filter(|n| n.kind == ObjectKind::Nar)
        .ok_or_else(|| {
            bad(
                k,
                format_args!(
                    "its URL {:?} is not a NAR of this cache (nar/<hash>.nar<ext>)",
                    info.url
                ),
            )
        })?;
    let method = Compression::from_name(info.compression_or_default()).map_err(|e| bad(k, e))?;
    if nar.nar_extension() != Some(method.extension()) {
        return Err(bad(
            k,
            format_args!(
                "its URL {} does not end in .nar{} as Compression: {method} says",
                info.url,
                method.extension()
            ),
        ));
    }
    let (Some(file_hash), Some(file_size)) = (&info.file_hash, info.file_size) else {
        return Err(bad(k, "it has no FileHash or no FileSize"));
    };
    if file_hash.algo() != HashAlgo::Sha256 || info.nar_hash.algo() != HashAlgo::Sha256 {
        return Err(bad(k, "its FileHash and NarHash must be sha256"));
    }
    match state.cache.objects().head(&info.url).await {
        Ok(Some(meta)) if meta.size == file_size => {}
        Ok(Some(meta)) => {
            return Err(bad(
                k,
                format_args!(
                    "its FileSize is {file_size}, but {} is {} bytes",
                    info.url, meta.size
                ),
            ))
        }
        Ok(None) => {
            return Err(conflict(format!(
                "{k} was not stored: its NAR {} is not in the cache (upload it first)",
                info.url
            )))
        }
        Err(e) => return Err(store_failure(&info.url, &e)),
    }
    for r in info.references.iter().filter(|r| **r != info.store_path) {
        match state.cache.objects().head(&layout::narinfo(&r.hash_part())).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(conflict(format!(
                    "{k} was not stored: its reference {} is not in the cache (upload references first)",
                    info.store_dir.full_path(r)
                )))
            }
            Err(e) => return Err(store_failure(&layout::narinfo(&r.hash_part()), &e)),
        }
    }
    // The whole NAR, decompressed and hashed: FileHash, FileSize, NarHash, NarSize.
    crate::ops::browse::with_nar(&state.cache, &info, |_| Ok(()))
        .await
        .map_err(|e| bad(k, format_args!("it does not match its NAR: {e}")))
}

async fn check_realisation(state: &AppState, key: &ObjectKey, body: &[u8]) -> Result<(), Response> {
    let k = &key.key;
    let text_body = std::str::from_utf8(body).map_err(|_| bad(k, "not UTF-8"))?;
    let r = Realisation::parse(text_body)
        .map_err(|e| bad(k, format_args!("not a valid realisation: {e}")))?;
    if Some(&r.id) != key.drv_output().as_ref() {
        return Err(bad(
            k,
            format_args!("its id {} is not the one of the key", r.id),
        ));
    }
    let out: &StorePath = &r.out_path;
    match state
        .cache
        .objects()
        .head(&layout::narinfo(&out.hash_part()))
        .await
    {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(conflict(format!(
            "{k} was not stored: its output {} is not in the cache (upload it first)",
            state.store_dir.full_path(out)
        ))),
        Err(e) => Err(store_failure(k, &e)),
    }
}

//! `PUT` of cache objects, as `nix copy --to http://…` sends them: the listing, the NAR, then
//! the narinfo (Nix uploads a path only after its references; `cachecore push` sends the
//! listing beside the NAR). Nothing is visible before it was checked, and nothing present is
//! ever replaced by something different:
//!
//! - a narinfo is taken only when its NAR is present and hashes to what it says;
//! - a NAR is written only if its key is still free when its last byte has arrived, checked
//!   under the lock the narinfo naming it is checked under, so an upload that started before
//!   the narinfo and ends after it loses;
//! - a listing is taken only when it describes the path's NAR. One that arrives before its
//!   narinfo is held in memory ([`HeldListings`]), not stored, and stored when the narinfo
//!   arrives if it matches the NAR then — so a listing planted for a path that is not there
//!   yet never blocks the path's upload.

use std::collections::VecDeque;
use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::header::CONTENT_LENGTH;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use tokio::sync::MutexGuard;

use super::metrics::InGauge;
use super::{store_failure, text, AppState, Config, Rights};
use crate::compression::Compression;
use crate::gc::PushGuard;
use crate::hash::{Hash, HashAlgo, Hasher};
use crate::nar::Listing;
use crate::narinfo::NarInfo;
use crate::ops::OpError;
use crate::realisation::Realisation;
use crate::store::layout::{self, ObjectKey, ObjectKind};
use crate::store::objects::WriteMode;
use crate::store::{StoreError, MAX_LISTING_BYTES};
use crate::store_path::StorePath;

/// How long a URL for a direct upload to the bucket stays valid.
const UPLOAD_URL_TTL: Duration = Duration::from_secs(3600);

/// Largest narinfo accepted (a path with thousands of references stays far below).
const MAX_NARINFO: u64 = 1 << 20;

/// Listings held for paths whose narinfo has not arrived: how many per path (a hostile
/// uploader's guesses cannot crowd out the real one), bytes in all, and for how long.
const HELD_PER_PATH: usize = 4;
const HELD_BYTES: usize = 128 << 20;
const HELD_FOR: Duration = Duration::from_secs(3600);

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
    /// The key was taken while the body arrived.
    #[error("an upload of it finished first, and a NAR is never written twice")]
    Present,
}

impl BodyError {
    fn response(&self, key: &str) -> Response {
        let status = match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Idle(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::Client(_) | BodyError::Corrupt(_) => StatusCode::BAD_REQUEST,
            BodyError::Present => StatusCode::CONFLICT,
        };
        if matches!(self, BodyError::Client(_) | BodyError::Idle(_)) {
            // The client went away or stalled mid-body: no one reads the answer, so say it here.
            tracing::warn!(key, reason = %self, "upload abandoned mid-body; nothing was stored");
        }
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

/// `answer`, given once the request's body has been read to its end (bounded by `limit` and
/// `idle`) and thrown away. Answered while the client still sends, the connection would be
/// closed under it: the client sees a failed send instead of the answer, and a request it
/// already queued on that connection fails too (a push resumed after a kill re-sends NARs
/// that are present). Only for uploads whose sender may push: a refusal is answered at once.
async fn after_body(req: Request, limit: u64, idle: Duration, answer: Response) -> Response {
    let mut body = std::pin::pin!(body_stream(req, limit, idle, None));
    while let Some(Ok(_)) = body.next().await {}
    answer
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
            // Readers refuse larger ones.
            ObjectKind::FrameDigests => {
                Some(crate::access::MAX_FRAME_DIGESTS_BYTES.min(config.max_small_upload))
            }
            ObjectKind::NarInfo => Some(MAX_NARINFO.min(config.max_small_upload)),
            // Readers refuse larger listings.
            ObjectKind::Listing => Some(MAX_LISTING_BYTES.min(config.max_small_upload)),
            ObjectKind::CacheInfo | ObjectKind::Log | ObjectKind::Realisation => {
                Some(config.max_small_upload)
            }
            // Never served (`keys::is_served`), never taken.
            ObjectKind::GcRoot
            | ObjectKind::GcTrash
            | ObjectKind::Index
            | ObjectKind::GcLease
            | ObjectKind::Scratch => None,
        }
    }
}

pub(super) async fn put(state: &AppState, key: &ObjectKey, req: Request) -> Response {
    let Some(limit) = key.kind.upload_limit(&state.config) else {
        return bad(&key.key, "objects of this kind are not taken");
    };
    // Set by the `write` group's layer; a router used without it is the write token's.
    let rights = req
        .extensions()
        .get::<Rights>()
        .cloned()
        .unwrap_or(Rights::ALL);
    let may_sign_this = rights.sign && key.kind == ObjectKind::NarInfo;
    if !(rights.push || may_sign_this) {
        return cannot_push(&rights, &key.key);
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return BodyError::TooLarge(limit).response(&key.key);
    }
    let permit = {
        let _waiting = InGauge::start(&state.metrics.uploads_waiting);
        state.uploads.acquire().await
    };
    let Ok(_permit) = permit else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        );
    };
    let _running = InGauge::start(&state.metrics.uploads_running);
    let idle = state.config.upload_idle_timeout;
    let sent_encoding = match sent_encoding(&req) {
        Ok(e) => e,
        Err(why) => return bad(&key.key, why),
    };
    if key.kind == ObjectKind::Nar {
        if let Some(method) = sent_encoding {
            return bad(
                &key.key,
                format_args!("it was sent with Content-Encoding {method}, which NARs do not take (their compression is in their name)"),
            );
        }
        return put_nar(state, key, req, limit, idle).await;
    }
    let mut body = match read_small(body_stream(req, limit, idle, None)).await {
        Ok(b) => b,
        Err(e) => return e.response(&key.key),
    };
    // Sent compressed (`nix copy --to 'http://…?narinfo-compression=zstd'`): checked decoded,
    // stored encoded.
    if let Some(method) = sent_encoding {
        body = match crate::store::encoding::decode(
            state.cache.url(),
            &key.key,
            method.name(),
            body,
            limit,
        ) {
            Ok(plain) => plain,
            Err(e) => return bad(&key.key, e),
        };
    }
    let store_encoding = sent_encoding
        .or_else(|| key.kind.stored_encoding(state.cache.settings()))
        .filter(|_| state.cache.objects().keeps_encodings())
        .unwrap_or(Compression::None);
    // With the server's key, the narinfo is stored signed by it (replacing a signature under
    // its name), so uploaders never hold the signing key.
    if let (ObjectKind::NarInfo, Some(secret)) = (key.kind, &state.config.signing_key) {
        body = match sign_narinfo(&body, secret) {
            Ok(signed) => signed,
            Err(why) => return bad(&key.key, why),
        };
    }
    // A listing is checked under its narinfo's lock (the narinfo takes held listings under
    // it); a narinfo under its NAR's too (a NAR upload ending meanwhile waits, then finds its
    // key taken).
    let (lock, nar_lock) = match key.kind {
        ObjectKind::Listing => (layout::narinfo(key.hash_part().unwrap_or_default()), None),
        ObjectKind::NarInfo => (
            key.key.clone(),
            NarInfo::parse_bytes(&body).ok().map(|info| info.url),
        ),
        _ => (key.key.clone(), None),
    };
    let _write = write_locks(state, &lock, nar_lock.as_deref()).await;
    // Present already: the same bytes are a harmless repeat (Nix re-uploads when copies run in
    // parallel); anything else would replace what clients may already have read.
    match state.cache.objects().get_bytes(&key.key).await {
        Ok(Some(existing)) if existing == body => {
            return stored(&key.key, "identical to the stored object")
        }
        Ok(Some(existing)) => {
            // A narinfo that differs only by more signatures gets them added (`cachecore
            // sign`); nothing it had is taken away.
            let added = if key.kind == ObjectKind::NarInfo {
                with_signatures_added(&existing, &body, &state.config.public_keys)
            } else {
                Added::Other
            };
            let merged = match added {
                Added::Signatures(merged) => merged,
                Added::Unannounced(name) => {
                    return conflict(format!(
                        "{} is present; only signatures can be added to it, by a key this server announces (serve --public-key KEY), and the one by {name:?} is not: nothing was changed",
                        key.key
                    ))
                }
                Added::Other => {
                    return conflict(format!(
                        "{} is present with other contents; objects of a cache are never replaced",
                        key.key
                    ))
                }
            };
            if !rights.sign {
                return text(
                    StatusCode::FORBIDDEN,
                    format!(
                        "{} may {}, not sign: {} was left as it is",
                        rights.who(),
                        rights.may(),
                        key.key
                    ),
                );
            }
            return match state
                .cache
                .objects()
                .put_encoded(&key.key, merged, WriteMode::Overwrite, store_encoding)
                .await
            {
                Ok(_) => stored(&key.key, "its signatures were added"),
                Err(e) => store_failure(&key.key, &e),
            };
        }
        Ok(None) if !rights.push => return cannot_push(&rights, &key.key),
        Ok(None) => {}
        Err(e) => return store_failure(&key.key, &e),
    }
    // The push rule (see `gc::lease`): a lease on the path and its references before they are
    // found present, released once the narinfo is stored (or refused).
    let guard = match key.kind {
        ObjectKind::NarInfo => match NarInfo::parse_bytes(&body) {
            Ok(info) => {
                let mut paths = info.references.clone();
                paths.push(info.store_path.clone());
                let begun = PushGuard::begin_cached(
                    &state.cache,
                    "serve",
                    &paths,
                    std::time::SystemTime::now(),
                    crate::gc::lease::LEASE_TTL,
                    &state.tombstones,
                )
                .await;
                match begun {
                    Ok(g) => Some(g),
                    Err(crate::gc::GuardError::Store(e)) => return store_failure(&key.key, &e),
                    Err(e) => return conflict(format!("{} was not stored: {e}", key.key)),
                }
            }
            Err(_) => None, // refused by check_narinfo below
        },
        _ => None,
    };
    let stored = put_checked(state, key, body, store_encoding, guard.as_ref()).await;
    if let Some(g) = guard {
        g.end().await;
    }
    stored
}

/// The checks of [`put`] for an object of a kind it takes, then the write.
async fn put_checked(
    state: &AppState,
    key: &ObjectKey,
    body: Bytes,
    store_encoding: Compression,
    guard: Option<&PushGuard>,
) -> Response {
    let mut listing = None;
    let checked = match key.kind {
        ObjectKind::NarInfo => check_narinfo(state, key, &body, guard)
            .await
            .map(|matched| listing = matched),
        ObjectKind::Listing => match check_listing(state, key, &body, store_encoding).await {
            Ok(Taken::Now) => Ok(()),
            Ok(Taken::Held) => {
                return stored(
                    &key.key,
                    "held until its narinfo arrives; stored then if it describes the NAR",
                )
            }
            Err(r) => Err(r),
        },
        ObjectKind::Realisation => check_realisation(state, key, &body).await,
        ObjectKind::Log => Ok(()),
        ObjectKind::CacheInfo => Err(conflict(
            "nix-cache-info is the server's own and differs from the one sent".to_owned(),
        )),
        ObjectKind::Nar => Ok(()),
        // Named by their sha256: taken only when they hash to their name.
        ObjectKind::FrameDigests => {
            let named = layout::frame_digests_hash(&key.key);
            let actual = Hash::digest(HashAlgo::Sha256, &body);
            if named.as_ref() == Some(&actual) {
                Ok(())
            } else {
                Err(bad(&key.key, "its bytes do not hash to its name"))
            }
        }
        // Refused above (`upload_limit`).
        ObjectKind::GcRoot
        | ObjectKind::GcTrash
        | ObjectKind::Index
        | ObjectKind::GcLease
        | ObjectKind::Scratch => Err(bad(&key.key, "objects of this kind are not taken")),
    };
    if let Err(r) = checked {
        return r;
    }
    let n = body.len() as u64;
    match state
        .cache
        .objects()
        .put_encoded(&key.key, body, WriteMode::Overwrite, store_encoding)
        .await
    {
        Ok(_) => {
            state
                .metrics
                .received_bytes
                .with_label_values(&[key.kind.label()])
                .inc_by(n);
            if key.kind == ObjectKind::NarInfo {
                publish_held_listing(state, key, listing).await;
                append_index(state, key).await;
            }
            stored(&key.key, "stored")
        }
        Err(e) => store_failure(&key.key, &e),
    }
}

/// The compression an upload's `Content-Encoding` names, `None` for a plain one.
fn sent_encoding(req: &Request) -> Result<Option<Compression>, String> {
    let Some(value) = req.headers().get(axum::http::header::CONTENT_ENCODING) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| "its Content-Encoding is not text".to_owned())?;
    crate::store::encoding::method_of(value)
}

impl ObjectKind {
    /// The encoding the store's URL asks objects of this kind to be stored with
    /// (`narinfo-compression=`, `ls-compression=`, `log-compression=`).
    fn stored_encoding(self, settings: &crate::store::StoreSettings) -> Option<Compression> {
        match self {
            ObjectKind::NarInfo => settings.narinfo_compression,
            ObjectKind::Listing => settings.ls_compression,
            ObjectKind::Log => settings.log_compression,
            ObjectKind::Nar
            | ObjectKind::FrameDigests
            | ObjectKind::CacheInfo
            | ObjectKind::Realisation
            | ObjectKind::GcRoot
            | ObjectKind::GcTrash
            | ObjectKind::Index
            | ObjectKind::GcLease
            | ObjectKind::Scratch => None,
        }
    }
}

/// Appends the push index entry of the narinfo just stored at `key` (a failure costs only the
/// entry: readers fall back to the narinfo).
async fn append_index(state: &AppState, key: &ObjectKey) {
    let hash = key.hash_part().unwrap_or_default();
    let pushed = crate::gc::roots::unix_secs(std::time::SystemTime::now());
    let appended = match state.cache.narinfo_by_hash(hash).await {
        Ok(Some(info)) => state
            .cache
            .append_index(&[crate::store::IndexEntry::from_narinfo(&info, pushed)])
            .await
            .map(drop),
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = appended {
        tracing::error!(key = key.key, error = %e, "cannot append the push index entry of a narinfo");
    }
}

/// The write locks of `a` and of `b` (one lock when both keys fall on it), always taken in the
/// same order, so two uploads never each hold the lock the other waits for.
async fn write_locks<'s>(
    state: &'s AppState,
    a: &str,
    b: Option<&str>,
) -> (MutexGuard<'s, ()>, Option<MutexGuard<'s, ()>>) {
    let first = state.write_lock(a);
    let Some(second) = b
        .map(|b| state.write_lock(b))
        .filter(|l| !std::ptr::eq(*l, first))
    else {
        return (first.lock().await, None);
    };
    let (x, y) = if std::ptr::from_ref(first) < std::ptr::from_ref(second) {
        (first, second)
    } else {
        (second, first)
    };
    let x = x.lock().await;
    (x, Some(y.lock().await))
}

/// A refusal for a token that may not push `key` (it may only sign narinfos present, or read).
fn cannot_push(rights: &Rights, key: &str) -> Response {
    let only = if rights.sign {
        " (it may add signatures to narinfos already in the cache)"
    } else {
        ""
    };
    text(
        StatusCode::FORBIDDEN,
        format!(
            "{} may {}, not push: {key} was not stored{only}",
            rights.who(),
            rights.may()
        ),
    )
}

/// What a narinfo sent where one is present adds to it.
enum Added {
    /// Only signatures, each by a key this server announces: the narinfo with them.
    Signatures(Bytes),
    /// Only signatures, but this one is by no key the server announces.
    Unannounced(String),
    /// Something else differs (or either does not parse).
    Other,
}

/// `existing` with the signatures of `sent` it lacks — `Sig`s, and `FramesSig`s over its frame
/// digests (see [`crate::access::frame_digests`]) — when the two narinfos differ in nothing
/// else and each signature added verifies with one of `announced` (the keys the server shows
/// for this cache: a token holder cannot add a signature no one can check, nor change anything
/// else).
fn with_signatures_added(
    existing: &[u8],
    sent: &[u8],
    announced: &[crate::signing::PublicKey],
) -> Added {
    use crate::access::frame_digests::{FramesClaim, FRAMES_SIG_FIELD};
    let (Ok(mut merged), Ok(sent)) = (NarInfo::parse_bytes(existing), NarInfo::parse_bytes(sent))
    else {
        return Added::Other;
    };
    let unsigned = |i: &NarInfo| {
        let mut i = i.clone();
        i.signatures.clear();
        i.extra.retain(|(k, _)| k != FRAMES_SIG_FIELD);
        i.to_string()
    };
    if unsigned(&merged) != unsigned(&sent) {
        return Added::Other;
    }
    let unannounced = |sig: &str| {
        let name = sig.split_once(':').map_or("", |(n, _)| n);
        Added::Unannounced(crate::untrusted::excerpt(name))
    };
    let valid: Vec<String> = sent
        .valid_signatures(announced)
        .map(|s| s.to_string())
        .collect();
    for sig in &sent.signatures {
        if merged.signatures.contains(sig) {
            continue;
        }
        if !valid.contains(sig) {
            return unannounced(sig);
        }
        merged.signatures.push(sig.clone());
    }
    // The claim is the same in both (all but signatures are equal).
    let message = FramesClaim::of(&sent).map(|c| c.message(&sent));
    for (_, sig) in sent.extra.iter().filter(|(k, _)| k == FRAMES_SIG_FIELD) {
        let present = merged
            .extra
            .iter()
            .any(|(k, v)| k == FRAMES_SIG_FIELD && v == sig);
        if present {
            continue;
        }
        let verifies = match (&message, crate::signing::Signature::parse(sig)) {
            (Some(message), Ok(parsed)) => announced
                .iter()
                .any(|k| k.verify(message.as_bytes(), &parsed)),
            _ => false,
        };
        if !verifies {
            return unannounced(sig);
        }
        merged
            .extra
            .push((FRAMES_SIG_FIELD.to_owned(), sig.clone()));
    }
    Added::Signatures(Bytes::from(merged.to_string()))
}

fn sign_narinfo(body: &[u8], secret: &crate::signing::SecretKey) -> Result<Bytes, String> {
    let mut info = NarInfo::parse_bytes(body).map_err(|e| format!("not a valid narinfo: {e}"))?;
    info.sign(secret)
        .map_err(|e| format!("it cannot be signed: {e}"))?;
    // Its frame digests too (what they name is checked when uploaded: a `.frames` object
    // must hash to its name, and the NAR to the NarHash).
    if let Some(claim) = crate::access::FramesClaim::of(&info) {
        claim.write(&mut info, &[secret]);
    }
    Ok(Bytes::from(info.to_string()))
}

/// `POST <key>?upload-url`: a presigned URL to `PUT` a large NAR straight into the bucket, so
/// its bytes never pass through this server (`cachecore push` asks for one per NAR it
/// streams). Only NARs named by a streaming push (`nar/<NarHash>-<unique>.nar<ext>`): their
/// name is new for each upload, so no one else's NAR can be overwritten, and the narinfo that
/// names one is taken only after its bytes were decompressed and hashed here. Answers 501 where
/// the store cannot sign URLs (or `direct_uploads` is off): the client then `PUT`s here.
///
/// A key that is present gets no URL (409). A URL handed out stays valid for
/// [`UPLOAD_URL_TTL`], and the bucket, not this server, takes its `PUT`s, outside the write
/// lock that keeps a `PUT` here from replacing a NAR a narinfo names. So the URL does not name
/// the NAR's key but [`layout::direct_upload`]'s: the narinfo naming the NAR moves it into
/// place under that lock ([`take_direct_upload`]), and whatever the URL writes afterwards lands
/// where nothing reads it.
pub(super) async fn upload_url(state: &AppState, key: &ObjectKey, rights: &Rights) -> Response {
    if !rights.push {
        return cannot_push(rights, &key.key);
    }
    if !key.is_streamed_nar() {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "{}: only a NAR streamed by cachecore push (nar/<NarHash>-<unique>.nar<ext>) is uploaded straight to the bucket",
                key.key
            ),
        );
    }
    match state.cache.objects().head(&key.key).await {
        Ok(Some(_)) => return nar_present(key),
        Ok(None) => {}
        Err(e) => return store_failure(&key.key, &e),
    }
    let signed = if state.config.direct_uploads {
        state
            .cache
            .objects()
            .presigned_put(&layout::direct_upload(&key.key), UPLOAD_URL_TTL)
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
        Ok(Some(_)) => return after_body(req, limit, idle, nar_present(key)).await,
        Ok(None) => {}
        Err(e) => return store_failure(&key.key, &e),
    }
    // The key is checked again once the last byte has arrived, under its write lock, and the
    // lock is held until the object is written: a narinfo naming this key is checked under the
    // same lock, so either it sees these bytes or this upload sees its key taken and writes
    // nothing (a create-only write that every store can do, bucket or not).
    let held_lock: Mutex<Option<MutexGuard<'_, ()>>> = Mutex::new(None);
    let last_check = futures::stream::once(async {
        let guard = state.write_lock(&key.key).lock().await;
        let present = state.cache.objects().head(&key.key).await;
        *held_lock.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
        match present {
            Ok(None) => None,
            Ok(Some(_)) => Some(Err(io::Error::other(BodyError::Present))),
            Err(e) => Some(Err(io::Error::other(e))),
        }
    })
    .filter_map(std::future::ready);
    let body = body_stream(req, limit, idle, expected).chain(last_check);
    let written = state
        .cache
        .objects()
        .put_stream(&key.key, body, WriteMode::Overwrite)
        .await;
    drop(held_lock);
    match written {
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
            Some(BodyError::Present) => nar_present(key),
            Some(b) => b.response(&key.key),
            None => store_failure(&key.key, &e),
        },
    }
}

/// The answer to an upload of a NAR that is present: for one named after its file's hash the
/// bytes are the same (or their hash would not match), a harmless repeat; one streamed by
/// `cachecore push` has a new name for each upload, so another upload wrote it, and the key
/// may be named by a narinfo already.
fn nar_present(key: &ObjectKey) -> Response {
    if key.nar_name_hash().is_some() {
        stored(&key.key, "already present (its name is its hash)")
    } else {
        conflict(format!(
            "{} was not stored: it is present, and a NAR streamed under its own name is written once",
            key.key
        ))
    }
}

/// A narinfo is checked as a hostile cache's would be, before it becomes visible: it names the
/// path of its key; its NAR is in the cache and matches FileSize, FileHash, NarSize and NarHash;
/// the narinfos of its references are present.
///
/// Returns the first listing held for the path ([`HeldListings`]) that describes its NAR: the
/// first is checked while the NAR is read for the narinfo, others (a hostile uploader's
/// guesses) each in a read of their own.
async fn check_narinfo(
    state: &AppState,
    key: &ObjectKey,
    body: &[u8],
    guard: Option<&PushGuard>,
) -> Result<Option<Bytes>, Response> {
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
    let moved = nar.is_streamed_nar() && take_direct_upload(state, &info.url).await?;
    let checked = check_nar(state, k, hash, &info, file_size, guard).await;
    if checked.is_err() && moved {
        // Back to where the URL wrote it: the key stays free for a NAR that checks out.
        if let Err(e) = state
            .cache
            .objects()
            .rename(&info.url, &layout::direct_upload(&info.url))
            .await
        {
            tracing::error!(key = %info.url, error = %e, "cannot move back a NAR whose narinfo was refused");
        }
    }
    checked
}

/// The rest of [`check_narinfo`]: the NAR `info` names is present, of its FileSize, hashes to
/// what `info` says, its references are present; and the first held listing that matches.
async fn check_nar(
    state: &AppState,
    k: &str,
    hash: &str,
    info: &NarInfo,
    file_size: u64,
    guard: Option<&PushGuard>,
) -> Result<Option<Bytes>, Response> {
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
            // Condemned by a GC tombstone: written again (kept by every GC), or refused if a
            // GC deleted it meanwhile.
            Ok(Some(meta)) if guard.is_some_and(|g| g.is_condemned(r, meta.last_modified)) => {
                let rescued = match guard {
                    Some(g) => g.rescue(r).await,
                    None => Ok(true),
                };
                match rescued {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(conflict(format!(
                            "{k} was not stored: its reference {} was deleted by a GC (upload it again first)",
                            info.store_dir.full_path(r)
                        )))
                    }
                    Err(e) => return Err(store_failure(&layout::narinfo(&r.hash_part()), &e)),
                }
            }
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
    // The whole NAR, decompressed and hashed: FileHash, FileSize, NarHash, NarSize; and the
    // first held listing checked against it on the way.
    let mut held = state
        .held_listings
        .held(hash)
        .into_iter()
        .filter_map(|json| Listing::parse(&json).ok().map(|listing| (json, listing)));
    let first = held.next();
    let full = state.store_dir.full_path(&info.store_path);
    let name = full.clone();
    let first_matched = crate::ops::browse::with_nar(&state.cache, &info, move |nar| {
        let Some((json, listing)) = first else {
            return Ok(None);
        };
        let matched = listing
            .check_nar(nar)
            .map_err(|source| OpError::Nar { path: name, source })?;
        Ok(Some((json, matched)))
    })
    .await
    .map_err(|e| bad(k, format_args!("it does not match its NAR: {e}")))?;
    let Some((json, matched)) = first_matched else {
        return Ok(None);
    };
    let dropped = |m: &dyn std::fmt::Display| {
        tracing::warn!(
            key = %layout::listing(hash),
            "a listing held for {full} is dropped: {m}"
        );
    };
    match matched {
        Ok(()) => return Ok(Some(json)),
        Err(m) => dropped(&m),
    }
    for (json, listing) in held {
        match crate::ops::browse::check_listing(&state.cache, &info, listing).await {
            Ok(Ok(())) => return Ok(Some(json)),
            Ok(Err(m)) => dropped(&m),
            // The NAR checked out a moment ago: this failure is the store's, and costs only
            // the listing.
            Err(e) => {
                dropped(&e);
                return Ok(None);
            }
        }
    }
    Ok(None)
}

/// A streamed NAR sent by a presigned URL ([`upload_url`]) is moved to its key when a narinfo
/// names it and the key is free. Called under the NAR's write lock; the narinfo's checks then
/// read the NAR at its key, which only this server writes: what the URL writes after the move
/// is never read.
/// Returns whether it moved one (the narinfo's checks, if they fail, move it back).
async fn take_direct_upload(state: &AppState, nar_key: &str) -> Result<bool, Response> {
    let objects = state.cache.objects();
    let direct = layout::direct_upload(nar_key);
    match objects.head(nar_key).await {
        Ok(Some(_)) => return Ok(false),
        Ok(None) => {}
        Err(e) => return Err(store_failure(nar_key, &e)),
    }
    match objects.head(&direct).await {
        Ok(Some(_)) => objects
            .rename(&direct, nar_key)
            .await
            .map(|()| true)
            .map_err(|e| store_failure(nar_key, &e)),
        Ok(None) => Ok(false),
        Err(e) => Err(store_failure(&direct, &e)),
    }
}

/// What became of a listing that describes its NAR, or may.
enum Taken {
    /// Its path's narinfo is present and it describes the NAR: store it.
    Now,
    /// Its path has no narinfo yet: held until it arrives ([`HeldListings`]).
    Held,
}

/// A listing is taken only if it describes its path's NAR, read whole (streaming) and checked
/// against the narinfo as it goes. Without a narinfo there is no NAR to check it against: it is
/// held, stored nowhere, so a listing planted for a path before it is pushed neither shows nor
/// blocks the push.
async fn check_listing(
    state: &AppState,
    key: &ObjectKey,
    body: &Bytes,
    encoding: Compression,
) -> Result<Taken, Response> {
    let k = &key.key;
    let listing =
        Listing::parse(body).map_err(|e| bad(k, format_args!("not a valid listing: {e}")))?;
    let hash = key.hash_part().unwrap_or_default();
    let info = match state.cache.narinfo_by_hash(hash).await {
        Ok(Some(info)) => info,
        Ok(None) => {
            state.held_listings.hold(hash, body.clone(), encoding);
            return Ok(Taken::Held);
        }
        Err(e) => return Err(store_failure(&layout::narinfo(hash), &e)),
    };
    let full = state.store_dir.full_path(&info.store_path);
    match crate::ops::browse::check_listing(&state.cache, &info, listing).await {
        Ok(Ok(())) => Ok(Taken::Now),
        Ok(Err(m)) => Err(bad(
            k,
            format_args!("it does not describe the NAR of {full}: {m}"),
        )),
        Err(e) => {
            let status = super::status_of(e.kind());
            if status.is_server_error() {
                tracing::error!(key = k, error = %e, "cannot check a listing against its NAR");
            }
            Err(text(
                status,
                format!("{k} was not stored: the NAR of {full} cannot be checked: {e}"),
            ))
        }
    }
}

/// Stores the listing held for a path whose narinfo was just stored, if one describes its NAR
/// (`json`), and forgets the others. A failure costs only the listing: the narinfo is stored.
async fn publish_held_listing(state: &AppState, key: &ObjectKey, json: Option<Bytes>) {
    let hash = key.hash_part().unwrap_or_default();
    let encoding = json.as_ref().map_or(Compression::None, |j| {
        state.held_listings.encoding_of(hash, j)
    });
    state.held_listings.forget(hash);
    let Some(json) = json else { return };
    let ls = layout::listing(hash);
    // Only a listing written into the store by other means can be there: it stays.
    let written = match state.cache.objects().head(&ls).await {
        Ok(Some(_)) => return,
        Ok(None) => {
            state
                .cache
                .objects()
                .put_encoded(&ls, json, WriteMode::Overwrite, encoding)
                .await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        tracing::error!(key = ls, error = %e, "cannot store a listing held for its narinfo");
    }
}

/// Listings uploaded before their path's narinfo — as `nix copy` (listing, NAR, narinfo) and
/// `cachecore push` (listing beside the NAR) send them — kept in memory, not in the store,
/// until the narinfo arrives and one can be checked against the NAR. Bounded: at most
/// [`HELD_PER_PATH`] per path, [`HELD_BYTES`] in all, each for [`HELD_FOR`]; past a bound the
/// oldest go (a listing lost costs `ls` and `/serve/` a read of the NAR, nothing more).
#[derive(Debug, Default)]
pub(super) struct HeldListings {
    inner: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    /// (hash part, when, JSON, the encoding to store it with), oldest first.
    queue: VecDeque<(String, Instant, Bytes, Compression)>,
    bytes: usize,
}

impl Held {
    fn remove(&mut self, i: usize) {
        if let Some((_, _, json, _)) = self.queue.remove(i) {
            self.bytes -= json.len();
        }
    }
}

impl HeldListings {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hold(&self, hash: &str, json: Bytes, encoding: Compression) {
        let mut held = self.lock();
        let now = Instant::now();
        if let Some(i) = held
            .queue
            .iter()
            .position(|(h, _, j, _)| h == hash && *j == json)
        {
            held.remove(i);
        } else {
            let same = held.queue.iter().filter(|(h, ..)| h == hash).count();
            if same >= HELD_PER_PATH {
                if let Some(i) = held.queue.iter().position(|(h, ..)| h == hash) {
                    held.remove(i);
                }
            }
        }
        held.bytes += json.len();
        held.queue.push_back((hash.to_owned(), now, json, encoding));
        while let Some((h, since, ..)) = held.queue.front() {
            let expired = now.duration_since(*since) > HELD_FOR;
            if !expired && held.bytes <= HELD_BYTES {
                break;
            }
            if !expired {
                tracing::warn!(
                    key = %layout::listing(h),
                    "a listing held for its narinfo is dropped: listings held exceed {HELD_BYTES} bytes"
                );
            }
            held.remove(0);
        }
    }

    /// The listings held for `hash`, newest first.
    fn held(&self, hash: &str) -> Vec<Bytes> {
        let held = self.lock();
        held.queue
            .iter()
            .rev()
            .filter(|(h, since, ..)| h == hash && since.elapsed() <= HELD_FOR)
            .map(|(_, _, json, _)| json.clone())
            .collect()
    }

    /// The encoding the held listing `json` of `hash` was sent with (and is stored with).
    fn encoding_of(&self, hash: &str, json: &Bytes) -> Compression {
        let held = self.lock();
        held.queue
            .iter()
            .find(|(h, _, j, _)| h == hash && j == json)
            .map_or(Compression::None, |(.., e)| *e)
    }

    fn forget(&self, hash: &str) {
        let mut held = self.lock();
        while let Some(i) = held.queue.iter().position(|(h, ..)| h == hash) {
            held.remove(i);
        }
    }
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

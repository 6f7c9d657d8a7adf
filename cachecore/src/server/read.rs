//! `GET` and `HEAD` of cache objects.

use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, LAST_MODIFIED,
    LOCATION,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::Stream;
use prometheus::IntCounter;

use super::conditional::{
    etag, is_conditional, last_modified, not_modified, range_applies, requested_range, resolve,
};
use super::{store_failure, text, AppState};
use crate::store::layout::{ObjectKey, ObjectKind};
use crate::store::objects::{Object, ObjectInfo, ReadRange};
use crate::store::StoreError;

/// NARs never change under their name (it is their hash).
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Narinfos, listings, logs and realisations are written once, but `push --repair` may fix a
/// broken one: cached for a while, not forever.
const SHORT: &str = "public, max-age=300";

impl ObjectKind {
    /// How long a client or proxy may keep an object of this kind (`Cache-Control`).
    fn cache_control(self) -> &'static str {
        match self {
            // Named by their own hash.
            ObjectKind::Nar | ObjectKind::FrameDigests => IMMUTABLE,
            ObjectKind::CacheInfo
            | ObjectKind::NarInfo
            | ObjectKind::Listing
            | ObjectKind::Log
            | ObjectKind::Realisation => SHORT,
            // Never served (`keys::is_served`).
            ObjectKind::GcRoot
            | ObjectKind::GcTrash
            | ObjectKind::Index
            | ObjectKind::GcLease
            | ObjectKind::Scratch => "no-store",
        }
    }
}

impl ObjectKind {
    /// Whether objects of this kind may be stored with a `Content-Encoding`
    /// ([`crate::store::encoding`]), and the most bytes one is decoded to for a client that
    /// does not accept its encoding.
    fn decoded_limit(self) -> Option<u64> {
        match self {
            ObjectKind::NarInfo => Some(crate::narinfo::MAX_NARINFO_BYTES),
            ObjectKind::Listing => Some(crate::store::MAX_LISTING_BYTES),
            ObjectKind::Realisation => Some(crate::store::MAX_REALISATION_BYTES),
            ObjectKind::Log => Some(MAX_DECODED_LOG),
            ObjectKind::Nar
            | ObjectKind::FrameDigests
            | ObjectKind::CacheInfo
            | ObjectKind::GcRoot
            | ObjectKind::GcTrash
            | ObjectKind::Index
            | ObjectKind::GcLease
            | ObjectKind::Scratch => None,
        }
    }
}

/// The most bytes a stored-encoded build log is decoded to for a client that does not accept
/// its encoding (Nix, and every HTTP client through a library, accepts it).
const MAX_DECODED_LOG: u64 = 64 << 20;

pub(super) async fn get_or_head(
    state: &AppState,
    key: &ObjectKey,
    headers: &HeaderMap,
    head: bool,
) -> Response {
    if key.kind == ObjectKind::CacheInfo {
        return cache_info(state, head);
    }
    if key.kind == ObjectKind::Nar && !head && state.config.redirect_nars {
        return redirect(state, key).await;
    }
    if let (ObjectKind::NarInfo, Some(proxy), Some(hash)) =
        (key.kind, &state.proxy, key.hash_part())
    {
        // Missing here: filled from an upstream first, if one has it.
        if let Ok(None) = state.cache.objects().head(&key.key).await {
            proxy.fill(hash).await;
        }
    }
    let range = if head { None } else { requested_range(headers) };
    let conditional = is_conditional(headers);
    // What a GET already told about the object, so it is not asked again by a HEAD.
    let mut read_meta = None;
    if let (Some(limit), true) = (
        key.kind.decoded_limit(),
        state.cache.objects().keeps_encodings(),
    ) {
        // A small object that may be stored encoded: read first (a HEAD does not tell the
        // encoding), answered here if it is.
        match state.cache.objects().get(&key.key, ReadRange::All).await {
            Ok(Some(obj)) if obj.meta.content_encoding.is_some() => {
                return encoded(state, key, obj, headers, head, limit).await
            }
            Ok(Some(obj)) if !(head || conditional || range.is_some()) => {
                return body(state, key, obj, false)
            }
            Ok(Some(obj)) => read_meta = Some(obj.meta),
            Ok(None) => return not_found(key),
            Err(e) => return store_failure(&key.key, &e),
        }
    }
    if !(head || conditional || range.is_some()) {
        // The common case: one request to the store, metadata from its answer.
        return match state.cache.objects().get(&key.key, ReadRange::All).await {
            Ok(Some(obj)) => body(state, key, obj, false),
            Ok(None) => not_found(key),
            Err(e) => store_failure(&key.key, &e),
        };
    }
    let meta = match read_meta {
        Some(m) => m,
        None => match state.cache.objects().head(&key.key).await {
            Ok(Some(m)) => m,
            Ok(None) => return not_found(key),
            Err(e) => return store_failure(&key.key, &e),
        },
    };
    if conditional && not_modified(headers, &meta) {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        validators(r.headers_mut(), key, &meta);
        return r;
    }
    let slice: Option<Range<u64>> = match range.filter(|_| range_applies(headers, &meta)) {
        None => None,
        Some(r) => match resolve(r, meta.size) {
            Ok(r) => Some(r),
            Err(()) => {
                let mut resp = text(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    format!(
                        "{} is {} bytes long; the range asked for lies outside it",
                        key.key, meta.size
                    ),
                );
                let h = resp.headers_mut();
                insert(h, CONTENT_RANGE, format!("bytes */{}", meta.size));
                h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
                return resp;
            }
        },
    };
    if head {
        let mut r = Response::new(Body::empty());
        let h = r.headers_mut();
        entity_headers(h, key, &meta);
        insert(h, CONTENT_LENGTH, meta.size.to_string());
        return r;
    }
    let partial = slice.is_some();
    let wanted = slice.map_or(ReadRange::All, ReadRange::Bounded);
    match state.cache.objects().get(&key.key, wanted).await {
        Ok(Some(obj)) if obj.meta.size == meta.size && obj.meta.e_tag == meta.e_tag => {
            body(state, key, obj, partial)
        }
        Ok(Some(_)) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{} changed while it was being read; try again", key.key),
        ),
        Ok(None) => not_found(key),
        Err(e) => store_failure(&key.key, &e),
    }
}

/// An object stored with a `Content-Encoding`: as stored to a client that accepts the encoding
/// (`Vary: Accept-Encoding`; a `Range` is ignored, as HTTP allows, since it would count the
/// encoded bytes), decoded — at most `limit` bytes — to one that does not.
async fn encoded(
    state: &AppState,
    key: &ObjectKey,
    obj: Object,
    headers: &HeaderMap,
    head: bool,
    limit: u64,
) -> Response {
    use axum::http::header::{CONTENT_ENCODING, VARY};
    use futures::TryStreamExt as _;
    let encoding = obj.meta.content_encoding.clone().unwrap_or_default();
    let mut r = if accepts(headers, &encoding) {
        let mut r = if is_conditional(headers) && not_modified(headers, &obj.meta) {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            validators(r.headers_mut(), key, &obj.meta);
            r
        } else if head {
            let mut r = Response::new(Body::empty());
            entity_headers(r.headers_mut(), key, &obj.meta);
            insert(r.headers_mut(), CONTENT_LENGTH, obj.meta.size.to_string());
            r
        } else {
            body(state, key, obj, false)
        };
        insert(r.headers_mut(), CONTENT_ENCODING, encoding);
        r
    } else {
        let meta = obj.meta.clone();
        let stored = match obj.body.try_collect::<Vec<Bytes>>().await {
            Ok(chunks) => Bytes::from(chunks.concat()),
            Err(e) => return store_failure(&key.key, &e),
        };
        let url = state.cache.url();
        let plain = match crate::store::encoding::decode(url, &key.key, &encoding, stored, limit) {
            Ok(p) => p,
            Err(e) => return store_failure(&key.key, &e),
        };
        let len = plain.len();
        state
            .metrics
            .sent_bytes
            .with_label_values(&[key.kind.label()])
            .inc_by(if head { 0 } else { len as u64 });
        let mut r = Response::new(if head {
            Body::empty()
        } else {
            Body::from(plain)
        });
        r.extensions_mut().insert(super::BodyCounted);
        let h = r.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(key.kind.content_type()),
        );
        // Another representation than the stored one: no entity tag of its own.
        insert(h, LAST_MODIFIED, last_modified(&meta));
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static(key.kind.cache_control()),
        );
        insert(h, CONTENT_LENGTH, len.to_string());
        r
    };
    let h = r.headers_mut();
    h.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("none"));
    r
}

/// Whether `Accept-Encoding` takes `encoding` (by name or `*`, with a weight above zero).
fn accepts(headers: &HeaderMap, encoding: &str) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            !refused && (name.eq_ignore_ascii_case(encoding) || name == "*")
        })
}

/// How long a redirect to a NAR in the bucket may be followed: long enough for any download to
/// start (a presigned URL is checked when a request starts, not while the bytes flow).
const REDIRECT_EXPIRY: std::time::Duration = std::time::Duration::from_secs(3600);

/// `307` to a presigned URL of the NAR at `key` ([`Config::redirect_nars`]): the client
/// fetches it from the bucket, ranges and conditions included. The bucket says whether it
/// exists.
///
/// [`Config::redirect_nars`]: super::Config::redirect_nars
async fn redirect(state: &AppState, key: &ObjectKey) -> Response {
    let url = match state
        .cache
        .objects()
        .presigned_get(&key.key, REDIRECT_EXPIRY)
        .await
    {
        Ok(Some(url)) => url,
        Ok(None) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{} cannot sign a URL for {}", state.cache.url(), key.key),
            )
        }
        Err(e) => return store_failure(&key.key, &e),
    };
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    let h = r.headers_mut();
    insert(h, LOCATION, url.to_string());
    // The URL expires: no cache may keep the redirect.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn not_found(key: &ObjectKey) -> Response {
    let mut r = text(StatusCode::NOT_FOUND, format!("{} does not exist", key.key));
    // Nix keeps its own negative cache; proxies should not.
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn insert(h: &mut HeaderMap, name: axum::http::HeaderName, value: String) {
    if let Ok(v) = HeaderValue::try_from(value) {
        h.insert(name, v);
    }
}

fn validators(h: &mut HeaderMap, key: &ObjectKey, meta: &ObjectInfo) {
    if let Some(tag) = etag(meta) {
        insert(h, ETAG, tag);
    }
    insert(h, LAST_MODIFIED, last_modified(meta));
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static(key.kind.cache_control()),
    );
}

fn entity_headers(h: &mut HeaderMap, key: &ObjectKey, meta: &ObjectInfo) {
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(key.kind.content_type()),
    );
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    validators(h, key, meta);
}

fn cache_info(state: &AppState, head: bool) -> Response {
    let len = state.cache_info.len();
    let mut r = Response::new(if head {
        Body::empty()
    } else {
        Body::from(state.cache_info.clone())
    });
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(ObjectKind::CacheInfo.content_type()),
    );
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static(ObjectKind::CacheInfo.cache_control()),
    );
    insert(h, CONTENT_LENGTH, len.to_string());
    r
}

/// The answer streaming `obj`: 200, or 206 for a range.
fn body(state: &AppState, key: &ObjectKey, obj: Object, partial: bool) -> Response {
    let Object {
        meta, range, body, ..
    } = obj;
    let stream = body;
    let len = range.end.saturating_sub(range.start);
    let counted = Checked {
        inner: stream,
        remaining: len,
        key: key.key.clone(),
        route: key.kind.label(),
        sent: state
            .metrics
            .sent_bytes
            .with_label_values(&[key.kind.label()]),
        metrics: state.metrics.clone(),
        failed: false,
    };
    let mut r = Response::new(Body::from_stream(counted));
    r.extensions_mut().insert(super::BodyCounted);
    let h = r.headers_mut();
    entity_headers(h, key, &meta);
    insert(h, CONTENT_LENGTH, len.to_string());
    if partial {
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
        insert(
            r.headers_mut(),
            CONTENT_RANGE,
            format!(
                "bytes {}-{}/{}",
                range.start,
                range.end.saturating_sub(1),
                meta.size
            ),
        );
    }
    r
}

/// The store's stream, checked to yield exactly the announced length. A store failure, or a
/// length that does not add up, ends the body with an error: hyper then closes the connection
/// without finishing the response, so the client sees a failed transfer.
struct Checked {
    inner: BoxStream<'static, Result<Bytes, StoreError>>,
    remaining: u64,
    key: String,
    route: &'static str,
    sent: IntCounter,
    metrics: super::metrics::Metrics,
    failed: bool,
}

impl Checked {
    fn fail(&mut self, why: String) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        self.failed = true;
        self.metrics.record_abort(self.route);
        tracing::error!(key = %self.key, error = %why, "response aborted mid-body");
        Poll::Ready(Some(Err(std::io::Error::other(why))))
    }
}

impl Stream for Checked {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                let n = chunk.len() as u64;
                if n > this.remaining {
                    let why = format!("{} yields more bytes than its size", this.key);
                    return this.fail(why);
                }
                this.remaining -= n;
                this.sent.inc_by(n);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => this.fail(e.to_string()),
            Poll::Ready(None) if this.remaining > 0 => {
                let why = format!(
                    "{} ended {} bytes short of its size",
                    this.key, this.remaining
                );
                this.fail(why)
            }
            Poll::Ready(None) => Poll::Ready(None),
        }
    }
}

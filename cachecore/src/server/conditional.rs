//! The HTTP semantics of reading an object: `Range` (one range), `If-None-Match`,
//! `If-Modified-Since`, `If-Range` (RFC 9110, sections 13 and 14). Pure functions of the request
//! headers and the object's metadata, tested without a server.

use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::header::{IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, RANGE};
use axum::http::HeaderMap;

use crate::store::objects::ObjectInfo;

/// The `ETag` header value for the backend's entity tag: S3's come quoted, a local directory's
/// do not; anything that cannot be a valid entity tag is left out.
pub(crate) fn etag(meta: &ObjectInfo) -> Option<String> {
    let raw = meta.e_tag.as_deref()?;
    let inner = raw.strip_prefix("W/").unwrap_or(raw).trim_matches('"');
    let valid = !inner.is_empty()
        && inner
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b));
    if !valid {
        return None;
    }
    Some(if raw.starts_with("W/") {
        format!("W/\"{inner}\"")
    } else {
        format!("\"{inner}\"")
    })
}

/// Whole seconds: HTTP dates have no finer resolution.
fn seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The `Last-Modified` header value.
pub(crate) fn last_modified(meta: &ObjectInfo) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(seconds(meta.last_modified)))
}

fn header<'a>(headers: &'a HeaderMap, name: &axum::http::HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Entity tags compared weakly (`W/"x"` matches `"x"`), as `If-None-Match` does.
fn weak_eq(a: &str, b: &str) -> bool {
    a.strip_prefix("W/").unwrap_or(a) == b.strip_prefix("W/").unwrap_or(b)
}

/// Whether the request's validators say the client's copy is current (answer 304).
pub(crate) fn not_modified(headers: &HeaderMap, meta: &ObjectInfo) -> bool {
    if let Some(list) = header(headers, &IF_NONE_MATCH) {
        // If-None-Match wins over If-Modified-Since when both are sent.
        let ours = etag(meta);
        return list
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || ours.as_deref().is_some_and(|ours| weak_eq(tag, ours)));
    }
    if let Some(since) = header(headers, &IF_MODIFIED_SINCE) {
        if let Ok(since) = httpdate::parse_http_date(since) {
            return seconds(meta.last_modified) <= seconds(since);
        }
    }
    false
}

/// Whether the request carries validators that [`not_modified`] would look at.
pub(crate) fn is_conditional(headers: &HeaderMap) -> bool {
    headers.contains_key(IF_NONE_MATCH) || headers.contains_key(IF_MODIFIED_SINCE)
}

/// One byte range as the client wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByteRange {
    /// `first-last`, inclusive.
    Bounded(u64, u64),
    /// `first-`.
    From(u64),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

/// The one range of a `Range: bytes=…` header. `None` when there is no such header, or it is
/// not one syntactically valid byte range — several ranges included: RFC 9110 lets a server
/// ignore a `Range` header and send the whole object, which is what a `None` leads to.
pub(crate) fn requested_range(headers: &HeaderMap) -> Option<ByteRange> {
    let value = header(headers, &RANGE)?;
    let spec = value.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, false) => Some(ByteRange::Suffix(num(last)?)),
        (false, true) => Some(ByteRange::From(num(first)?)),
        (false, false) => {
            let (a, b) = (num(first)?, num(last)?);
            (a <= b).then_some(ByteRange::Bounded(a, b))
        }
        (true, true) => None,
    }
}

/// Whether `If-Range` (when sent) still matches the object, so the range applies; when it does
/// not, the client gets the whole object.
pub(crate) fn range_applies(headers: &HeaderMap, meta: &ObjectInfo) -> bool {
    let Some(cond) = header(headers, &IF_RANGE) else {
        return true;
    };
    if cond.starts_with('"') {
        // Strong comparison: a weak tag never matches.
        return etag(meta).is_some_and(|ours| ours == cond);
    }
    if cond.starts_with("W/") {
        return false;
    }
    httpdate::parse_http_date(cond).is_ok_and(|date| seconds(date) == seconds(meta.last_modified))
}

/// The byte range of an object of `size` bytes the request asks for, or `Err(())` when it is
/// unsatisfiable (answer 416).
pub(crate) fn resolve(range: ByteRange, size: u64) -> Result<Range<u64>, ()> {
    match range {
        ByteRange::Bounded(first, last) if first < size => Ok(first..last.min(size - 1) + 1),
        ByteRange::From(first) if first < size => Ok(first..size),
        ByteRange::Suffix(n) if n > 0 && size > 0 => Ok(size - n.min(size)..size),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    fn meta(etag: Option<&str>, secs: u64) -> ObjectInfo {
        ObjectInfo {
            key: "k".to_owned(),
            size: 100,
            last_modified: UNIX_EPOCH + Duration::from_millis(secs * 1000 + 345),
            e_tag: etag.map(str::to_owned),
            version: None,
            content_encoding: None,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn etags_are_quoted_once() {
        assert_eq!(etag(&meta(Some("abc-12"), 0)).unwrap(), "\"abc-12\"");
        assert_eq!(etag(&meta(Some("\"abc\""), 0)).unwrap(), "\"abc\"");
        assert_eq!(etag(&meta(Some("W/\"abc\""), 0)).unwrap(), "W/\"abc\"");
        assert_eq!(etag(&meta(Some("a b"), 0)), None);
        assert_eq!(etag(&meta(None, 0)), None);
    }

    #[test]
    fn validators() {
        let m = meta(Some("abc"), 1_700_000_000);
        let lm = last_modified(&m);
        assert_eq!(lm, "Tue, 14 Nov 2023 22:13:20 GMT");
        assert!(not_modified(&headers(&[("if-none-match", "\"abc\"")]), &m));
        assert!(not_modified(
            &headers(&[("if-none-match", "\"x\", W/\"abc\"")]),
            &m
        ));
        assert!(not_modified(&headers(&[("if-none-match", "*")]), &m));
        assert!(!not_modified(&headers(&[("if-none-match", "\"x\"")]), &m));
        // If-None-Match wins over a matching date.
        assert!(!not_modified(
            &headers(&[("if-none-match", "\"x\""), ("if-modified-since", &lm)]),
            &m
        ));
        assert!(not_modified(&headers(&[("if-modified-since", &lm)]), &m));
        assert!(!not_modified(
            &headers(&[("if-modified-since", "Tue, 14 Nov 2023 22:13:19 GMT")]),
            &m
        ));
        assert!(!not_modified(
            &headers(&[("if-modified-since", "garbage")]),
            &m
        ));
        assert!(!not_modified(&HeaderMap::new(), &m));

        assert!(range_applies(&HeaderMap::new(), &m));
        assert!(range_applies(&headers(&[("if-range", "\"abc\"")]), &m));
        assert!(!range_applies(&headers(&[("if-range", "\"abd\"")]), &m));
        assert!(!range_applies(&headers(&[("if-range", "W/\"abc\"")]), &m));
        assert!(range_applies(&headers(&[("if-range", &lm)]), &m));
        assert!(!range_applies(
            &headers(&[("if-range", "Tue, 14 Nov 2023 22:13:21 GMT")]),
            &m
        ));
    }

    #[test]
    fn ranges() {
        let r = |v: &str| requested_range(&headers(&[("range", v)]));
        assert_eq!(r("bytes=0-9"), Some(ByteRange::Bounded(0, 9)));
        assert_eq!(r("bytes=10-"), Some(ByteRange::From(10)));
        assert_eq!(r("bytes=-5"), Some(ByteRange::Suffix(5)));
        for ignored in [
            "bytes=0-1,3-4",
            "bytes=5-1",
            "bytes=-",
            "items=0-1",
            "bytes=a-b",
            "bytes=+1-2",
        ] {
            assert_eq!(r(ignored), None, "{ignored}");
        }
        assert_eq!(resolve(ByteRange::Bounded(0, 9), 100), Ok(0..10));
        assert_eq!(resolve(ByteRange::Bounded(90, 200), 100), Ok(90..100));
        assert_eq!(resolve(ByteRange::From(99), 100), Ok(99..100));
        assert_eq!(resolve(ByteRange::Suffix(5), 100), Ok(95..100));
        assert_eq!(resolve(ByteRange::Suffix(500), 100), Ok(0..100));
        assert_eq!(resolve(ByteRange::From(100), 100), Err(()));
        assert_eq!(resolve(ByteRange::Bounded(100, 101), 100), Err(()));
        assert_eq!(resolve(ByteRange::Suffix(0), 100), Err(()));
        assert_eq!(resolve(ByteRange::From(0), 0), Err(()));
    }
}

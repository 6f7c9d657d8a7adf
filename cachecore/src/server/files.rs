//! `GET /serve/<hash>-<name>/<path>`: one file from inside a store path, for a browser, read
//! with the core's random-access reader ([`ops::open_file`]'s): the narinfo, the listing and the
//! frames of the NAR that hold the file — never the whole NAR. A directory is an HTML index; a
//! symlink is a redirect to its target.
//!
//! What such a read checks is what a ranged read checks ([`crate::access`]): the narinfo
//! describes the path asked for, and the listing's offset lands on the file's contents header
//! of the stated size. It cannot check the NarHash (that needs the whole NAR); Nix, which
//! downloads whole NARs, does.
//!
//! Files are served with `Content-Security-Policy: sandbox` and `nosniff`: an HTML file out of a
//! store path runs no script with this server's origin.

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use futures::TryStreamExt as _;

use super::{store_failure, text, AppState};
use crate::nar::ListingNode;
use crate::ops::{self, OpError};
use crate::store_path::StorePath;

/// Listings and files may change only by `push --repair`: cached for a while, not forever.
const SHORT: &str = "public, max-age=300";

/// `GET`/`HEAD /serve/{rest}`; `rest` is still percent-encoded.
pub(super) async fn serve(state: &AppState, rest: &str, head: bool) -> Response {
    let Some(decoded) = super::keys::percent_decode(rest) else {
        return text(
            StatusCode::BAD_REQUEST,
            "the path has a bad percent-escape or is not UTF-8",
        );
    };
    let (base, sub) = decoded.split_once('/').unwrap_or((&decoded, ""));
    let Ok(path) = StorePath::from_base_name(base) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("{base:?} is not a store path name (/serve/<hash>-<name>/<file>)"),
        );
    };
    let cache = &state.cache;
    let info = match cache.narinfo(&path).await {
        Ok(Some(info)) => info,
        Ok(None) => {
            return text(
                StatusCode::NOT_FOUND,
                format!("{path} is not in this cache"),
            )
        }
        Err(e) => return store_failure(&format!("{}.narinfo", path.hash_part()), &e),
    };
    let listing = match ops::browse::listing_of(cache, &info).await {
        Ok(l) => l,
        Err(e) => return op_failure(&path, &e),
    };
    let shown = format!("{path}/{sub}");
    if matches!(listing.get(sub), Some(ListingNode::Regular { .. })) {
        // The narinfo and listing read above serve the ranged read too; a NAR that cannot be
        // read at random is kept whole, checked, where the server is told to keep them.
        return match ops::file::open_listed(
            cache,
            info,
            listing,
            sub,
            state.config.nar_cache.clone(),
        )
        .await
        {
            Ok(f) => file(f, sub, &shown, head),
            Err(e) => op_failure(&path, &e),
        };
    }
    match listing.get(sub) {
        Some(ListingNode::Directory { .. }) if !(sub.is_empty() || sub.ends_with('/')) => {
            // Relative links in the index resolve against a URL ending in `/`. The decoded
            // path: `redirect` encodes it (once).
            redirect(&format!("/serve/{decoded}/"))
        }
        Some(ListingNode::Directory { entries }) => index(
            &shown,
            entries.iter().map(|(n, node)| (n.as_str(), node)),
            head,
        ),
        Some(ListingNode::Symlink { target }) => {
            match symlink_location(state.store_dir.as_str(), base, sub, target) {
                Some(location) => redirect(&location),
                None => text(
                    StatusCode::NOT_FOUND,
                    format!("{shown} is a symlink to {target}, outside the store"),
                ),
            }
        }
        None | Some(ListingNode::Regular { .. }) => {
            text(StatusCode::NOT_FOUND, format!("{shown} does not exist"))
        }
    }
}

fn file(file: ops::NarFile, sub: &str, shown: &str, head: bool) -> Response {
    let size = file.size();
    let body = if head {
        Body::empty()
    } else {
        let name = shown.to_owned();
        // An error mid-body ends the stream with an error: hyper closes the connection, and the
        // client sees a failed transfer, not a short file.
        Body::from_stream(file.stream().map_err(move |e| {
            tracing::error!(file = %name, error = %e, "file response aborted mid-body");
            std::io::Error::other(e.to_string())
        }))
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(sub)));
    if let Ok(v) = HeaderValue::try_from(size.to_string()) {
        h.insert(CONTENT_LENGTH, v);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static(SHORT));
    h.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static("sandbox"),
    );
    h.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// An operation's failure as an answer: the full error to the log, one sentence to the client.
fn op_failure(path: &StorePath, e: &OpError) -> Response {
    use crate::error::ErrorKind as K;
    let kind = e.kind();
    let status = super::status_of(kind);
    if status.is_server_error() {
        tracing::error!(%path, error = %e, "cannot serve a file of a store path");
    }
    text(
        status,
        match kind {
            K::NotFound | K::InvalidInput => e.to_string(),
            K::Unavailable => format!("the store cannot be reached to serve {path}"),
            K::Denied => format!("the store refused this server access to {path}"),
            K::Conflict | K::Unsupported => format!("{path} cannot be served: {kind}"),
            K::Corrupt | K::Untrusted | K::Local | K::Internal => {
                format!("{path} cannot be read from this cache (its objects do not check out)")
            }
        },
    )
}

fn redirect(location: &str) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::try_from(super::keys::percent_encode_path(location)) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

/// Where a symlink at `sub` of store path `base` points, as a `/serve/…` URL (decoded), or
/// `None` when it leaves the store.
fn symlink_location(store_dir: &str, base: &str, sub: &str, target: &str) -> Option<String> {
    // Segments below the store directory: `<base>/<dir of sub>/<target>`, or the target's own
    // when it is absolute.
    let mut segments: Vec<&str> = Vec::new();
    let joined;
    let walk: &str = if let Some(inside) = target
        .strip_prefix(store_dir)
        .and_then(|t| t.strip_prefix('/'))
    {
        inside
    } else if target.starts_with('/') {
        return None;
    } else {
        let parent = sub
            .trim_end_matches('/')
            .rsplit_once('/')
            .map_or("", |(d, _)| d);
        joined = format!("{base}/{parent}/{target}");
        &joined
    };
    for s in walk.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                segments.pop()?;
            }
            s => segments.push(s),
        }
    }
    if segments.is_empty() {
        return None;
    }
    Some(format!("/serve/{}", segments.join("/")))
}

/// A directory as an HTML page of links.
fn index<'a>(
    shown: &str,
    entries: impl Iterator<Item = (&'a str, &'a ListingNode)>,
    head: bool,
) -> Response {
    let esc = super::landing::escape;
    let mut html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title></head>\n\
         <body><h1>{t}</h1>\n<ul>\n<li><a href=\"../\">../</a></li>\n",
        t = esc(shown)
    );
    for (name, node) in entries {
        let (suffix, note) = match node {
            ListingNode::Directory { .. } => ("/", String::new()),
            ListingNode::Symlink { target } => ("", format!(" → {}", esc(target))),
            ListingNode::Regular {
                size, executable, ..
            } => (
                "",
                format!(
                    " ({size} bytes{})",
                    if *executable { ", executable" } else { "" }
                ),
            ),
        };
        let href = super::keys::percent_encode_path(name);
        html.push_str(&format!(
            "<li><a href=\"{href}{suffix}\">{}{suffix}</a>{note}</li>\n",
            esc(name)
        ));
    }
    html.push_str("</ul></body></html>\n");
    let len = html.len();
    let mut r = Response::new(if head {
        Body::empty()
    } else {
        Body::from(html)
    });
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::try_from(len.to_string()) {
        h.insert(CONTENT_LENGTH, v);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static(SHORT));
    super::landing::protect_page(h, &[]);
    r
}

/// A content type from the file name's extension; anything unknown is bytes.
fn content_type(sub: &str) -> &'static str {
    let name = sub.rsplit('/').next().unwrap_or(sub);
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some(
            "txt" | "md" | "nix" | "sh" | "py" | "rs" | "c" | "h" | "cc" | "hpp" | "conf" | "cfg"
            | "ini" | "toml" | "yaml" | "yml" | "log" | "pc" | "la",
        ) => "text/plain; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("xml") => "application/xml",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("pdf") => "application/pdf",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_store_or_not_at_all() {
        let d = "/nix/store";
        let b = "00000000000000000000000000000000-a";
        assert_eq!(
            symlink_location(d, b, "bin/x", "y").as_deref(),
            Some("/serve/00000000000000000000000000000000-a/bin/y")
        );
        assert_eq!(
            symlink_location(d, b, "bin/x", "../lib/z").as_deref(),
            Some("/serve/00000000000000000000000000000000-a/lib/z")
        );
        assert_eq!(
            symlink_location(d, b, "x", "/nix/store/11111111111111111111111111111111-b/c")
                .as_deref(),
            Some("/serve/11111111111111111111111111111111-b/c")
        );
        assert_eq!(
            symlink_location(d, b, "bin/x", "../../11111111111111111111111111111111-b").as_deref(),
            Some("/serve/11111111111111111111111111111111-b")
        );
        assert_eq!(symlink_location(d, b, "x", "/etc/passwd"), None);
        assert_eq!(symlink_location(d, b, "x", "../../.."), None);
    }

    #[test]
    fn types_by_extension() {
        assert_eq!(
            content_type("share/doc/README.md"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(content_type("bin/app"), "application/octet-stream");
        assert_eq!(content_type("a/INDEX.HTML"), "text/html; charset=utf-8");
    }
}

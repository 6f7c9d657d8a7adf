//! The URL space of the server: every route, who may call it and what the metrics call it, in
//! one table ([`table`]).
//!
//! ```text
//! route                   group   methods                          metrics label
//! /                       read    GET HEAD                         landing
//! /health                 public  GET HEAD                         health
//! /metrics                read    GET HEAD                         metrics
//! /serve/                 read    GET HEAD (recent paths)          serve_file
//! /serve/{*path}          read    GET HEAD                         serve_file
//! /cachecore-paths        read    GET HEAD                         paths
//! /nix-cache-info         read    GET HEAD                         the object's kind:
//!                         write   PUT, POST ?upload-url            cache_info, narinfo,
//! /{file}                 (same)  <hash>.narinfo, <hash>.ls        listing, nar, log,
//! /nar/{*file}            (same)                                   realisation
//! /log/{*file}            (same)
//! /realisations/{*file}   (same)
//!                         public  any other method: 405
//! anything else           -       404 (or a key spelled oddly)     other
//! ```
//!
//! A route is added only with its group — [`public`], [`read`] or [`write`], each a layer that
//! checks the request's token before the handler runs — and its [`Label`]; `may_read` and
//! `may_write` are called from those layers only. On object routes the request path is read as
//! an object key ([`keys::classify`]) before anything else, so a path that names no object is
//! 404 whatever the method or token, as before routes existed; its kind gives the label. A
//! request no route matches is read as a key too: a refusal is 404 with the reason, and a key
//! spelled with escapes where the table has literal text (`/%6Ear/…`) is answered as its plain
//! spelling would be.

use axum::extract::{Request, State};
use axum::http::header::ALLOW;
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::Response;
use axum::routing::{any, get, post, put, MethodRouter};
use axum::{Extension, Router};
use tower::ServiceExt as _;

use super::keys::{self, percent_encode_path};
use super::{files, health, landing, metrics_page, read, text, upload, RouteLabel, Shared};
use crate::store::layout::ObjectKey;
use crate::store::layout::ObjectKind;

/// The routes of the server over `state`, with a fallback for every other path.
pub(super) fn table(state: &Shared) -> Router<Shared> {
    // What every object route takes: reads, uploads, and `POST ?upload-url` (the query is
    // looked at before the token, as the method is); any other method is 405, for anyone.
    let object = || {
        read(state, get(get_object))
            .merge(write(state, put(put_object)))
            .merge(Guarded(
                write(state, post(upload_url))
                    .0
                    .route_layer(from_fn(upload_url_query)),
            ))
            .merge(public(any(method_not_allowed)))
    };
    let routes = Routes(Router::new())
        .add(
            "/",
            Label::Fixed("landing"),
            read(state, get(landing::page)),
        )
        .add("/health", Label::Fixed("health"), public(get(health)))
        .add(
            "/metrics",
            Label::Fixed("metrics"),
            read(state, get(metrics_page)),
        )
        .add(
            "/serve/",
            Label::Fixed("serve_file"),
            read(state, get(landing::recent)),
        )
        .add(
            "/serve/{*path}",
            Label::Fixed("serve_file"),
            read(state, get(serve_file)),
        )
        .add(
            "/cachecore-paths",
            Label::Fixed("paths"),
            read(state, get(landing::paths)),
        )
        .add("/nix-cache-info", Label::OfObject, object())
        .add("/{file}", Label::OfObject, object())
        .add("/nar/{*file}", Label::OfObject, object())
        .add("/log/{*file}", Label::OfObject, object())
        .add("/realisations/{*file}", Label::OfObject, object())
        .0;
    // The same table, for a key spelled with escapes where the table has literal text.
    let plain = routes.clone().with_state(state.clone());
    routes.fallback(move |req: Request| unrouted(plain.clone(), req))
}

/// The routes added so far; [`add`](Self::add) is the only way to add one.
struct Routes(Router<Shared>);

/// A route's handlers, with the group that may call them decided ([`public`], [`read`],
/// [`write`]).
struct Guarded(MethodRouter<Shared>);

impl Guarded {
    /// These handlers and `other`'s, for other methods on the same path.
    fn merge(self, other: Guarded) -> Guarded {
        Guarded(self.0.merge(other.0))
    }
}

/// What a route is called in the metrics and the request log.
#[derive(Debug, Clone, Copy)]
enum Label {
    /// This name.
    Fixed(&'static str),
    /// The kind of the object the path names (`ObjectKind::label`); the path is read as an
    /// object key first ([`keys::classify`]), and one that names no object is 404, `other`.
    OfObject,
}

impl Routes {
    fn add(self, path: &str, label: Label, handlers: Guarded) -> Routes {
        let handlers = match label {
            Label::Fixed(name) => handlers.0.layer(from_fn(move |req: Request, next: Next| {
                labelled(name, req, next)
            })),
            Label::OfObject => handlers.0.layer(from_fn(object_key)),
        };
        Routes(self.0.route(path, handlers))
    }
}

/// Anyone may call these.
fn public(handlers: MethodRouter<Shared>) -> Guarded {
    Guarded(handlers)
}

/// Callers holding the read token (or the write token) when the server has one, else anyone.
fn read(state: &Shared, handlers: MethodRouter<Shared>) -> Guarded {
    Guarded(handlers.route_layer(from_fn_with_state(state.clone(), may_read)))
}

/// Callers holding the write token, or a scoped token that may push or sign; no one when the
/// server has neither.
fn write(state: &Shared, handlers: MethodRouter<Shared>) -> Guarded {
    Guarded(handlers.route_layer(from_fn_with_state(state.clone(), may_write)))
}

async fn may_read(State(state): State<Shared>, req: Request, next: Next) -> Response {
    match state.may_read(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refused) => refused,
    }
}

/// Passes what the token may do on to the handler (an `Extension<Rights>`): pushing, or only
/// adding signatures.
async fn may_write(State(state): State<Shared>, mut req: Request, next: Next) -> Response {
    match state.may_write(req.headers()) {
        Ok(rights) => {
            req.extensions_mut().insert(rights);
            next.run(req).await
        }
        Err(refused) => refused,
    }
}

async fn labelled(name: &'static str, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    response.extensions_mut().insert(RouteLabel(name));
    response
}

/// The path read as an object key, for the handlers ([`Extension<ObjectKey>`]); a path that
/// names no object is 404 with the reason.
async fn object_key(mut req: Request, next: Next) -> Response {
    let key = match keys::classify(req.uri().path()) {
        Ok(key) => key,
        Err(why) => return not_an_object(why),
    };
    let label = RouteLabel(key.kind.label());
    req.extensions_mut().insert(key);
    let mut response = next.run(req).await;
    response.extensions_mut().insert(label);
    response
}

fn not_an_object(why: &str) -> Response {
    let mut r = text(
        StatusCode::NOT_FOUND,
        format!("not an object of this cache: {why}"),
    );
    r.extensions_mut().insert(RouteLabel("other"));
    r
}

/// A path no route matches: a refusal, or a key spelled with escapes where the table has
/// literal text, answered by the table as its plain spelling.
async fn unrouted(plain: Router, req: Request) -> Response {
    let key = match keys::classify(req.uri().path()) {
        Ok(key) => key,
        Err(why) => return not_an_object(why),
    };
    let (mut parts, body) = req.into_parts();
    let path = percent_encode_path(&format!("/{}", key.key));
    let uri = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    match uri.parse::<Uri>() {
        Ok(uri) => parts.uri = uri,
        Err(_) => return not_an_object(crate::store::layout::NO_OBJECT),
    }
    match plain.oneshot(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// `GET`/`HEAD` of an object.
async fn get_object(
    State(state): State<Shared>,
    Extension(key): Extension<ObjectKey>,
    req: Request,
) -> Response {
    let response =
        read::get_or_head(&state, &key, req.headers(), req.method() == Method::HEAD).await;
    if let (Some(recorder), ObjectKind::NarInfo, Some(hash)) =
        (&state.config.access_recorder, key.kind, key.hash_part())
    {
        // Answered (or not modified): a read. Memory only; written later, off the request.
        if response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED {
            recorder.record(hash);
        }
    }
    response
}

/// `PUT` of an object.
async fn put_object(
    State(state): State<Shared>,
    Extension(key): Extension<ObjectKey>,
    req: Request,
) -> Response {
    upload::put(&state, &key, req).await
}

/// `POST <nar>?upload-url`.
async fn upload_url(
    State(state): State<Shared>,
    Extension(key): Extension<ObjectKey>,
    Extension(rights): Extension<super::Rights>,
) -> Response {
    upload::upload_url(&state, &key, &rights).await
}

/// A `POST` without `?upload-url` is a method objects do not take (answered before the token
/// is checked, as for any other method).
async fn upload_url_query(req: Request, next: Next) -> Response {
    if req.uri().query() == Some("upload-url") {
        next.run(req).await
    } else {
        method_not_allowed(req.method().clone()).await
    }
}

async fn method_not_allowed(method: Method) -> Response {
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not supported; use GET, HEAD or PUT"),
    );
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static("GET, HEAD, PUT"));
    r
}

/// `GET`/`HEAD /serve/<hash>-<name>/<path>`: a file from inside a store path ([`files`]).
async fn serve_file(State(state): State<Shared>, req: Request) -> Response {
    let rest = req.uri().path().strip_prefix("/serve/").unwrap_or_default();
    files::serve(&state, rest, req.method() == Method::HEAD).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt as _;

    use super::super::{metrics::ROUTES, router, Config, RouteLabel, Token};
    use crate::store::BinaryCache;

    const H: &str = "7h7qgvs4kgzsn8a6rb273saxyqh4jxlz";
    const NAR: &str = "1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3";

    struct Answer {
        status: StatusCode,
        label: &'static str,
        allow: Option<String>,
        body: String,
    }

    fn ask(config: Config, requests: &[(&str, &str, Option<&str>)]) -> Vec<Answer> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let app = router(BinaryCache::open("memory://").unwrap(), config)
                .await
                .unwrap();
            let mut answers = Vec::new();
            for (method, path, token) in requests {
                let mut req = Request::builder().method(*method).uri(*path);
                if let Some(t) = token {
                    req = req.header("authorization", format!("Bearer {t}"));
                }
                let r = app
                    .clone()
                    .oneshot(req.body(Body::empty()).unwrap())
                    .await
                    .unwrap();
                let label = r.extensions().get::<RouteLabel>().map_or("none", |l| l.0);
                let status = r.status();
                let allow = r
                    .headers()
                    .get("allow")
                    .map(|v| v.to_str().unwrap().to_owned());
                let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
                answers.push(Answer {
                    status,
                    label,
                    allow,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
            }
            answers
        })
    }

    /// Every route labels its answers with a label the metrics pre-register, refusals included.
    #[test]
    fn every_route_has_its_label() {
        let id = "sha256:6b9206b68e3d12a3cc840a6e022b5394a2297822e0c61f99383ed9e99661c2cf!out";
        let cases = [
            ("/", "landing"),
            ("/health", "health"),
            ("/metrics", "metrics"),
            ("/serve/x", "serve_file"),
            ("/nix-cache-info", "cache_info"),
            (&format!("/{H}.narinfo"), "narinfo"),
            (&format!("/{H}.ls"), "listing"),
            (&format!("/nar/{NAR}.nar.xz"), "nar"),
            (&format!("/log/{H}-hello.drv"), "log"),
            (&format!("/realisations/{id}.doi"), "realisation"),
            ("/etc/passwd", "other"),
            ("/nar/x.nar", "other"),
            (&format!("/gcroots/h/{H}"), "other"),
        ];
        let requests: Vec<_> = cases.iter().map(|(p, _)| ("GET", *p, None)).collect();
        for ((path, label), answer) in cases.iter().zip(ask(Config::default(), &requests)) {
            assert_eq!(answer.label, *label, "{path}");
            assert!(ROUTES.contains(&answer.label), "{path}: {label}");
        }
    }

    /// With a read token: a path that names no object is 404 and a method objects do not take
    /// is 405, both before the token is looked at; a key spelled with escapes where the table
    /// has literal text is answered as its plain spelling, token check included.
    #[test]
    fn refusals_come_before_the_token_and_escaped_spellings_route_as_plain_ones() {
        let config = Config {
            read_token: Some(Token::parse("r").unwrap()),
            write_token: Some(Token::parse("w").unwrap()),
            ..Config::default()
        };
        let nar = format!("/nar/{NAR}.nar");
        let escaped_nar = format!("/%6Ear/{NAR}.nar");
        let answers = ask(
            config,
            &[
                ("GET", "/nar/x.nar", None),
                ("GET", "/nar/%2e%2e/nix-cache-info", None),
                ("DELETE", "/nix-cache-info", None),
                ("POST", &nar, None),
                ("POST", &format!("{nar}?upload-url"), None),
                ("GET", "/nix-cache-info", None),
                ("GET", "/%6Eix-cache-info", None),
                ("GET", "/%6Eix-cache-info", Some("r")),
                ("GET", &escaped_nar, Some("r")),
                ("PUT", &escaped_nar, Some("r")),
                ("POST", "/", None),
            ],
        );
        let s: Vec<u16> = answers.iter().map(|a| a.status.as_u16()).collect();
        assert_eq!(s, [404, 404, 405, 405, 401, 401, 401, 200, 404, 403, 405]);
        assert!(answers[0].body.starts_with("not an object of this cache: "));
        assert_eq!(answers[2].allow.as_deref(), Some("GET, HEAD, PUT"));
        assert_eq!(
            answers[2].body,
            "DELETE is not supported; use GET, HEAD or PUT\n"
        );
        assert_eq!(
            answers[3].body,
            "POST is not supported; use GET, HEAD or PUT\n"
        );
        assert!(answers[7].body.starts_with("StoreDir: "));
        assert_eq!(answers[8].label, "nar");
        assert_eq!(answers[10].allow.as_deref(), Some("GET,HEAD"));
    }
}

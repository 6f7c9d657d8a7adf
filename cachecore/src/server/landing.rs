//! `/`: what a person needs to use this cache — the `nix.conf` lines and the public keys — and
//! what it holds. Totals come from reading every narinfo, so they are counted in the background
//! (at most once a minute) and the page shows the last count.

use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HOST, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;

use super::{AppState, Shared};
use crate::ops::CacheTotals;

/// How long a count of the totals is shown before it is counted again.
const TOTALS_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub(super) struct Totals {
    last: Option<(Instant, Result<Counted, String>)>,
    counting: bool,
}

/// What one count found.
#[derive(Debug, Clone)]
struct Counted {
    totals: CacheTotals,
    /// The most recently pushed paths, newest first (at most [`RECENT`]); empty when the store
    /// cannot be listed by this server (its push index and narinfos).
    recent: Vec<crate::store_path::StorePath>,
}

/// How many recently pushed paths `/serve/` lists.
const RECENT: usize = 100;

/// The last count and how long ago it was made, starting a new one when there is none or it
/// is old.
fn totals(state: &Shared) -> Option<(Duration, Result<Counted, String>)> {
    let Ok(mut t) = state.totals.lock() else {
        return None;
    };
    let stale = t
        .last
        .as_ref()
        .is_none_or(|(at, _)| at.elapsed() > TOTALS_TTL);
    if stale && !t.counting {
        t.counting = true;
        let state = state.clone();
        let runtime = tokio::runtime::Handle::current();
        // On a blocking thread driving its own future: `ops::info`'s future is not provably
        // `Send` (a rustc limitation with closures returning futures), which `spawn` needs.
        tokio::task::spawn_blocking(move || {
            let counted = runtime.block_on(count(&state.cache));
            if let Ok(mut t) = state.totals.lock() {
                t.last = Some((Instant::now(), counted));
                t.counting = false;
            }
        });
    }
    t.last.as_ref().map(|(at, r)| (at.elapsed(), r.clone()))
}

/// The totals and the recent paths: from the push index (and the narinfos it does not cover)
/// where the store can be listed, else the totals as `cachecore info` counts them.
async fn count(cache: &crate::store::BinaryCache) -> Result<Counted, String> {
    match cache.paths(16).await {
        Ok(paths) => {
            let mut totals = CacheTotals::default();
            for e in &paths.entries {
                totals.paths += 1;
                totals.nar_bytes = totals.nar_bytes.saturating_add(e.nar_size);
                totals.file_bytes = totals.file_bytes.saturating_add(e.file_size.unwrap_or(0));
            }
            let mut entries = paths.entries;
            entries.sort_by(|a, b| b.pushed.cmp(&a.pushed).then(a.path.cmp(&b.path)));
            let recent = entries.into_iter().take(RECENT).map(|e| e.path).collect();
            Ok(Counted { totals, recent })
        }
        Err(_) => crate::ops::info(cache)
            .await
            .map(|(_, totals)| Counted {
                totals,
                recent: Vec::new(),
            })
            .map_err(|e| e.to_string()),
    }
}

/// `3 seconds`, `1 minute`.
fn age(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        1 => "1 second".to_owned(),
        s if s < 120 => format!("{s} seconds"),
        s => format!("{} minutes", s / 60),
    }
}

/// `/serve/`: the most recently pushed paths, each a link to its files.
pub(super) async fn recent(State(state): State<Shared>) -> Response {
    let body = match totals(&state) {
        None => "<p>Counting the store paths&hellip; reload in a moment.</p>".to_owned(),
        Some((_, Err(e))) => format!("<p>The store paths could not be read: {}</p>", escape(&e)),
        Some((ago, Ok(c))) if c.recent.is_empty() && c.totals.paths > 0 => format!(
            "<p>This store cannot be listed here; open <code>/serve/&lt;hash&gt;-&lt;name&gt;/</code> for a path you know (as of {} ago).</p>",
            age(ago)
        ),
        Some((ago, Ok(c))) => {
            let items: String = c
                .recent
                .iter()
                .map(|p| {
                    let base = p.to_string();
                    format!(
                        "<li><a href=\"{}/\">{}</a></li>",
                        escape(&super::keys::percent_encode_path(&base)),
                        escape(&base)
                    )
                })
                .collect();
            format!(
                "<p>The {} most recently pushed of {} store paths, as counted {} ago:</p><ul id=\"recent\">{items}</ul>",
                c.recent.len(),
                c.totals.paths,
                age(ago)
            )
        }
    };
    let title = escape(&page_title(&state));
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Recent paths — {title}</title><style>{STYLE}</style></head>\n<body><h1>Recent paths</h1>\n{body}\n<footer><a href=\"/\">{title}</a></footer></body></html>\n"
    );
    html_response(html)
}

fn html_response(html: String) -> Response {
    let mut r = Response::new(axum::body::Body::from(html));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    protect_page(r.headers_mut(), &[STYLE]);
    r
}

/// The cache's title: `serve --title`, else "Nix binary cache".
fn page_title(state: &AppState) -> String {
    state
        .config
        .title
        .clone()
        .unwrap_or_else(|| "Nix binary cache".to_owned())
}

/// `/cachecore-paths`: every store path with its NarSize and FileSize, one per line (`PATH
/// NARSIZE FILESIZE`), for `cachecore ls` and `cachecore info` of this server's URL
/// ([`crate::ops::list_paths`]), which a plain HTTP cache cannot answer.
pub(super) async fn paths(State(state): State<Shared>) -> Response {
    let runtime = tokio::runtime::Handle::current();
    let cache = state.cache.clone();
    // As for the totals: the walk's future is not provably `Send`.
    let listed = tokio::task::spawn_blocking(move || {
        runtime.block_on(crate::ops::browse::all_narinfos(&cache))
    })
    .await;
    let infos = match listed {
        Ok(Ok(infos)) => infos,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot list the store paths");
            return super::text(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "the store paths could not be listed",
            );
        }
        Err(_) => {
            return super::text(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "the listing was cancelled",
            )
        }
    };
    let mut body = String::new();
    for i in &infos {
        body.push_str(&format!(
            "{} {} {}\n",
            i.store_dir.full_path(&i.store_path),
            i.nar_size,
            i.file_size.unwrap_or(0)
        ));
    }
    let mut r = Response::new(axum::body::Body::from(body));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// The landing page's style sheet, inline: its `Content-Security-Policy` allows it by hash.
const STYLE: &str = "
body { font-family: system-ui, sans-serif; max-width: 48rem; margin: 2rem auto; padding: 0 1rem; color: #1d2330; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
pre, code { background: #f1f3f7; border-radius: 4px; } pre { padding: .8rem; overflow-x: auto; } code { padding: 0 .2rem; }
table { border-collapse: collapse; } th, td { text-align: left; padding: .2rem 1rem .2rem 0; }
ul.keys { padding-left: 1.2rem; } footer { margin-top: 3rem; color: #667; font-size: .85rem; }
";

/// What the pages this server writes (this one, `/serve/` directory indexes) may do: load
/// nothing, run nothing, submit nothing, be framed by no one — only apply `styles` (inline
/// style sheets, allowed by their SHA-256).
pub(super) fn protect_page(headers: &mut HeaderMap, styles: &[&str]) {
    use base64::Engine as _;
    use sha2::Digest as _;
    let mut csp = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        .to_owned();
    if !styles.is_empty() {
        csp.push_str("; style-src");
        for s in styles {
            let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(s));
            csp.push_str(&format!(" 'sha256-{hash}'"));
        }
    }
    if let Ok(v) = HeaderValue::try_from(csp) {
        headers.insert(CONTENT_SECURITY_POLICY, v);
    }
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `812 bytes`, `3.4 KiB`, `1.2 GiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

pub(super) async fn page(State(state): State<Shared>, req: Request) -> Response {
    // The address the client used; only characters a host name or address can hold.
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("HOST:PORT");
    html_response(render(&state, &format!("http://{host}"), totals(&state)))
}

/// The keys that sign what this server serves, each once, with what it signs: its own
/// (`--key`, `--public-key`), then each upstream's (paths fetched from an upstream keep its
/// signatures).
fn signing_keys(state: &AppState) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = Vec::new();
    let mut add = |key: &crate::signing::PublicKey, role: String| {
        let text = key.to_string();
        if !out.iter().any(|(k, _, _)| *k == text) {
            out.push((text, key.name().to_owned(), role));
        }
    };
    let own = state
        .config
        .signing_key
        .as_ref()
        .map(|s| s.public_key().to_string());
    for k in &state.config.public_keys {
        let role = if own.as_deref() == Some(k.to_string().as_str()) {
            "this server signs every upload with it".to_owned()
        } else {
            "signs paths of this cache".to_owned()
        };
        add(k, role);
    }
    for up in &state.config.upstreams {
        for k in &up.trusted_keys {
            add(
                k,
                format!("signs the paths this proxy fetches from {}", up.cache.url()),
            );
        }
    }
    out
}

fn render(
    state: &AppState,
    url: &str,
    totals: Option<(Duration, Result<Counted, String>)>,
) -> String {
    let signing = signing_keys(state);
    let keys: Vec<String> = signing.iter().map(|(k, _, _)| k.clone()).collect();
    // `extra-`: added to what Nix has (cache.nixos.org), never replacing it.
    let key_list = if keys.is_empty() {
        vec!["<the public key of the key that signs this cache>".to_owned()]
    } else {
        keys.clone()
    };
    let conf = format!(
        "extra-substituters = {url}\nextra-trusted-public-keys = {}\n",
        key_list.join(" ")
    );
    let quoted = |items: &[String]| {
        items
            .iter()
            .map(|i| format!("\"{i}\""))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let nixos = format!(
        "nix.settings = {{\n  extra-substituters = [ {} ];\n  extra-trusted-public-keys = [ {} ];\n}};\n",
        quoted(&[url.to_owned()]),
        quoted(&key_list)
    );
    // netrc names a machine by its host alone: a port there matches nothing.
    let netrc_host = url
        .strip_prefix("http://")
        .map(|h| match h.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => h,
        })
        .unwrap_or("HOST");
    // Each key in full once, in the lines above; here by name, with what it signs.
    let keys_html = if signing.is_empty() {
        "<p>This server was not told which keys sign the cache (<code>cachecore serve --public-key KEY</code>).</p>".to_owned()
    } else {
        let items: String = signing
            .iter()
            .map(|(_, name, role)| {
                format!("<li><code>{}</code>: {}</li>", escape(name), escape(role))
            })
            .collect();
        format!("<p>The keys in the lines above:</p><ul class=\"keys\" id=\"keys\">{items}</ul>")
    };
    let totals_html = match totals {
        Some((ago, Ok(c))) => format!(
            "<table><tr><th>Store paths</th><td id=\"paths\">{}</td></tr><tr><th>NAR size (unpacked)</th><td>{}</td></tr><tr><th>Stored (compressed)</th><td>{}</td></tr></table><p id=\"counted\">Counted {} ago (counted again at most once a minute). <a href=\"/serve/\">Browse the recently pushed paths</a>.</p>",
            c.totals.paths,
            human(c.totals.nar_bytes),
            human(c.totals.file_bytes),
            age(ago)
        ),
        Some((_, Err(e))) => format!("<p>The totals could not be counted: {}</p>", escape(&e)),
        None => "<p>Counting the store paths&hellip; reload in a moment. <a href=\"/serve/\">Browse the recently pushed paths</a>.</p>".to_owned(),
    };
    let priority = state
        .priority
        .map(|p| format!(" Nix gives it priority {p}: lower is asked first, and cache.nixos.org is 40, so for this cache to be asked before it, add <code>?priority=30</code> to the substituter URL (or start the server with <code>--priority 30</code>); leave it above 40 to ask it only for what cache.nixos.org lacks."))
        .unwrap_or_default();
    let kept_unsigned = if state.config.signing_key.is_some() {
        "<p>This server signs what it takes. A machine that uploads with <code>nix copy --to</code> keeps the unsigned narinfo it sent in Nix's own cache (<code>~/.cache/nix/binary-cache-v6.sqlite</code>, for <code>narinfo-cache-positive-ttl</code>, 30 days) and refuses the signed path when it substitutes later: push with <code>cachecore push</code> instead (it leaves Nix's cache alone), or substitute there with <code>--option narinfo-cache-positive-ttl 0</code>.</p>"
    } else {
        ""
    };
    let uploads = if state.config.write_token.is_some() {
        format!(
            "<h2>Uploading</h2><p>With the upload token in a netrc file (<code>machine {netrc_host} password TOKEN</code>: the host without its port):</p><pre>nix copy --to '{url}' --option netrc-file ./netrc ./result</pre><p>Or with cachecore, the token in a file (no bucket credentials needed; the NARs are compressed on the pushing machine):</p><pre>cachecore push '{url}' ./result --token-file ./token</pre>{kept_unsigned}",
            url = escape(url),
            netrc_host = escape(netrc_host),
        )
    } else {
        String::new()
    };
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} — {url_e}</title>
<style>{STYLE}</style></head>
<body>
<h1 id="title">{title}</h1>
<p>Store directory <code>{store_dir}</code>.{priority}</p>
<h2>Use it</h2>
<p>Add to <code>/etc/nix/nix.conf</code> (or <code>~/.config/nix/nix.conf</code> for a trusted user):</p>
<pre id="nix-conf">{conf}</pre>
<p>On NixOS, in <code>configuration.nix</code>:</p>
<pre id="nixos">{nixos}</pre>
<h2>Signing keys</h2>
{keys_html}
<h2>Contents</h2>
{totals_html}
{uploads}
<footer>Served by cachecore {version}. <a href="/metrics">metrics</a> · <a href="/health">health</a></footer>
</body></html>
"#,
        url_e = escape(url),
        title = escape(&page_title(state)),
        store_dir = escape(state.store_dir.as_str()),
        conf = escape(&conf),
        nixos = escape(&nixos),
        version = env!("CARGO_PKG_VERSION"),
    )
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(0), "0 bytes");
        assert_eq!(human(1023), "1023 bytes");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(5 << 20), "5.0 MiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
        assert_eq!(human(u64::MAX), "16777216.0 TiB");
    }
}

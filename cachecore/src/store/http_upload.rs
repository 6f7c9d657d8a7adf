//! Writing to an HTTP binary cache that takes uploads — `cachecore serve --token-file`, or any
//! server that takes `PUT` as Nix's `http://` store sends it — with a bearer token.
//!
//! Reads go through object_store's HTTP client. Writes are one `PUT` each, written here:
//! object_store's HTTP store has no multipart upload and answers a `409` with WebDAV `MKCOL`
//! requests. A large object streams in one chunked `PUT` whose body is fed part by part, so a
//! multi-GiB NAR never sits in memory; aborting the upload aborts the request, and the server
//! stores nothing. The server's one-line answer to a refused upload is kept in the error.
//!
//! A server whose store is a bucket hands out presigned URLs (`POST <key>?upload-url`): then a
//! large object is spooled to an unlinked temporary file (its length must be known to the
//! bucket) and `PUT` straight to the bucket, its bytes never passing through the server; when
//! the bucket cannot be reached from here, it is sent to the server instead.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{FutureExt as _, StreamExt as _};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use tokio::sync::{mpsc, oneshot};

const STORE: &str = "HTTP upload";

/// An HTTP cache: reads by `reads`, writes by `PUT` with `Authorization: Bearer <token>`.
#[derive(Debug)]
pub(crate) struct HttpUploads {
    reads: Arc<dyn ObjectStore>,
    client: reqwest::Client,
    base: url::Url,
    token: Arc<str>,
}

impl fmt::Display for HttpUploads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HttpUploads({})", self.base)
    }
}

impl HttpUploads {
    pub(crate) fn new(
        reads: Arc<dyn ObjectStore>,
        base: url::Url,
        token: &str,
        connect_timeout: std::time::Duration,
    ) -> Result<HttpUploads, object_store::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            // A server (or bucket) that stalls fails the upload after a minute of silence.
            .read_timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(generic)?;
        Ok(HttpUploads {
            reads,
            client,
            base,
            token: token.into(),
        })
    }

    fn url(&self, location: &Path) -> url::Url {
        object_url(&self.base, location)
    }

    /// `POST <key>?upload-url`: asks the server for a presigned URL to the bucket.
    fn upload_url_request(&self, location: &Path) -> reqwest::RequestBuilder {
        let mut url = self.url(location);
        url.set_query(Some("upload-url"));
        self.client.post(url).bearer_auth(&*self.token)
    }

    fn clone_handles(&self) -> Handles {
        Handles {
            client: self.client.clone(),
            base: self.base.clone(),
            token: self.token.clone(),
        }
    }

    /// The request that says why an upload failed to send (see [`diagnosed`]).
    fn diagnosis(&self) -> reqwest::RequestBuilder {
        self.put_request(&Path::from("nix-cache-info"), &Default::default())
            .body(Bytes::new())
    }

    /// A `PUT` of `location`, with the `Content-Encoding` its bytes are compressed with, if
    /// any: the server decodes them for its checks and stores them encoded.
    fn put_request(
        &self,
        location: &Path,
        attributes: &object_store::Attributes,
    ) -> reqwest::RequestBuilder {
        let request = self
            .client
            .put(self.url(location))
            .bearer_auth(&*self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream");
        match attributes.get(&object_store::Attribute::ContentEncoding) {
            Some(encoding) => request.header(reqwest::header::CONTENT_ENCODING, encoding.as_ref()),
            None => request,
        }
    }
}

/// `base/key`, each segment of the key percent-encoded as object_store's HTTP client does.
fn object_url(base: &url::Url, location: &Path) -> url::Url {
    let mut u = base.clone();
    if let Ok(mut segments) = u.path_segments_mut() {
        segments.pop_if_empty();
        segments.extend(location.parts().map(|p| p.as_ref().to_owned()));
    }
    u
}

fn generic(e: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: Box::new(e),
    }
}

/// The error for a refused upload: the status and the server's own one-line reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("HTTP {}: {reason}", status.as_u16())]
pub(crate) struct Refused {
    status: reqwest::StatusCode,
    reason: String,
}

/// Why an upload failed, kept cloneable: every part of a chunked upload waits on the one
/// request, and each reports its failure.
#[derive(Debug, Clone)]
enum Failure {
    Refused(Refused),
    /// The request could not be sent or its answer not read.
    Transport(Arc<reqwest::Error>),
    Other(String),
}

impl Failure {
    fn into_error(self, location: &Path) -> object_store::Error {
        let path = location.to_string();
        match self {
            Failure::Refused(r) if r.status == reqwest::StatusCode::UNAUTHORIZED => {
                object_store::Error::Unauthenticated {
                    path,
                    source: Box::new(r),
                }
            }
            Failure::Refused(r) if r.status == reqwest::StatusCode::FORBIDDEN => {
                object_store::Error::PermissionDenied {
                    path,
                    source: Box::new(r),
                }
            }
            Failure::Refused(r) => generic(r),
            Failure::Transport(e) => generic(ArcError(e)),
            Failure::Other(m) => generic(std::io::Error::other(m)),
        }
    }
}

/// A shared transport error, as an error of its own (its text and its causes).
#[derive(Debug)]
struct ArcError(Arc<reqwest::Error>);

impl fmt::Display for ArcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ArcError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}

/// What a successful upload answered: its ETag.
type Sent = Result<Option<String>, Failure>;

fn put_result(e_tag: Option<String>) -> PutResult {
    PutResult {
        e_tag,
        version: None,
        extensions: Default::default(),
    }
}

/// At most `limit` bytes of an answer's body (a server is not trusted to send a short one),
/// and whether that was all of it. A body that fails midway is what arrived.
async fn read_bounded(mut response: reqwest::Response, limit: usize) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= limit => body.extend_from_slice(&chunk),
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk[..limit - body.len()]);
                return (body, false);
            }
            Ok(None) => return (body, true),
            Err(_) => return (body, false),
        }
    }
}

/// Sends a request, and returns the body of a 2xx answer (at most 64 KiB) as text.
async fn send_for_text(req: reqwest::RequestBuilder) -> Result<String, Failure> {
    let response = req
        .send()
        .await
        .map_err(|e| Failure::Transport(Arc::new(e)))?;
    let status = response.status();
    let (body, whole) = read_bounded(response, 64 << 10).await;
    if status.is_success() && whole {
        return Ok(String::from_utf8_lossy(&body).trim().to_owned());
    }
    let reason = crate::untrusted::reason(&String::from_utf8_lossy(&body));
    Err(Failure::Refused(Refused { status, reason }))
}

/// Sends a request, and turns anything but a 2xx into a failure carrying the server's reason.
async fn send(req: reqwest::RequestBuilder) -> Sent {
    let response = req
        .send()
        .await
        .map_err(|e| Failure::Transport(Arc::new(e)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned));
    }
    // The server's reason is one line, quoted whole ([`crate::untrusted::reason`]).
    let (body, _) = read_bounded(response, 64 << 10).await;
    let reason = crate::untrusted::reason(&String::from_utf8_lossy(&body));
    Err(Failure::Refused(Refused { status, reason }))
}

/// [`send`], and when sending failed: a server that refuses the token answers before reading
/// the body and closes the connection, which the client sees as a failed send. Then an empty
/// `PUT` of `nix-cache-info` (never stored: a server refuses a different one) asks why, and a
/// refused token is the failure.
async fn diagnosed(request: reqwest::RequestBuilder, diagnosis: reqwest::RequestBuilder) -> Sent {
    match send(request).await {
        Err(transport @ Failure::Transport(_)) => match send(diagnosis).await {
            Err(Failure::Refused(r))
                if matches!(
                    r.status,
                    reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN
                ) =>
            {
                Err(Failure::Refused(r))
            }
            _ => Err(transport),
        },
        other => other,
    }
}

#[async_trait]
impl ObjectStore for HttpUploads {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if !matches!(opts.mode, object_store::PutMode::Overwrite) {
            return Err(object_store::Error::NotImplemented {
                operation: "conditional PUT".into(),
                implementer: self.to_string(),
            });
        }
        let len = payload.content_length();
        let body: Bytes = if payload.iter().count() == 1 {
            payload.iter().next().cloned().unwrap_or_default()
        } else {
            let mut all = Vec::with_capacity(len);
            for chunk in payload.iter() {
                all.extend_from_slice(chunk);
            }
            all.into()
        };
        let request = self.put_request(location, &opts.attributes).body(body);
        diagnosed(request, self.diagnosis())
            .await
            .map(put_result)
            .map_err(|f| f.into_error(location))
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        match send_for_text(self.upload_url_request(location)).await {
            Ok(_) => {
                let file = spool_file().map_err(generic)?;
                return Ok(Box::new(SpooledPut {
                    location: location.clone(),
                    uploads: self.clone_handles(),
                    file: Arc::new(file),
                    len: 0,
                }));
            }
            // A refused token: say so now, before anything is compressed.
            Err(Failure::Refused(r))
                if matches!(
                    r.status,
                    reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN
                ) =>
            {
                return Err(Failure::Refused(r).into_error(location))
            }
            // 501 (the server takes the bytes), or a server that knows no such request.
            Err(_) => {}
        }
        let (parts, rx) = mpsc::unbounded_channel::<Part>();
        let body = futures::stream::unfold(rx, |mut rx| async move {
            let part = rx.recv().await?;
            let item = match part {
                Part::Data(data, taken) => {
                    // The request has the bytes: the part's future may complete.
                    let _ = taken.send(());
                    Ok(data)
                }
                Part::Abort => Err(std::io::Error::other("the upload was aborted")),
            };
            Some((item, rx))
        });
        let request = self
            .put_request(location, &opts.attributes)
            .body(reqwest::Body::wrap_stream(body));
        let diagnosis = self.diagnosis();
        let task = tokio::spawn(diagnosed(request, diagnosis));
        let response = async move {
            task.await
                .unwrap_or_else(|e| Err(Failure::Other(format!("the upload task failed: {e}"))))
        }
        .boxed()
        .shared();
        Ok(Box::new(ChunkedPut {
            location: location.clone(),
            parts: Some(parts),
            response,
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.reads.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let implementer = self.to_string();
        locations
            .map(move |_| {
                Err(object_store::Error::NotImplemented {
                    operation: "delete".into(),
                    implementer: implementer.clone(),
                })
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.reads.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.reads.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, _: &Path, _: &Path, _: CopyOptions) -> object_store::Result<()> {
        Err(object_store::Error::NotImplemented {
            operation: "copy".into(),
            implementer: self.to_string(),
        })
    }
}

/// What the request body receives: a part, with the signal that the request took it, or the
/// order to fail (which aborts the request mid-body).
enum Part {
    Data(Bytes, oneshot::Sender<()>),
    Abort,
}

/// One chunked `PUT` fed part by part. A part's future completes once the request has taken
/// its bytes, so object_store's `WriteMultipart` bounds the parts held in memory; when the
/// request ends early, every waiting part fails with the request's own failure.
#[derive(Debug)]
struct ChunkedPut {
    location: Path,
    parts: Option<mpsc::UnboundedSender<Part>>,
    response: futures::future::Shared<futures::future::BoxFuture<'static, Sent>>,
}

impl fmt::Debug for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Data(b, _) => write!(f, "Data({} bytes)", b.len()),
            Part::Abort => f.write_str("Abort"),
        }
    }
}

/// The failure of a request that ended before it took every part.
async fn ended_early(
    response: futures::future::Shared<futures::future::BoxFuture<'static, Sent>>,
    location: Path,
) -> object_store::Error {
    match response.await {
        Err(f) => f.into_error(&location),
        Ok(_) => generic(std::io::Error::other(
            "the server answered before the whole object was sent",
        )),
    }
}

#[async_trait]
impl MultipartUpload for ChunkedPut {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let mut taken = Vec::new();
        let mut sent = self.parts.is_some();
        for chunk in data.iter() {
            let (tx, rx) = oneshot::channel();
            sent = sent
                && self
                    .parts
                    .as_ref()
                    .is_some_and(|p| p.send(Part::Data(chunk.clone(), tx)).is_ok());
            taken.push(rx);
        }
        let response = self.response.clone();
        let location = self.location.clone();
        async move {
            let mut all_taken = sent;
            for rx in taken {
                if !all_taken {
                    break;
                }
                // A server that answers without reading the body (a refusal) may never take
                // the rest: its answer ends the wait.
                all_taken = match futures::future::select(rx, response.clone()).await {
                    futures::future::Either::Left((taken, _)) => taken.is_ok(),
                    futures::future::Either::Right(_) => false,
                };
            }
            if all_taken {
                Ok(())
            } else {
                Err(ended_early(response, location).await)
            }
        }
        .boxed()
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        // Closing the channel ends the body.
        self.parts = None;
        self.response
            .clone()
            .await
            .map(put_result)
            .map_err(|f| f.into_error(&self.location))
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        if let Some(parts) = self.parts.take() {
            let _ = parts.send(Part::Abort);
        }
        // The request fails on the aborted body; that failure is the expected outcome.
        let _ = self.response.clone().await;
        Ok(())
    }
}

impl Drop for ChunkedPut {
    fn drop(&mut self) {
        // Dropped without complete(): the body must fail, not end cleanly as a shorter object.
        if let Some(parts) = self.parts.take() {
            let _ = parts.send(Part::Abort);
        }
    }
}

/// What a spooled upload needs of its [`HttpUploads`] to send the file at the end.
#[derive(Debug, Clone)]
struct Handles {
    client: reqwest::Client,
    base: url::Url,
    token: Arc<str>,
}

/// A temporary file, unlinked at once: nothing is left behind whatever happens to the process.
fn spool_file() -> std::io::Result<std::fs::File> {
    use rand_core::RngCore as _;
    let dir = std::env::temp_dir();
    loop {
        let path = dir.join(format!(
            "cachecore-upload-{:016x}",
            rand_core::OsRng.next_u64()
        ));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => {
                std::fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The first `len` bytes of `file`, read 1 MiB at a time, as a request body.
fn file_body(file: Arc<std::fs::File>, len: u64) -> reqwest::Body {
    const CHUNK: u64 = 1 << 20;
    let chunks = futures::stream::unfold(0u64, move |offset| {
        let file = file.clone();
        async move {
            if offset >= len {
                return None;
            }
            let n = (len - offset).min(CHUNK);
            let read = tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt as _;
                let mut buf = vec![0u8; n as usize];
                file.read_exact_at(&mut buf, offset)
                    .map(|()| Bytes::from(buf))
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            Some(match read {
                Ok(b) => (Ok(b), offset + n),
                Err(e) => (Err(e), len),
            })
        }
    });
    reqwest::Body::wrap_stream(chunks)
}

/// The largest object one `PUT` may write on AWS S3. A larger one is sent to the server, which
/// uploads it to the bucket in parts.
const MAX_PRESIGNED_PUT: u64 = 5 << 30;

/// A large object spooled to a temporary file, then sent in one `PUT` of known length: to the
/// bucket by a presigned URL, or to the server when the bucket cannot be reached (or the object
/// is over [`MAX_PRESIGNED_PUT`]).
#[derive(Debug)]
struct SpooledPut {
    location: Path,
    uploads: Handles,
    file: Arc<std::fs::File>,
    len: u64,
}

impl SpooledPut {
    fn put_file(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request
            .header(reqwest::header::CONTENT_LENGTH, self.len)
            .body(file_body(self.file.clone(), self.len))
    }

    fn server_put(&self) -> reqwest::RequestBuilder {
        let h = &self.uploads;
        self.put_file(
            h.client
                .put(object_url(&h.base, &self.location))
                .bearer_auth(&*h.token)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream"),
        )
    }
}

#[async_trait]
impl MultipartUpload for SpooledPut {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let offset = self.len;
        self.len += data.content_length() as u64;
        let file = self.file.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt as _;
                let mut at = offset;
                for chunk in data.iter() {
                    file.write_all_at(chunk, at)?;
                    at += chunk.len() as u64;
                }
                Ok::<(), std::io::Error>(())
            })
            .await
            .map_err(generic)?
            .map_err(generic)
        }
        .boxed()
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        // A fresh URL: compressing a large NAR may have taken longer than an old one lasts.
        let h = &self.uploads;
        let mut ask = object_url(&h.base, &self.location);
        ask.set_query(Some("upload-url"));
        let asked = if self.len <= MAX_PRESIGNED_PUT {
            send_for_text(h.client.post(ask).bearer_auth(&*h.token)).await
        } else {
            Err(Failure::Other("too large for one PUT".to_owned()))
        };
        let direct = match asked.ok().and_then(|u| url::Url::parse(&u).ok()) {
            // No Authorization header: the signature is in the URL, and the token is the
            // server's, not the bucket's.
            Some(url) => send(self.put_file(h.client.put(url))).await,
            None => Err(Failure::Other("no upload URL".to_owned())),
        };
        let sent = match direct {
            Ok(e_tag) => Ok(e_tag),
            // The bucket cannot be reached from here (or no URL): through the server.
            Err(Failure::Transport(_) | Failure::Other(_)) => send(self.server_put()).await,
            // The bucket's refusal is not about this client's token.
            Err(Failure::Refused(r)) => Err(Failure::Other(format!(
                "the bucket refused the upload by the server's presigned URL: {r}"
            ))),
        };
        sent.map(put_result)
            .map_err(|f| f.into_error(&self.location))
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        // Nothing was sent; the spool file is unlinked and goes with its handle.
        Ok(())
    }
}

/// Where a spooled NAR goes, decided by its length alone: no 5 GiB of data is written (the spool
/// file is sparse) and none is sent (the server answers every `PUT` as soon as its head
/// arrives, and hangs up).
#[cfg(test)]
mod over_five_gib {
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    use super::{Handles, SpooledPut, MAX_PRESIGNED_PUT};
    use object_store::MultipartUpload as _;

    /// A server that records each request line with its `content-length`: `POST …?upload-url`
    /// gets a 501 (it takes the bytes itself), a `PUT` a 413 before its body is read.
    fn server() -> (url::Url, Arc<Mutex<Vec<(String, Option<u64>)>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let mut length = None;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().ok();
                        }
                    }
                }
                let status = if line.starts_with("POST") {
                    "501 Not Implemented"
                } else {
                    "413 Payload Too Large"
                };
                record
                    .lock()
                    .unwrap()
                    .push((line.trim().to_owned(), length));
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        });
        (format!("http://127.0.0.1:{port}/").parse().unwrap(), seen)
    }

    /// The requests completing a spooled upload of `len` bytes makes.
    fn requests_completing(len: u64) -> Vec<(String, Option<u64>)> {
        let (base, seen) = server();
        let file = tempfile::tempfile().unwrap();
        file.set_len(len).unwrap();
        let mut put = SpooledPut {
            location: "nar/x.nar.zst".into(),
            uploads: Handles {
                client: reqwest::Client::new(),
                base,
                token: "t".into(),
            },
            file: Arc::new(file),
            len,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let result = rt.block_on(put.complete());
        assert!(result.is_err(), "the server refused the PUT: {result:?}");
        let seen = seen.lock().unwrap().clone();
        seen
    }

    #[test]
    fn a_nar_over_5_gib_goes_to_the_server_without_asking_for_a_presigned_url() {
        let over = MAX_PRESIGNED_PUT + 1;
        assert_eq!(
            requests_completing(over),
            [("PUT /nar/x.nar.zst HTTP/1.1".to_owned(), Some(over))]
        );
    }

    #[test]
    fn a_nar_of_5_gib_asks_for_a_presigned_url_first() {
        let seen = requests_completing(MAX_PRESIGNED_PUT);
        assert_eq!(
            seen,
            [
                ("POST /nar/x.nar.zst?upload-url HTTP/1.1".to_owned(), None),
                (
                    "PUT /nar/x.nar.zst HTTP/1.1".to_owned(),
                    Some(MAX_PRESIGNED_PUT)
                ),
            ],
        );
    }
}

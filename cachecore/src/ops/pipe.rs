//! Bridges between blocking code (packing, hashing, compressing on threads) and async object
//! storage. Each bridge is a bounded channel of chunks, so memory is bounded by
//! `depth × chunk size` whatever the stream's length.

use std::io::{self, Read, Write};

use bytes::{Bytes, BytesMut};
use futures::Stream;
use tokio::sync::mpsc;

/// Chunk size for bridged streams.
pub(crate) const CHUNK: usize = 1 << 20;
/// Chunks in flight per bridge.
pub(crate) const DEPTH: usize = 8;

/// A blocking `Write` whose bytes come out of a [`Stream`] on the async side.
#[derive(Debug)]
pub(crate) struct ChannelSink {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    buf: BytesMut,
    finished: bool,
}

/// A sink and the stream of what is written to it.
pub(crate) fn sink_stream() -> (
    ChannelSink,
    impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static,
) {
    let (tx, rx) = mpsc::channel(DEPTH);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (
        ChannelSink {
            tx,
            buf: BytesMut::with_capacity(CHUNK),
            finished: false,
        },
        stream,
    )
}

impl ChannelSink {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK);
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }

    /// Sends what is buffered and ends the stream normally. A sink dropped without `finish`
    /// (the producer failed) ends its stream with an error instead, so an upload of a partial
    /// stream is abandoned, never completed.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.send()?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for ChannelSink {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self
                .tx
                .blocking_send(Err(io::Error::other("the producer stopped before the end")));
        }
    }
}

impl Write for ChannelSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = (CHUNK - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A blocking `Read` over chunks an async task feeds in.
#[derive(Debug)]
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
    current: Bytes,
}

/// A reader and the sender an async task feeds it with.
pub(crate) fn reader_channel() -> (mpsc::Sender<Result<Bytes, io::Error>>, ChannelReader) {
    let (tx, rx) = mpsc::channel(DEPTH);
    (
        tx,
        ChannelReader {
            rx,
            current: Bytes::new(),
        },
    )
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Feeds an async byte stream into a [`ChannelReader`]'s sender until the stream ends or the
/// reader goes away. An error of the stream reaches the reader inside an `io::Error`, whose
/// `get_ref()` gives it back (so its kind survives the trip).
pub(crate) async fn feed<S, E>(mut stream: S, tx: mpsc::Sender<Result<Bytes, io::Error>>)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    use futures::StreamExt as _;
    while let Some(item) = stream.next().await {
        let item = item.map_err(io::Error::other);
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            return;
        }
    }
}

/// [`feed`], with `observe` seeing every chunk of the stream first; when the reader goes away
/// before the end, the stream is still read to its end for `observe` (one read of the object
/// serves both), until `observe` says it needs no more. Whether `observe` saw the whole
/// stream, to its end, without an error.
pub(crate) async fn feed_observed<S, E>(
    mut stream: S,
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    mut observe: impl FnMut(&[u8]) -> bool,
) -> bool
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    use futures::StreamExt as _;
    let mut reader_gone = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => {
                let more = observe(&chunk);
                if !reader_gone && tx.send(Ok(chunk)).await.is_err() {
                    reader_gone = true;
                }
                if reader_gone && !more {
                    return false;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(io::Error::other(e))).await;
                return false;
            }
        }
    }
    true
}

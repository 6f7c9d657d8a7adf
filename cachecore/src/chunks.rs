//! A bounded, in-order handoff of byte chunks from one thread to another, so that producing a
//! stream (packing a NAR: file system calls) and consuming it (hashing, compressing) run on two
//! cores at once. Memory is bounded: at most `depth` chunks of `chunk_size` bytes are in flight.

use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};

/// The writing half: buffers writes into chunks and hands each full chunk to the reader.
#[derive(Debug)]
pub struct ChunkWriter {
    buf: Vec<u8>,
    chunk_size: usize,
    full: SyncSender<Vec<u8>>,
    empty: Receiver<Vec<u8>>,
}

/// The reading half: yields chunks in order; give each back with [`ChunkReceiver::recycle`].
#[derive(Debug)]
pub struct ChunkReceiver {
    full: Receiver<Vec<u8>>,
    empty: SyncSender<Vec<u8>>,
}

/// A channel of at most `depth` chunks of `chunk_size` bytes.
pub fn chunk_channel(chunk_size: usize, depth: usize) -> (ChunkWriter, ChunkReceiver) {
    let (full_tx, full_rx) = mpsc::sync_channel(depth);
    let (empty_tx, empty_rx) = mpsc::sync_channel(depth + 1);
    (
        ChunkWriter {
            buf: Vec::with_capacity(chunk_size),
            chunk_size,
            full: full_tx,
            empty: empty_rx,
        },
        ChunkReceiver {
            full: full_rx,
            empty: empty_tx,
        },
    )
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self
            .empty
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.chunk_size));
        let chunk = std::mem::replace(&mut self.buf, next);
        self.full
            .send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the chunk consumer stopped"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.chunk_size - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.chunk_size {
            self.send()?;
        }
        Ok(n)
    }

    /// Hands over the partial chunk.
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl Drop for ChunkWriter {
    fn drop(&mut self) {
        let _ = self.send();
    }
}

impl ChunkReceiver {
    /// The next chunk, or `None` once the writer is gone and everything was received.
    pub fn next(&self) -> Option<Vec<u8>> {
        self.full.recv().ok()
    }

    /// Returns a chunk's allocation for reuse.
    pub fn recycle(&self, mut chunk: Vec<u8>) {
        chunk.clear();
        let _ = self.empty.try_send(chunk);
    }
}

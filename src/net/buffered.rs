//! Read-ahead and write-behind buffers that exist only while bytes are in
//! them, under a WebSocket library that wants a byte stream.
//!
//! Owns: one connection's read-ahead (filled by large reads of the socket,
//! handed out in the small pieces the WebSocket codec asks for) and
//! write-behind (frames gather until a flush writes them in one call). Both
//! are given back as soon as they are empty, so an idle WebSocket costs no
//! buffer here, and the codec above can run with small buffers of its own
//! without paying a system call per small read or per frame.
//! Must never: interpret the bytes, or hold more than [`WRITE_BEHIND_LIMIT`]
//! unwritten bytes (a writer beyond that waits for the socket, which is how
//! the client core's write timeout sees a slow reader).

use bytes::{Buf, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One read of the socket: large enough that a busy publisher's frames
/// arrive in few system calls.
pub const READ_AHEAD: usize = 16 * 1024;
/// Bytes gathered before a write goes to the socket without waiting for a flush.
pub const WRITE_BEHIND_LIMIT: usize = 64 * 1024;

/// A stream that can say whether a read would find data without reading,
/// so the read-ahead is only allocated when there is something to put in it.
pub trait ReadReady {
    /// `Ready` when a read may find data (or end of stream). Streams that
    /// cannot tell answer `Ready` at once.
    fn poll_read_ready(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl ReadReady for tokio::net::TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::net::TcpStream::poll_read_ready(self, cx)
    }
}

impl<S> ReadReady for tokio_rustls::server::TlsStream<S> {}

pub struct Buffered<S> {
    inner: S,
    /// Read ahead, not yet handed out. Empty: no allocation.
    read: BytesMut,
    /// Written by the codec, not yet by the socket: `write[written..]`.
    write: Vec<u8>,
    written: usize,
}

impl<S> Buffered<S> {
    pub fn new(inner: S) -> Self {
        Buffered { inner, read: BytesMut::new(), write: Vec::new(), written: 0 }
    }
}

impl<S: AsyncRead + ReadReady + Unpin> AsyncRead for Buffered<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.read.is_empty() {
            // A caller asking for a lot gets it straight from the socket.
            if buf.remaining() >= READ_AHEAD {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            ready!(this.inner.poll_read_ready(cx))?;
            let mut ahead = BytesMut::with_capacity(READ_AHEAD);
            // Readiness can be stale: then nothing is kept while waiting.
            ready!(tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut ahead))?;
            this.read = ahead;
        }
        let n = this.read.len().min(buf.remaining());
        buf.put_slice(&this.read[..n]);
        this.read.advance(n);
        if this.read.is_empty() {
            this.read = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> Buffered<S> {
    /// Writes out what is gathered; gives the buffer back once all is written.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.write.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.write[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.write = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Buffered<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.write.len() - this.written >= WRITE_BEHIND_LIMIT {
            ready!(this.poll_write_out(cx))?;
        }
        this.write.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_out(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_pass_through_in_both_directions_and_buffers_are_given_back() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut server = Buffered::new(server);
        let sent: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        client.write_all(&sent).await.unwrap();
        let mut got = vec![0u8; sent.len()];
        // Small reads, as a WebSocket codec makes them.
        for chunk in got.chunks_mut(300) {
            server.read_exact(chunk).await.unwrap();
        }
        assert_eq!(got, sent);
        assert_eq!(server.read.capacity(), 0, "the read-ahead is given back once handed out");
        for piece in sent.chunks(1000) {
            server.write_all(piece).await.unwrap();
        }
        server.flush().await.unwrap();
        assert_eq!(server.write.capacity(), 0, "the write-behind is given back once written");
        let mut echoed = vec![0u8; sent.len()];
        client.read_exact(&mut echoed).await.unwrap();
        assert_eq!(echoed, sent);
    }
}

//! A connection on the executor's sockets, plaintext or TLS, and its two
//! halves: the native and Kafka listeners (and a follower's connection)
//! read with one task and write with another.
//!
//! A plaintext connection is split into two descriptors of the socket
//! (`dup`), so each task owns its own and neither shares anything. A TLS
//! session is one state machine for both directions, so its halves share
//! it through an `Rc<RefCell<…>>`: both tasks run on the same thread and a
//! borrow lasts one `poll_*` call, never across an await, so a borrow can
//! never find the other one held (no lock, and no way to deadlock).
//!
//! The reader must never write to the socket: glommio keeps one waiter per
//! direction, so a write polled from the reader's task would take the
//! writer's wake-up, and a writer blocked on a full socket would then
//! sleep forever. rustls writes from a read in one case only, a last-gasp
//! alert after the session failed; [`SocketIo`] refuses that write (the
//! alert is not sent; the read fails and the connection closes anyway).

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::{ClientConfig, ServerConfig};

use super::tls::{server_name, TlsError};

/// A TLS session over a socket of the executor.
pub type TlsSession = futures_rustls::TlsStream<SocketIo>;

/// Bytes read from the socket at once under a TLS session, and the most
/// gathered into one write. rustls asks for 4 KiB per read and hands over
/// one record (at most 16 KiB) per write; a syscall per 4 or 16 KiB cost
/// more than the cipher. Each buffer is allocated on first use and kept for
/// the connection's life (allocating and zeroing 64 KiB per read cost a
/// tenth of the CPU): a TLS connection holds up to 128 KiB more than a
/// plaintext one, within `limits.max_connections`.
const SOCKET_BUFFER_BYTES: usize = 64 << 10;

/// The socket under a TLS session: reads and writes in large pieces, and
/// refuses writes while the reading half polls (see the module comment).
pub struct SocketIo {
    stream: TcpStream,
    reader_polling: Rc<Cell<bool>>,
    /// Bytes read from the socket and not yet taken by rustls: `read_buffer[read_start..read_end]`.
    read_buffer: Vec<u8>,
    read_start: usize,
    read_end: usize,
    /// Where a vectored write gathers its pieces.
    write_buffer: Vec<u8>,
}

impl SocketIo {
    fn new(stream: TcpStream) -> SocketIo {
        SocketIo {
            stream,
            reader_polling: Rc::new(Cell::new(false)),
            read_buffer: Vec::new(),
            read_start: 0,
            read_end: 0,
            write_buffer: Vec::new(),
        }
    }

    /// Hand out buffered bytes; `None` when the buffer is empty.
    fn take_buffered(&mut self, buffer: &mut [u8]) -> Option<usize> {
        if self.read_start == self.read_end {
            return None;
        }
        let count = buffer.len().min(self.read_end - self.read_start);
        buffer[..count].copy_from_slice(&self.read_buffer[self.read_start..self.read_start + count]);
        self.read_start += count;
        Some(count)
    }

    fn refuse_if_reading(&self) -> Option<io::Error> {
        self.reader_polling.get().then(|| io::Error::other("a TLS read does not write to the socket"))
    }
}

impl AsyncRead for SocketIo {
    fn poll_read(self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(count) = this.take_buffered(buffer) {
            return Poll::Ready(Ok(count));
        }
        if buffer.len() >= SOCKET_BUFFER_BYTES {
            return Pin::new(&mut this.stream).poll_read(context, buffer);
        }
        if this.read_buffer.len() < SOCKET_BUFFER_BYTES {
            this.read_buffer = vec![0; SOCKET_BUFFER_BYTES];
        }
        match Pin::new(&mut this.stream).poll_read(context, &mut this.read_buffer) {
            Poll::Ready(Ok(count)) => {
                (this.read_start, this.read_end) = (0, count);
                Poll::Ready(Ok(this.take_buffered(buffer).unwrap_or(0)))
            }
            polled => polled,
        }
    }
}

impl AsyncWrite for SocketIo {
    fn poll_write(self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(refused) = this.refuse_if_reading() {
            return Poll::Ready(Err(refused));
        }
        Pin::new(&mut this.stream).poll_write(context, buffer)
    }

    /// rustls hands over its queued records as pieces: gather up to
    /// `SOCKET_BUFFER_BYTES` of them into one send (glommio's socket
    /// would send only the first piece per call).
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        pieces: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(refused) = this.refuse_if_reading() {
            return Poll::Ready(Err(refused));
        }
        let mut gathered = std::mem::take(&mut this.write_buffer);
        gathered.clear();
        gathered.reserve(SOCKET_BUFFER_BYTES);
        for piece in pieces {
            let room = SOCKET_BUFFER_BYTES.saturating_sub(gathered.len());
            if room == 0 {
                break;
            }
            gathered.extend_from_slice(&piece[..piece.len().min(room)]);
        }
        let written = Pin::new(&mut this.stream).poll_write(context, &gathered);
        this.write_buffer = gathered;
        written
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(refused) = this.refuse_if_reading() {
            return Poll::Ready(Err(refused));
        }
        Pin::new(&mut this.stream).poll_flush(context)
    }

    fn poll_close(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(refused) = this.refuse_if_reading() {
            return Poll::Ready(Err(refused));
        }
        Pin::new(&mut this.stream).poll_close(context)
    }
}

/// A connection, before it is split.
pub enum Stream {
    /// No TLS.
    Plain(TcpStream),
    /// TLS, handshake done.
    Tls(Box<TlsSession>),
}

impl Stream {
    /// The socket's descriptor (to shut it down under a blocked task).
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Stream::Plain(stream) => stream.as_raw_fd(),
            Stream::Tls(session) => session.get_ref().0.stream.as_raw_fd(),
        }
    }

    /// The client certificate the TLS handshake verified (mutual TLS), if any.
    pub fn peer_certificate(&self) -> Option<rustls::pki_types::CertificateDer<'static>> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(session) => {
                session.get_ref().1.peer_certificates()?.first().map(|first| first.clone().into_owned())
            }
        }
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

/// Accept a connection: plaintext as it is, or the TLS handshake within
/// `timeout` (a peer that never finishes it must not hold a connection
/// slot forever).
pub async fn accept(stream: TcpStream, tls: Option<Arc<ServerConfig>>, timeout: Duration) -> io::Result<Stream> {
    let _ = stream.set_nodelay(true);
    let Some(config) = tls else { return Ok(Stream::Plain(stream)) };
    let handshake = futures_rustls::TlsAcceptor::from(config).accept(SocketIo::new(stream));
    let session = within(timeout, handshake).await?;
    Ok(Stream::Tls(Box::new(session.into())))
}

/// Connect to `address`, with TLS when `tls` is given (the server's
/// certificate must name the address's host).
pub async fn connect(address: &str, tls: Option<Arc<ClientConfig>>, timeout: Duration) -> io::Result<Stream> {
    let connecting = async { TcpStream::connect(address).await.map_err(io::Error::from) };
    let stream = within(timeout, connecting).await?;
    let _ = stream.set_nodelay(true);
    let Some(config) = tls else { return Ok(Stream::Plain(stream)) };
    let name = server_name(address).map_err(|error: TlsError| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    let handshake = futures_rustls::TlsConnector::from(config).connect(name, SocketIo::new(stream));
    let session = within(timeout, handshake).await?;
    Ok(Stream::Tls(Box::new(session.into())))
}

async fn within<T>(timeout: Duration, work: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    let expired = async {
        crate::runtime::sleep(timeout).await;
        Err(io::Error::new(io::ErrorKind::TimedOut, format!("no TLS handshake within {} ms", timeout.as_millis())))
    };
    futures_lite::future::or(work, expired).await
}

/// The reading half of a connection.
pub enum ReadHalf {
    /// Its own descriptor of the socket.
    Plain(TcpStream),
    /// The shared TLS session, and the flag its socket reads while this
    /// half polls it.
    Tls(Rc<RefCell<TlsSession>>, Rc<Cell<bool>>),
}

/// The writing half of a connection.
pub enum WriteHalf {
    /// Its own descriptor of the socket.
    Plain(TcpStream),
    /// The shared TLS session.
    Tls(Rc<RefCell<TlsSession>>),
}

impl WriteHalf {
    /// The descriptor this half keeps open (to shut the socket down under
    /// a blocked writer): its own on plaintext, the shared one on TLS.
    pub fn raw_fd(&self) -> RawFd {
        match self {
            WriteHalf::Plain(stream) => stream.as_raw_fd(),
            WriteHalf::Tls(session) => session.borrow().get_ref().0.stream.as_raw_fd(),
        }
    }
}

/// Split a connection for a reader task and a writer task.
pub fn split(stream: Stream) -> io::Result<(ReadHalf, WriteHalf)> {
    match stream {
        Stream::Plain(stream) => {
            // SAFETY: dup returns a new descriptor for the same socket, or -1.
            let write_fd = unsafe { libc::dup(stream.as_raw_fd()) };
            if write_fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: write_fd is a fresh, valid socket descriptor owned
            // by the write half from here on, and closed when it drops.
            let writer = unsafe { TcpStream::from_raw_fd(write_fd) };
            Ok((ReadHalf::Plain(stream), WriteHalf::Plain(writer)))
        }
        Stream::Tls(session) => {
            let reader_polling = Rc::clone(&session.get_ref().0.reader_polling);
            let shared = Rc::new(RefCell::new(*session));
            Ok((ReadHalf::Tls(Rc::clone(&shared), reader_polling), WriteHalf::Tls(shared)))
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_read(context, buffer),
            Stream::Tls(session) => Pin::new(session.as_mut()).poll_read(context, buffer),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write(context, buffer),
            Stream::Tls(session) => Pin::new(session.as_mut()).poll_write(context, buffer),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_flush(context),
            Stream::Tls(session) => Pin::new(session.as_mut()).poll_flush(context),
        }
    }

    fn poll_close(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_close(context),
            Stream::Tls(session) => Pin::new(session.as_mut()).poll_close(context),
        }
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ReadHalf::Plain(stream) => Pin::new(stream).poll_read(context, buffer),
            ReadHalf::Tls(session, reader_polling) => {
                reader_polling.set(true);
                let polled = Pin::new(&mut *session.borrow_mut()).poll_read(context, buffer);
                reader_polling.set(false);
                polled
            }
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Plain(stream) => Pin::new(stream).poll_write(context, buffer),
            WriteHalf::Tls(session) => Pin::new(&mut *session.borrow_mut()).poll_write(context, buffer),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(stream) => Pin::new(stream).poll_flush(context),
            WriteHalf::Tls(session) => Pin::new(&mut *session.borrow_mut()).poll_flush(context),
        }
    }

    fn poll_close(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(stream) => Pin::new(stream).poll_close(context),
            WriteHalf::Tls(session) => Pin::new(&mut *session.borrow_mut()).poll_close(context),
        }
    }
}

//! A connection on the executor's sockets, plaintext or TLS, and its two
//! halves: the native and Kafka listeners (and a follower's connection)
//! read with one task and write with another.
//!
//! Either way the connection is split into two descriptors of the socket
//! (`dup`), so each task owns its own. Under TLS each half also owns its
//! direction's record protection ([`session`](super::session)): the
//! halves share nothing but the key schedule, so the reader never writes
//! to the socket (glommio keeps one waiter per direction, and a write
//! polled from the reader's task would take the writer's wake-up).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, ServerConfig};

use super::session::{Established, Inbound, Outbound};
use super::tls::{server_name, TlsError};

/// A TLS connection after its handshake: the socket and both directions.
pub struct TlsSession {
    socket: TcpStream,
    inbound: Inbound,
    outbound: Outbound,
    peer_certificate: Option<CertificateDer<'static>>,
}

impl TlsSession {
    fn new(socket: TcpStream, established: Established) -> TlsSession {
        let Established { inbound, outbound, peer_certificate } = established;
        TlsSession { socket, inbound, outbound, peer_certificate }
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
            Stream::Tls(session) => session.socket.as_raw_fd(),
        }
    }

    /// The client certificate the TLS handshake verified (mutual TLS), if any.
    pub fn peer_certificate(&self) -> Option<rustls::pki_types::CertificateDer<'static>> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(session) => session.peer_certificate.clone(),
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
    let mut socket = stream;
    let established = within(timeout, super::session::accept(config, &mut socket)).await?;
    Ok(Stream::Tls(Box::new(TlsSession::new(socket, established))))
}

/// Connect to `address`, with TLS when `tls` is given (the server's
/// certificate must name the address's host).
pub async fn connect(address: &str, tls: Option<Arc<ClientConfig>>, timeout: Duration) -> io::Result<Stream> {
    let connecting = async { TcpStream::connect(address).await.map_err(io::Error::from) };
    let stream = within(timeout, connecting).await?;
    let _ = stream.set_nodelay(true);
    let Some(config) = tls else { return Ok(Stream::Plain(stream)) };
    let name = server_name(address).map_err(|error: TlsError| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    let mut socket = stream;
    let established = within(timeout, super::session::connect(config, name, &mut socket)).await?;
    Ok(Stream::Tls(Box::new(TlsSession::new(socket, established))))
}

async fn within<T>(timeout: Duration, work: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    let expired = async {
        crate::runtime::sleep(timeout).await;
        Err(io::Error::new(io::ErrorKind::TimedOut, format!("no TLS handshake within {} ms", timeout.as_millis())))
    };
    futures_lite::future::or(work, expired).await
}

/// The reading half of a connection: its own descriptor of the socket,
/// and under TLS the inbound records.
pub struct ReadHalf {
    socket: TcpStream,
    inbound: Option<Inbound>,
}

/// The writing half of a connection: its own descriptor of the socket,
/// and under TLS the outbound records.
pub struct WriteHalf {
    socket: TcpStream,
    outbound: Option<Outbound>,
}

impl WriteHalf {
    /// This half's descriptor (to shut the socket down under a blocked writer).
    pub fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Whether writes are sealed as TLS records (each write its own
    /// records, so many small writes mean many small records).
    pub fn is_encrypted(&self) -> bool {
        self.outbound.is_some()
    }

    /// Fail a write that makes no progress for `timeout` with `TimedOut`:
    /// glommio arms the timer when a write would block and disarms it when
    /// one goes through, so a slow reader is not cut off, only one that
    /// takes nothing (a last few bytes taken when the timer fires restart
    /// it once: one to two timeouts). Covers TLS too (its records go out
    /// through `socket`).
    pub fn set_write_stall_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.socket.set_write_timeout(Some(timeout)).map_err(io::Error::from)
    }
}

/// A second descriptor of `socket`, owned by the returned stream.
fn duplicate(socket: &TcpStream) -> io::Result<TcpStream> {
    // SAFETY: dup returns a new descriptor for the same socket, or -1.
    let descriptor = unsafe { libc::dup(socket.as_raw_fd()) };
    if descriptor < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: descriptor is a fresh, valid socket descriptor owned by the
    // returned stream from here on, and closed when it drops.
    Ok(unsafe { TcpStream::from_raw_fd(descriptor) })
}

/// Split a connection for a reader task and a writer task.
pub fn split(stream: Stream) -> io::Result<(ReadHalf, WriteHalf)> {
    match stream {
        Stream::Plain(socket) => {
            let writer = duplicate(&socket)?;
            Ok((ReadHalf { socket, inbound: None }, WriteHalf { socket: writer, outbound: None }))
        }
        Stream::Tls(session) => {
            let TlsSession { socket, inbound, outbound, .. } = *session;
            let writer = duplicate(&socket)?;
            Ok((ReadHalf { socket, inbound: Some(inbound) }, WriteHalf { socket: writer, outbound: Some(outbound) }))
        }
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &mut [u8]) -> Poll<io::Result<usize>> {
        let ReadHalf { socket, inbound } = self.get_mut();
        match inbound {
            None => Pin::new(socket).poll_read(context, buffer),
            Some(inbound) => inbound.poll_read_with(buffer, |room| Pin::new(&mut *socket).poll_read(context, room)),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &[u8]) -> Poll<io::Result<usize>> {
        let WriteHalf { socket, outbound } = self.get_mut();
        match outbound {
            None => Pin::new(socket).poll_write(context, buffer),
            Some(outbound) => {
                outbound.poll_write_with(buffer, |bytes| Pin::new(&mut *socket).poll_write(context, bytes))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let WriteHalf { socket, outbound } = self.get_mut();
        if let Some(outbound) = outbound {
            std::task::ready!(outbound.poll_flush_with(|bytes| Pin::new(&mut *socket).poll_write(context, bytes)))?;
        }
        Pin::new(socket).poll_flush(context)
    }

    fn poll_close(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let WriteHalf { socket, outbound } = self.get_mut();
        if let Some(outbound) = outbound {
            std::task::ready!(outbound.poll_close_with(|bytes| Pin::new(&mut *socket).poll_write(context, bytes)))?;
        }
        Pin::new(socket).poll_close(context)
    }
}

#[cfg(test)]
impl WriteHalf {
    /// Lower the records one key seals (tests reach the limit quickly).
    pub fn set_confidentiality_limit(&mut self, records: u64) {
        if let Some(outbound) = &mut self.outbound {
            outbound.set_confidentiality_limit(records);
        }
    }
}

//! A TLS session over a tokio socket (the Rust client and CLI): the same
//! handshake and record protection as the node's listeners
//! ([`session`](super::session)), behind tokio's read and write traits.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::compat::TokioAsyncReadCompatExt;

use super::session::{Inbound, Outbound};

/// A client's TLS connection after its handshake.
pub struct TlsStream {
    socket: TcpStream,
    inbound: Inbound,
    outbound: Outbound,
}

/// Run the client side of a handshake with `name` over `socket`.
pub async fn connect(config: Arc<ClientConfig>, name: ServerName<'static>, socket: TcpStream) -> io::Result<TlsStream> {
    let mut compatible = socket.compat();
    let established = super::session::connect(config, name, &mut compatible).await?;
    Ok(TlsStream { socket: compatible.into_inner(), inbound: established.inbound, outbound: established.outbound })
}

impl AsyncRead for TlsStream {
    fn poll_read(self: Pin<&mut Self>, context: &mut Context<'_>, buffer: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let TlsStream { socket, inbound, .. } = self.get_mut();
        let fill = |room: &mut [u8]| {
            let mut room = ReadBuf::new(room);
            std::task::ready!(Pin::new(&mut *socket).poll_read(context, &mut room))?;
            Poll::Ready(Ok(room.filled().len()))
        };
        let count = std::task::ready!(inbound.poll_read_with(buffer.initialize_unfilled(), fill))?;
        buffer.advance(count);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(self: Pin<&mut Self>, context: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let TlsStream { socket, outbound, .. } = self.get_mut();
        outbound.poll_write_with(data, |bytes| Pin::new(&mut *socket).poll_write(context, bytes))
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let TlsStream { socket, outbound, .. } = self.get_mut();
        std::task::ready!(outbound.poll_flush_with(|bytes| Pin::new(&mut *socket).poll_write(context, bytes)))?;
        Pin::new(socket).poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let TlsStream { socket, outbound, .. } = self.get_mut();
        std::task::ready!(outbound.poll_close_with(|bytes| Pin::new(&mut *socket).poll_write(context, bytes)))?;
        Pin::new(socket).poll_shutdown(context)
    }
}

//! A TLS session: rustls drives the handshake (its unbuffered API, so no
//! byte it has not consumed is lost), then hands its keys over
//! (`dangerous_into_kernel_connection`, the kTLS interface) and
//! [`record`](super::record) protects the traffic: an [`Inbound`] and an
//! [`Outbound`] half, independent of each other and of the runtime (each
//! takes the socket as a poll function), so the node's executor and the
//! client's tokio share them.
//!
//! The halves meet only over key updates (TLS 1.3): a peer's KeyUpdate
//! that asks for ours is answered by the outbound half before its next
//! record (RFC 8446 §4.6.3 allows the wait), and the outbound half
//! updates its own keys before the cipher's confidentiality limit. The
//! rustls state both need sits behind a mutex taken only then, never
//! across an await, and never on the per-record path.

use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::pki_types::CertificateDer;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets, ProtocolVersion, SupportedCipherSuite};

use super::record::{
    ContentType, Opener, RecordError, Sealer, Version, MAX_PLAINTEXT_BYTES, MAX_RECORD_BYTES, MAX_RECORD_OVERHEAD_BYTES,
};

/// Bytes read from the socket at once: a syscall per 16 KiB record
/// costs more than its cipher. Allocated once per connection.
const SOCKET_READ_BYTES: usize = 64 << 10;
/// The inbound buffer: a read plus room for the record that straddles it.
const INBOUND_BUFFER_BYTES: usize = SOCKET_READ_BYTES + MAX_RECORD_BYTES;
/// The most plaintext sealed per write, and so sent per syscall: larger
/// than a read, since a consumer's fetch answers are megabytes (256 KiB
/// measured better than 64 KiB). The send buffer grows to it only on
/// connections that write that much.
const SEAL_BATCH_BYTES: usize = 256 << 10;
/// Handshake bytes held at once: rustls joins handshake messages of up
/// to 64 KiB (certificate chains) from several records.
const MAX_HANDSHAKE_BUFFER_BYTES: usize = (64 << 10) + 2 * MAX_RECORD_BYTES;
/// What a handshake starts with (a ClientHello fits), doubled as needed:
/// connections that never finish one hold little.
const HANDSHAKE_BUFFER_START_BYTES: usize = 4 << 10;
/// TLS 1.3 handshake message types seen after the handshake.
const NEW_SESSION_TICKET: u8 = 4;
/// Records in a row that carry no data before the connection is refused
/// (rustls allows 32 empty fragments or key updates).
const MAX_RECORDS_WITHOUT_DATA: u32 = 32;
/// A send buffer larger than this is freed once sent, so connections
/// that once sent a large answer do not keep its buffer.
const RETAINED_SEND_BUFFER_BYTES: usize = 64 << 10;
const KEY_UPDATE: u8 = 24;

/// The side of the handshake, once it is done.
enum Kernel {
    Server(KernelConnection<ServerConnectionData>),
    Client(KernelConnection<ClientConnectionData>),
}

impl Kernel {
    fn update_rx_secret(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Kernel::Server(connection) => connection.update_rx_secret(),
            Kernel::Client(connection) => connection.update_rx_secret(),
        }
    }

    fn update_tx_secret(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Kernel::Server(connection) => connection.update_tx_secret(),
            Kernel::Client(connection) => connection.update_tx_secret(),
        }
    }
}

/// What the two halves share.
struct KeySchedule {
    /// `None` only in tests of the record handling alone.
    kernel: Mutex<Option<Kernel>>,
    /// The peer asked for our key update; the outbound half owes one.
    update_owed: AtomicBool,
}

impl KeySchedule {
    /// Run `work` on rustls's side of the session (briefly: never across an await).
    fn with_kernel<T>(&self, work: impl FnOnce(&mut Kernel) -> Result<T, rustls::Error>) -> io::Result<T> {
        let mut kernel = self.kernel.lock().expect("the key schedule is never poisoned: no panic while held");
        let kernel = kernel.as_mut().ok_or_else(|| io::Error::other("no rustls session behind this record layer"))?;
        work(kernel).map_err(tls_error)
    }
}

/// A session after its handshake.
pub struct Established {
    /// The receiving half.
    pub inbound: Inbound,
    /// The sending half.
    pub outbound: Outbound,
    /// The certificate the peer showed (and the handshake verified), if any.
    pub peer_certificate: Option<CertificateDer<'static>>,
}

fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

fn record_error(error: RecordError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

/// The two rustls connection types, for one handshake driver.
trait Side {
    type Data;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn into_kernel(self) -> Result<(ExtractedSecrets, Kernel), rustls::Error>;
    fn peer_certificate(&self) -> Option<CertificateDer<'static>>;
    fn is_handshaking(&self) -> bool;
}

impl Side for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, ServerConnectionData> {
        self.process_tls_records(incoming)
    }
    fn into_kernel(self) -> Result<(ExtractedSecrets, Kernel), rustls::Error> {
        self.dangerous_into_kernel_connection().map(|(secrets, kernel)| (secrets, Kernel::Server(kernel)))
    }
    fn peer_certificate(&self) -> Option<CertificateDer<'static>> {
        self.peer_certificates()?.first().map(|first| first.clone().into_owned())
    }
    fn is_handshaking(&self) -> bool {
        (**self).is_handshaking()
    }
}

impl Side for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, ClientConnectionData> {
        self.process_tls_records(incoming)
    }
    fn into_kernel(self) -> Result<(ExtractedSecrets, Kernel), rustls::Error> {
        self.dangerous_into_kernel_connection().map(|(secrets, kernel)| (secrets, Kernel::Client(kernel)))
    }
    fn peer_certificate(&self) -> Option<CertificateDer<'static>> {
        self.peer_certificates()?.first().map(|first| first.clone().into_owned())
    }
    fn is_handshaking(&self) -> bool {
        (**self).is_handshaking()
    }
}

/// Run the server side of a handshake on `io`.
pub async fn accept<Io: AsyncRead + AsyncWrite + Unpin>(
    config: Arc<rustls::ServerConfig>,
    io: &mut Io,
) -> io::Result<Established> {
    let connection = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    establish(connection, io).await
}

/// Run the client side of a handshake with `name` on `io`.
pub async fn connect<Io: AsyncRead + AsyncWrite + Unpin>(
    config: Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
    io: &mut Io,
) -> io::Result<Established> {
    let connection = UnbufferedClientConnection::new(config, name).map_err(tls_error)?;
    establish(connection, io).await
}

/// Bytes the handshake read: `buffer[..filled]`, of which rustls has
/// been offered `buffer[..offered]`, whole records one at a time, so that
/// it never reads past the record that ends the handshake: what follows
/// (a KeyUpdate, close_notify, data) is the record layer's to open. And
/// application data rustls decrypted during the handshake, if any.
struct HandshakeInput {
    buffer: Vec<u8>,
    filled: usize,
    offered: usize,
    early_plaintext: Vec<u8>,
}

impl HandshakeInput {
    /// Drop what rustls consumed from the front.
    fn discard(&mut self, count: usize) {
        self.buffer.copy_within(count..self.filled, 0);
        self.filled -= count;
        self.offered -= count;
    }

    /// Offer rustls the next record if all of it has arrived.
    fn offer_next_record(&mut self) -> bool {
        let Some(&[_, _, _, high, low]) = self.buffer[..self.filled].get(self.offered..self.offered + 5) else {
            return false;
        };
        let end = self.offered + 5 + usize::from(u16::from_be_bytes([high, low]));
        if end > self.filled {
            return false;
        }
        self.offered = end;
        true
    }

    /// What the record layer starts from once the handshake is done.
    fn handed_over(&self) -> io::Result<()> {
        if self.offered != 0 {
            let what = "TLS handshake ended inside a handshake message";
            return Err(io::Error::new(io::ErrorKind::InvalidData, what));
        }
        Ok(())
    }
}

async fn establish<S: Side, Io: AsyncRead + AsyncWrite + Unpin>(mut side: S, io: &mut Io) -> io::Result<Established> {
    let buffer = vec![0; HANDSHAKE_BUFFER_START_BYTES];
    let mut input = HandshakeInput { buffer, filled: 0, offered: 0, early_plaintext: Vec::new() };
    drive_handshake(&mut side, io, &mut input).await?;
    let peer_certificate = side.peer_certificate();
    let (secrets, kernel) = side.into_kernel().map_err(tls_error)?;
    let (version, confidentiality_limit) = match &kernel {
        Kernel::Server(connection) => negotiated(connection.protocol_version(), connection.negotiated_cipher_suite()),
        Kernel::Client(connection) => negotiated(connection.protocol_version(), connection.negotiated_cipher_suite()),
    };
    let version = version.ok_or_else(|| record_error(RecordError::Unsupported("a version before TLS 1.2".into())))?;
    let schedule = Arc::new(KeySchedule { kernel: Mutex::new(Some(kernel)), update_owed: AtomicBool::new(false) });
    let inbound = Inbound::new(Opener::new(version, secrets.rx).map_err(record_error)?, input, Arc::clone(&schedule));
    let sealer = Sealer::new(version, secrets.tx).map_err(record_error)?;
    let outbound =
        Outbound { sealer, version, confidentiality_limit, buffer: Vec::new(), sent: 0, closed: false, schedule };
    Ok(Established { inbound, outbound, peer_certificate })
}

fn negotiated(version: ProtocolVersion, suite: SupportedCipherSuite) -> (Option<Version>, u64) {
    let limit = match suite {
        SupportedCipherSuite::Tls13(suite) => suite.common.confidentiality_limit,
        SupportedCipherSuite::Tls12(suite) => suite.common.confidentiality_limit,
    };
    let version = match version {
        ProtocolVersion::TLSv1_3 => Some(Version::Tls13),
        ProtocolVersion::TLSv1_2 => Some(Version::Tls12),
        _ => None,
    };
    (version, limit)
}

/// Step rustls through the handshake until it may send application data.
/// The caller bounds it in time; each step reads, writes or consumes.
async fn drive_handshake<S: Side, Io: AsyncRead + AsyncWrite + Unpin>(
    side: &mut S,
    io: &mut Io,
    input: &mut HandshakeInput,
) -> io::Result<()> {
    let mut outgoing = Vec::new();
    loop {
        let UnbufferedStatus { discard, state } = side.process(&mut input.buffer[..input.offered]);
        let state = match state {
            Ok(state) => state,
            Err(error) => {
                input.discard(discard);
                send_alert(side, io, input, &mut outgoing).await;
                return Err(tls_error(error));
            }
        };
        let next = match state {
            ConnectionState::ReadTraffic(mut traffic) => {
                while let Some(record) = traffic.next_record() {
                    input.early_plaintext.extend_from_slice(record.map_err(tls_error)?.payload);
                }
                Next::Process
            }
            ConnectionState::EncodeTlsData(mut encode) => {
                encode_into(&mut outgoing, |room| encode.encode(room))?;
                Next::Process
            }
            ConnectionState::TransmitTlsData(transmit) => {
                io.write_all(&outgoing).await?;
                io.flush().await?;
                outgoing.clear();
                transmit.done();
                Next::Process
            }
            ConnectionState::BlockedHandshake => Next::Read,
            // A TLS 1.3 server may send after its Finished, before the
            // client's: done only when the handshake is.
            ConnectionState::WriteTraffic(_) => Next::Established,
            other => {
                let what = format!("TLS handshake ended in {other:?}");
                return Err(io::Error::new(io::ErrorKind::ConnectionAborted, what));
            }
        };
        input.discard(discard);
        match next {
            Next::Process => {}
            Next::Established if !side.is_handshaking() => return input.handed_over(),
            Next::Read | Next::Established => {
                while !input.offer_next_record() {
                    read_handshake(io, input).await?;
                }
            }
        }
    }
}

/// After a failed step rustls holds an alert saying why (a refused
/// certificate: UnknownCA, BadCertificate): send it after whatever was
/// encoded before, so the peer's error names the cause and not just a
/// closed connection. Best effort: the handshake has failed either way.
/// rustls is given the same buffer as before (its positions point into it).
async fn send_alert<S: Side, Io: AsyncWrite + Unpin>(
    side: &mut S,
    io: &mut Io,
    input: &mut HandshakeInput,
    outgoing: &mut Vec<u8>,
) {
    if let Ok(ConnectionState::EncodeTlsData(mut encode)) = side.process(&mut input.buffer[..input.offered]).state {
        // On failure the alert is not sent; what was encoded before still is.
        if let Err(error) = encode_into(outgoing, |room| encode.encode(room)) {
            tracing::debug!(target: "ringlog::tls", %error, "TLS alert not encoded");
        }
    }
    if outgoing.is_empty() {
        return;
    }
    // The peer may already be gone: the handshake's own error is what the
    // caller reports, this one is only logged.
    let sent = async { io.write_all(outgoing).await.and(io.flush().await) };
    if let Err(error) = sent.await {
        tracing::debug!(target: "ringlog::tls", %error, "TLS alert not sent after a failed handshake");
    }
}

/// What the handshake does after a step.
enum Next {
    Process,
    Read,
    Established,
}

async fn read_handshake<Io: AsyncRead + Unpin>(io: &mut Io, input: &mut HandshakeInput) -> io::Result<()> {
    if input.filled == input.buffer.len() {
        if input.buffer.len() >= MAX_HANDSHAKE_BUFFER_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "TLS handshake message too large"));
        }
        input.buffer.resize((input.buffer.len() * 2).min(MAX_HANDSHAKE_BUFFER_BYTES), 0);
    }
    match io.read(&mut input.buffer[input.filled..]).await? {
        0 => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed during the TLS handshake")),
        count => {
            input.filled += count;
            Ok(())
        }
    }
}

/// Append what `encode` writes to `outgoing`, growing it as rustls asks.
fn encode_into(
    outgoing: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> io::Result<()> {
    let start = outgoing.len();
    outgoing.resize(start + 4096, 0);
    loop {
        match encode(&mut outgoing[start..]) {
            Ok(written) => {
                outgoing.truncate(start + written);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(needed)) if needed.required_size <= MAX_HANDSHAKE_BUFFER_BYTES => {
                outgoing.resize(start + needed.required_size, 0);
            }
            Err(error) => return Err(io::Error::other(error.to_string())),
        }
    }
}

/// The receiving half: records read from the socket, opened in place.
pub struct Inbound {
    opener: Opener,
    /// `buffer[plaintext]` is opened and not yet read; `buffer[start..end]`
    /// is received and not yet opened.
    buffer: Vec<u8>,
    plaintext: Range<usize>,
    start: usize,
    end: usize,
    /// The peer sent close_notify: reads end (`Ok(0)`).
    peer_closed: bool,
    /// Records since the last one with data (see [`MAX_RECORDS_WITHOUT_DATA`]).
    records_without_data: u32,
    schedule: Arc<KeySchedule>,
}

impl Inbound {
    fn new(opener: Opener, input: HandshakeInput, schedule: Arc<KeySchedule>) -> Inbound {
        let early = input.early_plaintext.len();
        let mut buffer = Vec::with_capacity(INBOUND_BUFFER_BYTES.max(early + input.filled + MAX_RECORD_BYTES));
        buffer.extend_from_slice(&input.early_plaintext);
        buffer.extend_from_slice(&input.buffer[..input.filled]);
        let end = buffer.len();
        buffer.resize(buffer.capacity(), 0);
        Inbound {
            opener,
            buffer,
            plaintext: 0..early,
            start: early,
            end,
            peer_closed: false,
            records_without_data: 0,
            schedule,
        }
    }

    /// An inbound half over `opener` alone, without rustls (tests of the
    /// record handling: a KeyUpdate or a ticket fails here).
    #[cfg(test)]
    pub(crate) fn with_opener(opener: Opener) -> Inbound {
        let input = HandshakeInput { buffer: Vec::new(), filled: 0, offered: 0, early_plaintext: Vec::new() };
        let schedule = Arc::new(KeySchedule { kernel: Mutex::new(None), update_owed: AtomicBool::new(false) });
        Inbound::new(opener, input, schedule)
    }

    /// Read plaintext into `output`; `fill` reads the socket into the
    /// slice it gets (the runtime's poll). `Ok(0)` after close_notify; a
    /// TCP end without it is `UnexpectedEof` (a truncation to notice).
    pub fn poll_read_with(
        &mut self,
        output: &mut [u8],
        mut fill: impl FnMut(&mut [u8]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        loop {
            if !self.plaintext.is_empty() || output.is_empty() {
                let count = output.len().min(self.plaintext.len());
                output[..count].copy_from_slice(&self.buffer[self.plaintext.start..self.plaintext.start + count]);
                self.plaintext.start += count;
                return Poll::Ready(Ok(count));
            }
            if self.peer_closed {
                return Poll::Ready(Ok(0));
            }
            match self.opener.open(&mut self.buffer[self.start..self.end]).map_err(record_error)? {
                Some(opened) => self.take(opened)?,
                None => {
                    self.make_room();
                    let count = std::task::ready!(fill(&mut self.buffer[self.end..]))?;
                    if count == 0 {
                        let what = "peer closed the connection without a TLS close_notify";
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, what)));
                    }
                    self.end += count;
                }
            }
        }
    }

    /// Move the unopened bytes to the front (only when all plaintext is read).
    fn make_room(&mut self) {
        debug_assert!(self.plaintext.is_empty());
        if self.start > 0 {
            self.buffer.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        assert!(self.buffer.len() - self.end >= MAX_RECORD_BYTES, "room for a whole record");
    }

    /// Act on an opened record at `buffer[start..]`. Records that carry
    /// no data (empty ones, warnings, key updates, tickets) are bounded in
    /// a row, as rustls bounds them: each costs a decryption or a key
    /// derivation, and a read loops over them without returning.
    fn take(&mut self, opened: super::record::Opened) -> io::Result<()> {
        let plaintext = self.start + opened.plaintext.start..self.start + opened.plaintext.end;
        self.start += opened.record_bytes;
        let has_data = opened.content_type == ContentType::ApplicationData && !plaintext.is_empty();
        self.records_without_data = if has_data { 0 } else { self.records_without_data + 1 };
        if self.records_without_data > MAX_RECORDS_WITHOUT_DATA {
            let what = format!("peer sent more than {MAX_RECORDS_WITHOUT_DATA} TLS records in a row without data");
            return Err(io::Error::new(io::ErrorKind::InvalidData, what));
        }
        match opened.content_type {
            ContentType::ApplicationData => self.plaintext = plaintext,
            ContentType::Alert => self.take_alert(plaintext)?,
            ContentType::Handshake => self.take_handshake(plaintext)?,
        }
        Ok(())
    }

    fn take_alert(&mut self, alert: Range<usize>) -> io::Result<()> {
        match self.buffer[alert] {
            [_, 0] => self.peer_closed = true,
            // user_canceled: a warning that close_notify follows.
            [_, 90] => {}
            // InvalidData like any TLS failure: callers do not retry it.
            [_, description] => return Err(io::Error::new(io::ErrorKind::InvalidData, alert_text(description))),
            _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed TLS alert")),
        }
        Ok(())
    }

    /// Post-handshake messages, each whole within its record (rustls
    /// sends them so; a message split across records is refused).
    fn take_handshake(&mut self, messages: Range<usize>) -> io::Result<()> {
        if messages.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "empty TLS handshake record"));
        }
        let mut at = messages.start;
        while at < messages.end {
            let Some(&[message_type, length_0, length_1, length_2]) = self.buffer.get(at..at + 4) else {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "TLS handshake message split across records"));
            };
            let length = u32::from_be_bytes([0, length_0, length_1, length_2]) as usize;
            let body = at + 4..at + 4 + length;
            if body.end > messages.end {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "TLS handshake message split across records"));
            }
            match message_type {
                KEY_UPDATE if body.end == messages.end => self.take_key_update(body.clone())?,
                NEW_SESSION_TICKET => self.take_session_ticket(body.clone())?,
                other => {
                    let what = format!("TLS handshake message {other} after the handshake");
                    return Err(io::Error::new(io::ErrorKind::InvalidData, what));
                }
            }
            at = body.end;
        }
        Ok(())
    }

    /// The peer switched keys (and perhaps asks us to): rustls derives
    /// the next secret, and the outbound half answers before its next record.
    fn take_key_update(&mut self, body: Range<usize>) -> io::Result<()> {
        let requested = match self.buffer[body] {
            [0] => false,
            [1] => true,
            _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed TLS KeyUpdate")),
        };
        let secrets = self.schedule.with_kernel(|kernel| kernel.update_rx_secret())?;
        self.opener.rekey(secrets).map_err(record_error)?;
        if requested {
            self.schedule.update_owed.store(true, Ordering::Release);
        }
        Ok(())
    }

    fn take_session_ticket(&mut self, body: Range<usize>) -> io::Result<()> {
        let ticket = &self.buffer[body];
        self.schedule.with_kernel(|kernel| match kernel {
            Kernel::Client(connection) => connection.handle_new_session_ticket(ticket),
            Kernel::Server(_) => Err(rustls::Error::General("a client sent a session ticket".into())),
        })
    }
}

/// What a fatal alert says (RFC 8446 §6.2), named as rustls names it.
fn alert_text(description: u8) -> String {
    format!("peer sent TLS alert {:?}", rustls::AlertDescription::from(description))
}

/// The sending half: plaintext sealed into a buffer, then sent.
pub struct Outbound {
    sealer: Sealer,
    version: Version,
    /// Records one key may seal (the cipher's confidentiality limit).
    confidentiality_limit: u64,
    /// `buffer[sent..]` is sealed and not yet sent.
    buffer: Vec<u8>,
    sent: usize,
    closed: bool,
    schedule: Arc<KeySchedule>,
}

impl Outbound {
    /// Accept up to [`SEAL_BATCH_BYTES`] of `data` once what was sealed
    /// before has gone; `send` writes the socket (the runtime's poll).
    /// Accepted bytes are sent by later writes, flushes or closes.
    pub fn poll_write_with(
        &mut self,
        data: &[u8],
        mut send: impl FnMut(&[u8]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_flush_with(&mut send))?;
        if self.closed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "TLS session closed")));
        }
        let accepted = data.len().min(SEAL_BATCH_BYTES);
        let records = accepted.div_ceil(MAX_PLAINTEXT_BYTES);
        // Exactly what the records (and key updates) take: no doubling.
        self.buffer.reserve_exact(accepted + 2 * records * MAX_RECORD_OVERHEAD_BYTES);
        for piece in data[..accepted].chunks(MAX_PLAINTEXT_BYTES) {
            self.update_keys_if_due()?;
            self.sealer.seal(ContentType::ApplicationData, piece, &mut self.buffer).map_err(record_error)?;
        }
        // Start sending now; if the socket is full the bytes wait, accepted.
        if let Poll::Ready(Err(error)) = self.poll_flush_with(&mut send) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(accepted))
    }

    /// Send everything sealed.
    pub fn poll_flush_with(&mut self, mut send: impl FnMut(&[u8]) -> Poll<io::Result<usize>>) -> Poll<io::Result<()>> {
        while self.sent < self.buffer.len() {
            match std::task::ready!(send(&self.buffer[self.sent..]))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                count => self.sent += count,
            }
        }
        self.buffer.clear();
        if self.buffer.capacity() > RETAINED_SEND_BUFFER_BYTES {
            self.buffer = Vec::new();
        }
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Send what is sealed, then close_notify.
    pub fn poll_close_with(&mut self, mut send: impl FnMut(&[u8]) -> Poll<io::Result<usize>>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_flush_with(&mut send))?;
        if !self.closed {
            self.closed = true;
            self.sealer.seal(ContentType::Alert, &[1, 0], &mut self.buffer).map_err(record_error)?;
        }
        self.poll_flush_with(send)
    }

    /// Switch keys before the next record when the peer asked, or before
    /// the cipher's limit; TLS 1.2 has no key update, so it ends there.
    fn update_keys_if_due(&mut self) -> io::Result<()> {
        let sequence = self.sealer.sequence();
        if self.version == Version::Tls12 {
            if sequence >= self.confidentiality_limit {
                return Err(io::Error::other("TLS 1.2 session reached its cipher's record limit; reconnect"));
            }
            return Ok(());
        }
        // The KeyUpdate is the last record the old key seals.
        let at_limit = sequence + 1 >= self.confidentiality_limit;
        let owed = self.schedule.update_owed.load(Ordering::Acquire)
            && self.schedule.update_owed.swap(false, Ordering::AcqRel);
        if !at_limit && !owed {
            return Ok(());
        }
        // KeyUpdate(update_not_requested), sealed with the old keys.
        self.sealer.seal(ContentType::Handshake, &[KEY_UPDATE, 0, 0, 1, 0], &mut self.buffer).map_err(record_error)?;
        let secrets = self.schedule.with_kernel(|kernel| kernel.update_tx_secret())?;
        self.sealer.rekey(secrets).map_err(record_error)
    }

    /// Set the confidentiality limit (tests reach it without 2^24 records).
    #[cfg(test)]
    pub fn set_confidentiality_limit(&mut self, records: u64) {
        self.confidentiality_limit = records;
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;

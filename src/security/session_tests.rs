//! The record layer against rustls's own (a real peer no one here wrote):
//! every suite and version the node offers, records cut at every size,
//! key updates both ways, close_notify and truncation; and hostile records.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use rustls::crypto::ring::cipher_suite;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{
    ClientConfig, ClientConnection, ServerConfig, StreamOwned, SupportedCipherSuite, SupportedProtocolVersion,
};

use crate::security::record::{ContentType, Opener, RecordError, Sealer, Version, MAX_PLAINTEXT_BYTES};
use crate::security::stream;

struct Identity {
    certificate: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn identity() -> Identity {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("a certificate");
    Identity { certificate: made.cert.der().clone(), key: PrivateKeyDer::Pkcs8(made.key_pair.serialize_der().into()) }
}

fn server_config(identity: &Identity) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(crate::security::tls::provider())
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![identity.certificate.clone()], identity.key.clone_key())
        .expect("server settings");
    config.enable_secret_extraction = true;
    Arc::new(config)
}

/// rustls's buffered client, limited to one suite.
fn client_config(identity: &Identity, suite: SupportedCipherSuite) -> Arc<ClientConfig> {
    let version: &'static SupportedProtocolVersion = suite.version();
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![suite];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(identity.certificate.clone()).expect("a root");
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // The tests read the client's receive sequence number at the end.
    config.enable_secret_extraction = true;
    Arc::new(config)
}

/// What the node's side saw: the bytes it echoed and how reading ended.
struct ServerSaw {
    echoed_bytes: usize,
    end: std::io::Result<()>,
}

/// Accept one TLS connection with the node's stream and echo until the
/// peer's close_notify (then close with ours) or an error; meanwhile
/// `client` runs rustls's client on a thread against it.
fn echo_against<T: Send + 'static>(
    suite: SupportedCipherSuite,
    limit: Option<u64>,
    client: impl FnOnce(Client) -> T + Send + 'static,
) -> (ServerSaw, T) {
    let identity = identity();
    let config = server_config(&identity);
    let client_config = client_config(&identity, suite);
    let (address_sender, address_receiver) = std::sync::mpsc::channel();
    let client_thread = std::thread::spawn(move || {
        let address = address_receiver.recv().expect("an address");
        client(connect(address, client_config))
    });
    let saw = crate::runtime::block_on_executor("tls-echo", move || async move {
        let listener = glommio::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
        address_sender.send(listener.local_addr().expect("an address")).expect("the client");
        let socket = listener.accept().await.expect("a connection");
        let accepted = stream::accept(socket, Some(config), Duration::from_secs(5)).await.expect("a handshake");
        let (mut reader, mut writer) = stream::split(accepted).expect("halves");
        if let Some(records) = limit {
            writer.set_confidentiality_limit(records);
        }
        echo(&mut reader, &mut writer).await
    })
    .expect("the executor");
    (saw, client_thread.join().expect("the client thread"))
}

async fn echo(reader: &mut stream::ReadHalf, writer: &mut stream::WriteHalf) -> ServerSaw {
    let mut buffer = vec![0; 50_000];
    let mut echoed_bytes = 0;
    loop {
        let count = match reader.read(&mut buffer).await {
            Ok(0) => break,
            Ok(count) => count,
            Err(error) => return ServerSaw { echoed_bytes, end: Err(error) },
        };
        let written = writer.write_all(&buffer[..count]).await.and(writer.flush().await);
        if let Err(error) = written {
            return ServerSaw { echoed_bytes, end: Err(error) };
        }
        echoed_bytes += count;
    }
    ServerSaw { echoed_bytes, end: writer.close().await }
}

/// Sizes that cut records everywhere: 1 byte, a record, a record and a
/// byte, several records, more than one socket batch.
const PIECE_SIZES: [usize; 6] = [1, 700, MAX_PLAINTEXT_BYTES, MAX_PLAINTEXT_BYTES + 1, 50_001, 150_000];

type Client = StreamOwned<ClientConnection, std::net::TcpStream>;

fn connect(address: std::net::SocketAddr, config: Arc<ClientConfig>) -> Client {
    let name = "localhost".try_into().expect("a name");
    let connection = ClientConnection::new(config, name).expect("a client");
    StreamOwned::new(connection, std::net::TcpStream::connect(address).expect("a socket"))
}

/// Send each piece and read its echo; `between` runs before each piece.
fn exchange(client: &mut Client, mut between: impl FnMut(&mut Client, usize)) -> usize {
    let mut total = 0;
    for (index, size) in PIECE_SIZES.iter().enumerate() {
        between(client, index);
        let piece: Vec<u8> = (0..*size).map(|at| (at * 31 + index) as u8).collect();
        client.write_all(&piece).expect("a write");
        client.flush().expect("a flush");
        let mut echoed = vec![0; *size];
        client.read_exact(&mut echoed).expect("the echo");
        assert!(echoed == piece, "piece {index} of {size} bytes echoed intact");
        total += size;
    }
    total
}

/// Records the client received under the node's current key: small only
/// if the node switched its sending key along the way.
#[allow(deprecated)]
fn records_under_last_key(client: Client) -> u64 {
    let (connection, _socket) = client.into_parts();
    connection.dangerous_extract_secrets().expect("secrets").rx.0
}

fn close(client: &mut Client) -> usize {
    client.conn.send_close_notify();
    client.flush().expect("close_notify sent");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("the node's close_notify ends the stream cleanly")
}

fn echoes_every_size_with(suite: SupportedCipherSuite) {
    let (saw, (total, after_close)) = echo_against(suite, None, |mut client| {
        let total = exchange(&mut client, |_, _| {});
        (total, close(&mut client))
    });
    saw.end.expect("a clean end");
    assert_eq!(saw.echoed_bytes, total);
    assert_eq!(after_close, 0, "nothing after the node's close_notify");
}

#[test]
fn tls13_aes_128_gcm_records_of_every_size_cross_intact() {
    echoes_every_size_with(cipher_suite::TLS13_AES_128_GCM_SHA256);
}

#[test]
fn tls13_aes_256_gcm_records_of_every_size_cross_intact() {
    echoes_every_size_with(cipher_suite::TLS13_AES_256_GCM_SHA384);
}

#[test]
fn tls13_chacha20_records_of_every_size_cross_intact() {
    echoes_every_size_with(cipher_suite::TLS13_CHACHA20_POLY1305_SHA256);
}

#[test]
fn tls12_aes_gcm_records_with_explicit_nonces_cross_intact() {
    echoes_every_size_with(cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256);
    echoes_every_size_with(cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384);
}

#[test]
fn tls12_chacha20_records_cross_intact() {
    echoes_every_size_with(cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256);
}

#[test]
fn a_peer_key_update_is_followed_and_answered_before_the_next_record() {
    let (saw, (total, records)) = echo_against(cipher_suite::TLS13_AES_128_GCM_SHA256, None, |mut client| {
        // rustls asks for the node's update too (update_requested): the
        // echo after it decrypts only if the node followed, and the
        // client's receive sequence restarts only if the node answered.
        let total = exchange(&mut client, |client, index| {
            if index == PIECE_SIZES.len() - 1 {
                client.conn.refresh_traffic_keys().expect("a key update");
            }
        });
        close(&mut client);
        (total, records_under_last_key(client))
    });
    saw.end.expect("a clean end");
    assert_eq!(saw.echoed_bytes, total);
    // The last piece is 150 000 bytes: at most 10 records of 16 KiB, and
    // close_notify. Without the node's answer every record of the
    // exchange (and the two tickets) would be counted.
    assert!(records <= 11, "the node answered the key update: {records} records under its last key");
}

#[test]
fn the_node_updates_its_keys_before_the_confidentiality_limit() {
    // Two records per key: every piece of the exchange crosses an update.
    let (saw, (total, records)) = echo_against(cipher_suite::TLS13_AES_128_GCM_SHA256, Some(2), |mut client| {
        let total = exchange(&mut client, |_, _| {});
        close(&mut client);
        (total, records_under_last_key(client))
    });
    saw.end.expect("a clean end");
    assert_eq!(saw.echoed_bytes, total);
    // A record and the KeyUpdate per key; close_notify after the last.
    assert!(records <= 3, "the node switched keys at its limit: {records} records under its last key");
}

#[test]
fn tls12_ends_the_session_at_the_confidentiality_limit() {
    let (saw, read) = echo_against(cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, Some(3), |mut client| {
        client.write_all(&[7; 100_000]).expect("a write");
        client.flush().expect("a flush");
        let mut echoed = Vec::new();
        let _ = client.read_to_end(&mut echoed);
        echoed.len()
    });
    let error = saw.end.expect_err("the session ends");
    assert!(error.to_string().contains("record limit"), "{error}");
    assert!(read < 100_000, "the echo stopped at the limit ({read} bytes)");
}

#[test]
fn a_tcp_end_without_close_notify_is_an_unexpected_eof() {
    let (saw, ()) = echo_against(cipher_suite::TLS13_AES_128_GCM_SHA256, None, |mut client| {
        client.write_all(b"hello").expect("a write");
        client.flush().expect("a flush");
        let mut echoed = [0; 5];
        client.read_exact(&mut echoed).expect("the echo");
        client.sock.shutdown(std::net::Shutdown::Both).expect("a shutdown");
    });
    let error = saw.end.expect_err("truncation is noticed");
    assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof, "{error}");
    assert_eq!(saw.echoed_bytes, 5);
}

fn secrets(version: Version) -> (Sealer, Opener) {
    let key = || rustls::crypto::cipher::AeadKey::from([9; 32]);
    let iv = || rustls::crypto::cipher::Iv::new([5; 12]);
    let secrets = || (0, rustls::ConnectionTrafficSecrets::Aes256Gcm { key: key(), iv: iv() });
    (Sealer::new(version, secrets()).expect("a sealer"), Opener::new(version, secrets()).expect("an opener"))
}

#[test]
fn sealed_records_open_in_place_in_both_versions() {
    for version in [Version::Tls12, Version::Tls13] {
        let (mut sealer, mut opener) = secrets(version);
        let mut wire = Vec::new();
        sealer.seal(ContentType::ApplicationData, b"first", &mut wire).expect("sealed");
        sealer.seal(ContentType::Alert, &[1, 0], &mut wire).expect("sealed");
        let first = opener.open(&mut wire).expect("opened").expect("whole");
        assert_eq!(first.content_type, ContentType::ApplicationData);
        assert_eq!(&wire[first.plaintext.clone()], b"first");
        assert_eq!(
            opener.open(&mut wire[first.record_bytes..first.record_bytes + 4]).expect("a part"),
            None,
            "part of a header waits"
        );
        let second = opener.open(&mut wire[first.record_bytes..]).expect("opened").expect("whole");
        assert_eq!(second.content_type, ContentType::Alert);
        assert_eq!(first.record_bytes + second.record_bytes, wire.len());
    }
}

#[test]
fn a_flipped_bit_or_a_replayed_record_fails_authentication() {
    for version in [Version::Tls12, Version::Tls13] {
        let (mut sealer, mut opener) = secrets(version);
        let mut wire = Vec::new();
        sealer.seal(ContentType::ApplicationData, b"payload", &mut wire).expect("sealed");
        let mut flipped = wire.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(opener.open(&mut flipped), Err(RecordError::Forged { sequence: 0 })));
        // The same record again: its sequence number (1 now) is not in it.
        let (_, mut fresh) = secrets(version);
        let mut copy = wire.clone();
        fresh.open(&mut copy).expect("the original opens").expect("whole");
        assert!(matches!(fresh.open(&mut wire), Err(RecordError::Forged { sequence: 1 })));
    }
}

#[test]
fn an_oversized_header_is_refused_before_its_body_arrives() {
    let (_, mut opener) = secrets(Version::Tls13);
    let mut header = [23, 3, 3, 0x48, 0x01];
    assert!(matches!(opener.open(&mut header), Err(RecordError::TooLong { length: 0x4801, .. })));
    let mut old = [23, 3, 1, 0, 40];
    assert!(matches!(opener.open(&mut old), Err(RecordError::BadVersion { major: 3, minor: 1 })));
    let mut short = [23, 3, 3, 0, 3, 1, 2, 3];
    assert!(matches!(opener.open(&mut short), Err(RecordError::TooShort { length: 3 })));
    let mut plain_alert = [21, 3, 3, 0, 2, 1, 0];
    assert!(matches!(opener.open(&mut plain_alert), Err(RecordError::UnexpectedType { content_type: 21, .. })));
}

#[test]
fn a_tls13_record_of_padding_only_has_no_content_type() {
    // Sealed by hand with the same key, nonce (IV ^ sequence 0) and
    // header as additional data: inner plaintext of zeros only.
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[9; 32]).expect("a key"));
    let header = [23, 3, 3, 0, 3 + 16];
    let mut inner = vec![0; 3];
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key([5; 12]), Aad::from(header), &mut inner)
        .expect("sealed");
    let mut wire = header.to_vec();
    wire.extend_from_slice(&inner);
    wire.extend_from_slice(tag.as_ref());
    let (_, mut opener) = secrets(Version::Tls13);
    assert!(matches!(opener.open(&mut wire), Err(RecordError::NoContentType { sequence: 0 })));
}

#[test]
fn an_empty_data_record_is_allowed() {
    let (mut sealer, mut opener) = secrets(Version::Tls13);
    let mut wire = Vec::new();
    sealer.seal(ContentType::ApplicationData, b"", &mut wire).expect("sealed");
    let opened = opener.open(&mut wire).expect("opened").expect("whole");
    assert_eq!((opened.content_type, opened.plaintext.len()), (ContentType::ApplicationData, 0));
}

/// Send `bytes` to the node's TLS accept and return how the handshake ended.
fn accept_raw(bytes: &'static [u8]) -> std::io::Result<()> {
    let identity = identity();
    let config = server_config(&identity);
    let (address_sender, address_receiver) = std::sync::mpsc::channel::<std::net::SocketAddr>();
    let client = std::thread::spawn(move || {
        let mut socket = std::net::TcpStream::connect(address_receiver.recv().expect("an address")).expect("a socket");
        socket.write_all(bytes).expect("the bytes");
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer);
    });
    let ended = crate::runtime::block_on_executor("tls-raw", move || async move {
        let listener = glommio::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
        address_sender.send(listener.local_addr().expect("an address")).expect("the client");
        let socket = listener.accept().await.expect("a connection");
        stream::accept(socket, Some(config), Duration::from_secs(5)).await.map(|_| ())
    })
    .expect("the executor");
    client.join().expect("the client thread");
    ended
}

#[test]
fn a_handshake_header_claiming_more_than_its_record_is_refused_without_a_panic() {
    // A ClientHello header announcing 64 KiB in a 4-byte record: rustls
    // fails the step without an alert, and the node must not call it
    // again with another buffer (that panicked inside rustls).
    let error = accept_raw(&[0x16, 3, 1, 0, 4, 1, 1, 0, 0]).expect_err("refused");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
}

#[test]
fn a_partial_client_hello_followed_by_another_record_type_is_refused_without_a_panic() {
    let error = accept_raw(&[0x16, 3, 1, 0, 4, 1, 0, 0, 40, 0x14, 3, 3, 0, 1, 1]).expect_err("refused");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
}

/// Records sealed with the test keys, handed to an inbound half a few
/// bytes per socket read; what it returns, read with `read_bytes` at a time.
fn dribble(wire: &[u8], step: usize, read_bytes: usize) -> (Vec<u8>, std::io::Result<usize>) {
    let (_, opener) = secrets(Version::Tls13);
    let mut inbound = super::Inbound::with_opener(opener);
    let mut at = 0;
    let mut received = Vec::new();
    let mut output = vec![0; read_bytes];
    loop {
        let fill = |room: &mut [u8]| {
            let count = step.min(room.len()).min(wire.len() - at);
            room[..count].copy_from_slice(&wire[at..at + count]);
            at += count;
            std::task::Poll::Ready(Ok(count))
        };
        match inbound.poll_read_with(&mut output, fill) {
            std::task::Poll::Ready(Ok(0)) => return (received, Ok(0)),
            std::task::Poll::Ready(Ok(count)) => received.extend_from_slice(&output[..count]),
            std::task::Poll::Ready(Err(error)) => return (received, Err(error)),
            std::task::Poll::Pending => unreachable!("the fill is always ready"),
        }
    }
}

fn sealed(records: &[(ContentType, Vec<u8>)]) -> Vec<u8> {
    let (mut sealer, _) = secrets(Version::Tls13);
    let mut wire = Vec::new();
    for (content_type, plaintext) in records {
        sealer.seal(*content_type, plaintext, &mut wire).expect("sealed");
    }
    wire
}

#[test]
fn records_arriving_a_few_bytes_at_a_time_read_back_whole_until_close_notify() {
    let pieces: Vec<Vec<u8>> =
        [1, 5, 4000, MAX_PLAINTEXT_BYTES].iter().map(|size| (0..*size).map(|at| (at % 251) as u8).collect()).collect();
    let mut records: Vec<(ContentType, Vec<u8>)> =
        pieces.iter().map(|piece| (ContentType::ApplicationData, piece.clone())).collect();
    records.push((ContentType::Alert, vec![1, 0]));
    records.push((ContentType::ApplicationData, b"after the end".to_vec()));
    let wire = sealed(&records);
    for (step, read_bytes) in [(1, 7), (3, 1), (4, 100_000), (4093, 3), (70_000, 20_000)] {
        let (received, end) = dribble(&wire, step, read_bytes);
        assert_eq!(received, pieces.concat(), "steps of {step} bytes, reads of {read_bytes}");
        assert_eq!(end.expect("close_notify ends reading"), 0, "nothing after close_notify");
    }
}

#[test]
fn a_fatal_alert_ends_reading_with_its_name() {
    let wire = sealed(&[(ContentType::ApplicationData, b"data".to_vec()), (ContentType::Alert, vec![2, 48])]);
    let (received, end) = dribble(&wire, 5, 100);
    assert_eq!(received, b"data");
    let error = end.expect_err("a fatal alert");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
    assert!(error.to_string().contains("UnknownCA"), "{error}");
}

#[test]
fn a_flood_of_records_without_data_is_refused() {
    let empty = vec![(ContentType::ApplicationData, Vec::new()); 40];
    let (_, end) = dribble(&sealed(&empty), 1 << 20, 100);
    assert!(end.expect_err("refused").to_string().contains("without data"));
    // 32 in a row are fine (close_notify counts), and data resets the count.
    let mut fine = vec![(ContentType::ApplicationData, Vec::new()); 32];
    fine.push((ContentType::ApplicationData, b"x".to_vec()));
    fine.extend(vec![(ContentType::ApplicationData, Vec::new()); 31]);
    fine.push((ContentType::Alert, vec![1, 0]));
    let (received, end) = dribble(&sealed(&fine), 1 << 20, 100);
    assert_eq!((received, end.expect("a clean end")), (b"x".to_vec(), 0));
}

#[test]
fn empty_split_or_unexpected_handshake_records_are_refused() {
    for (what, record) in [
        ("empty", vec![]),
        ("split across records", vec![24, 0, 0, 1]),
        ("a ClientHello after the handshake", vec![1, 0, 0, 0]),
        ("a KeyUpdate not at the record's end", vec![24, 0, 0, 1, 0, 24, 0, 0, 1, 0]),
    ] {
        let (_, end) = dribble(&sealed(&[(ContentType::Handshake, record)]), 100, 100);
        assert_eq!(end.expect_err(what).kind(), std::io::ErrorKind::InvalidData, "{what}");
    }
}

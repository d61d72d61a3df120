use super::*;

// RFC 7677 §3: user "user", password "pencil".
const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const SERVER_FIRST: &str = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const CLIENT_FINAL: &str =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

fn pencil() -> StoredCredential {
    let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    StoredCredential::derive(b"pencil", &salt, 4096).unwrap()
}

fn lookup(name: &str) -> Option<StoredCredential> {
    (name == "user").then(pencil)
}

#[test]
fn the_server_reproduces_the_rfc_7677_exchange() {
    let (server, server_first) = ScramServer::start(CLIENT_FIRST.as_bytes(), SERVER_NONCE, lookup).unwrap();
    assert_eq!(String::from_utf8(server_first).unwrap(), SERVER_FIRST);
    let done = server.finish(CLIENT_FINAL.as_bytes()).unwrap();
    assert_eq!(done.username, "user");
    assert_eq!(String::from_utf8(done.server_final).unwrap(), SERVER_FINAL);
}

#[test]
fn the_client_reproduces_the_rfc_7677_exchange() {
    let (client, client_first) = ScramClient::new("user", b"pencil", CLIENT_NONCE).unwrap();
    assert_eq!(String::from_utf8(client_first).unwrap(), CLIENT_FIRST);
    let (client, client_final) = client.respond(SERVER_FIRST.as_bytes()).unwrap();
    assert_eq!(String::from_utf8(client_final).unwrap(), CLIENT_FINAL);
    client.verify(SERVER_FINAL.as_bytes()).unwrap();
}

fn run(
    username: &str,
    password: &[u8],
    users: impl FnOnce(&str) -> Option<StoredCredential>,
) -> Result<(), ScramError> {
    let (client, client_first) = ScramClient::new(username, password, &new_nonce().unwrap())?;
    let (server, server_first) = ScramServer::start(&client_first, &new_nonce().unwrap(), users)?;
    let (client, client_final) = client.respond(&server_first)?;
    let done = server.finish(&client_final)?;
    client.verify(&done.server_final)
}

#[test]
fn client_and_server_agree_with_random_nonces() {
    run("user", b"pencil", lookup).unwrap();
}

#[test]
fn a_wrong_password_or_an_unknown_user_fails_the_same_way() {
    assert_eq!(run("user", b"pencil2", lookup), Err(ScramError::BadProof));
    assert_eq!(run("nobody", b"pencil", lookup), Err(ScramError::BadProof));
}

#[test]
fn escaped_usernames_round_trip() {
    let name = "a,b=c";
    assert_eq!(encode_saslname(name), "a=2Cb=3Dc");
    assert_eq!(decode_saslname("a=2Cb=3Dc").unwrap(), name);
    let credential = StoredCredential::derive(b"pw", b"salt", 4096).unwrap();
    run(name, b"pw", |found| (found == name).then_some(credential)).unwrap();
    assert_eq!(decode_saslname("a=2"), Err(ScramError::BadSaslName));
    assert_eq!(decode_saslname("a=41"), Err(ScramError::BadSaslName));
    assert_eq!(decode_saslname(""), Err(ScramError::UsernameLength { bytes: 0 }));
}

#[test]
fn channel_binding_and_authorization_identities_are_refused_clearly() {
    let start = |message: &str| ScramServer::start(message.as_bytes(), SERVER_NONCE, lookup).map(|_| ());
    assert_eq!(start("p=tls-unique,,n=user,r=abc"), Err(ScramError::ChannelBindingUnsupported));
    assert_eq!(start("n,a=admin,n=user,r=abc"), Err(ScramError::AuthorizationIdentityUnsupported));
    assert_eq!(start("n,,m=ext,n=user,r=abc"), Err(ScramError::MandatoryExtensionUnsupported));
    assert!(start("y,,n=user,r=abc").is_ok(), "y,, means the client could bind but thinks we cannot");
}

#[test]
fn truncated_and_garbled_messages_are_errors_not_panics() {
    for cut in 0..CLIENT_FIRST.len() {
        let _ = ScramServer::start(&CLIENT_FIRST.as_bytes()[..cut], SERVER_NONCE, lookup);
    }
    for cut in 0..CLIENT_FINAL.len() {
        let (server, _) = ScramServer::start(CLIENT_FIRST.as_bytes(), SERVER_NONCE, lookup).unwrap();
        assert!(server.finish(&CLIENT_FINAL.as_bytes()[..cut]).is_err());
    }
    for cut in 0..SERVER_FIRST.len() {
        let (client, _) = ScramClient::new("user", b"pencil", CLIENT_NONCE).unwrap();
        assert!(client.respond(&SERVER_FIRST.as_bytes()[..cut]).is_err());
    }
    assert!(ScramServer::start(&[0xff, 0xfe, b','], SERVER_NONCE, lookup).is_err());
    assert!(ScramServer::start("n,,n=user,r=a\u{e9}".as_bytes(), SERVER_NONCE, lookup).is_err());
}

#[test]
fn a_wrong_nonce_or_binding_in_the_client_final_message_is_refused() {
    let (server, _) = ScramServer::start(CLIENT_FIRST.as_bytes(), SERVER_NONCE, lookup).unwrap();
    let wrong_nonce = CLIENT_FINAL.replace("k0,p=", "k1,p=");
    assert_eq!(server.finish(wrong_nonce.as_bytes()), Err(ScramError::NonceMismatch));
    let (server, _) = ScramServer::start(CLIENT_FIRST.as_bytes(), SERVER_NONCE, lookup).unwrap();
    let wrong_binding = CLIENT_FINAL.replace("c=biws", "c=eSws");
    assert_eq!(server.finish(wrong_binding.as_bytes()), Err(ScramError::ChannelBindingMismatch));
}

#[test]
fn a_wrong_proof_is_refused() {
    let (server, _) = ScramServer::start(CLIENT_FIRST.as_bytes(), SERVER_NONCE, lookup).unwrap();
    let wrong_proof = CLIENT_FINAL.replace("p=dHzb", "p=dHzc");
    assert_eq!(server.finish(wrong_proof.as_bytes()), Err(ScramError::BadProof));
    let (server, _) = ScramServer::start(CLIENT_FIRST.as_bytes(), SERVER_NONCE, lookup).unwrap();
    assert_eq!(server.finish(b"c=biws,r=x,p=AAAA"), Err(ScramError::NonceMismatch));
}

#[test]
fn the_client_refuses_huge_iteration_counts_and_a_forged_server() {
    let (client, _) = ScramClient::new("user", b"pencil", CLIENT_NONCE).unwrap();
    let huge = SERVER_FIRST.replace("i=4096", "i=4000000000");
    assert_eq!(
        client.respond(huge.as_bytes()).err(),
        Some(ScramError::IterationsOutOfRange { iterations: 4_000_000_000 })
    );
    let (client, _) = ScramClient::new("user", b"pencil", CLIENT_NONCE).unwrap();
    let few = SERVER_FIRST.replace("i=4096", "i=1");
    assert!(client.respond(few.as_bytes()).is_err(), "too few iterations make a cheap offline attack");
    let (client, _) = ScramClient::new("user", b"pencil", CLIENT_NONCE).unwrap();
    let (client, _) = client.respond(SERVER_FIRST.as_bytes()).unwrap();
    assert_eq!(client.verify(b"v=AAAA"), Err(ScramError::ServerSignatureMismatch));
    assert!(StoredCredential::derive(b"pw", b"salt", MAX_ITERATIONS + 1).is_err());
}

#[test]
fn oversized_messages_are_refused_before_parsing() {
    let huge = format!("n,,n=user,r={}", "a".repeat(MAX_MESSAGE_BYTES));
    assert!(matches!(
        ScramServer::start(huge.as_bytes(), SERVER_NONCE, lookup),
        Err(ScramError::MessageTooLong { .. })
    ));
    let long_name = format!("n,,n={},r=abc", "u".repeat(MAX_USERNAME_BYTES + 1));
    assert!(matches!(
        ScramServer::start(long_name.as_bytes(), SERVER_NONCE, lookup),
        Err(ScramError::UsernameLength { .. })
    ));
}

#[test]
fn a_stored_credential_checks_a_plain_password_and_hides_its_keys() {
    let credential = pencil();
    assert!(credential.verify_password(b"pencil"));
    assert!(!credential.verify_password(b"pencil "));
    assert!(format!("{credential:?}").contains("<redacted>"));
}

proptest::proptest! {
    #[test]
    fn arbitrary_client_messages_never_panic_the_server(first in proptest::collection::vec(proptest::num::u8::ANY, 0..300), last in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        if let Ok((server, _)) = ScramServer::start(&first, SERVER_NONCE, lookup) {
            proptest::prop_assert!(server.finish(&last).is_err(), "random bytes are no proof");
        }
        let (server, _) = ScramServer::start(CLIENT_FIRST.as_bytes(), SERVER_NONCE, lookup).unwrap();
        proptest::prop_assert!(server.finish(&last).is_err());
    }
}

#[test]
fn an_unknown_users_salt_is_stable_but_cannot_be_computed_from_the_name() {
    let salt_of = |name: &str| {
        let first = format!("n,,n={name},r=abc");
        let (_, server_first) = ScramServer::start(first.as_bytes(), SERVER_NONCE, |_| None).unwrap();
        String::from_utf8(server_first).unwrap().split(',').find(|part| part.starts_with("s=")).unwrap().to_string()
    };
    assert_eq!(salt_of("nobody"), salt_of("nobody"), "asked twice, the same salt, as for a real user");
    assert_ne!(salt_of("nobody"), salt_of("somebody"));
    let public = format!("s={}", BASE64.encode(&Sha256::digest(b"nobody")[..16]));
    assert_ne!(salt_of("nobody"), public, "not a function of the name alone");
}

#[test]
fn a_librdkafka_repeated_client_nonce_passes_only_when_accepted_and_only_whole() {
    // librdkafka's client-final nonce: its own nonce, then the combined one.
    let repeated = format!("c=biws,r={CLIENT_NONCE}{CLIENT_NONCE}{SERVER_NONCE},p=AAAA");
    let (strict, _) = ScramServer::start(CLIENT_FIRST.as_bytes(), SERVER_NONCE, lookup).unwrap();
    assert_eq!(strict.finish(repeated.as_bytes()), Err(ScramError::NonceMismatch));
    let (tolerant, _) = ScramServer::start(CLIENT_FIRST.as_bytes(), SERVER_NONCE, lookup).unwrap();
    // The nonce passes; the proof (over the message as sent) is what fails.
    let failure = tolerant.accepting_repeated_client_nonce().finish(repeated.as_bytes());
    assert_eq!(failure, Err(ScramError::BadProof));
    for truncated in [format!("{CLIENT_NONCE}{CLIENT_NONCE}{}", &SERVER_NONCE[1..]), format!("x{CLIENT_NONCE}")] {
        let (tolerant, _) = ScramServer::start(CLIENT_FIRST.as_bytes(), SERVER_NONCE, lookup).unwrap();
        let message = format!("c=biws,r={truncated},p=AAAA");
        let failure = tolerant.accepting_repeated_client_nonce().finish(message.as_bytes());
        assert_eq!(failure, Err(ScramError::NonceMismatch), "{truncated}");
    }
}

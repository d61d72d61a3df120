//! What a follower decodes from a leader never panics: answer frames of
//! every replication API, and a fetch answer's lz4 block with its batches
//! (decompression is bounded by the limit whatever the frame claims). What
//! decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlog::protocol::{decode_response, decode_response_shared, encode_response, ApiKey, Response};
use ringlog::replication::answer_body::{decode_fetched, Fetched};

/// Every replication API, taken from the node's own list so a new key is
/// fuzzed from the day it exists.
fn replication_apis() -> Vec<ApiKey> {
    (0..=u16::MAX).filter_map(|value| ApiKey::from_wire(value).ok()).filter(|key| key.is_replication()).collect()
}

fuzz_target!(|data: &[u8]| {
    static APIS: std::sync::OnceLock<Vec<ApiKey>> = std::sync::OnceLock::new();
    let apis = APIS.get_or_init(replication_apis);
    assert!(apis.len() >= 9, "the replication APIs are found");
    let Some((&selector, frame)) = data.split_first() else { return };
    let api_key = apis[selector as usize % apis.len()];
    // A follower decodes over the frame (bodies are slices of it): the
    // same outcome as the copying decoder, and no panic.
    let shared = decode_response_shared(api_key, &bytes::Bytes::copy_from_slice(frame));
    assert_eq!(shared, decode_response(api_key, frame), "shared and copying decoders agree");
    if let Ok((correlation_id, outcome)) = decode_response(api_key, frame) {
        if let Ok(response) = &outcome {
            let mut encoded = Vec::new();
            encode_response(correlation_id, response, &mut encoded);
            assert_eq!(&encoded[4..], frame, "decode/encode round trip");
        }
        if let Ok(Response::ReplicaFetch { uncompressed_bytes, compressed, .. }) = &outcome {
            let _ = decode_fetched(*uncompressed_bytes, compressed, 1 << 20, 1 << 20, &mut Vec::new());
        }
        if let Ok(Response::ReplicaFetchMany { partitions, .. }) = &outcome {
            for fetched in partitions {
                let _ = decode_fetched(fetched.uncompressed_bytes, &fetched.body, 1 << 20, 1 << 20, &mut Vec::new());
            }
        }
    }
    // The raw bytes as an lz4 block too, with a size taken from the data.
    if data.len() >= 4 {
        let claimed = u32::from_le_bytes(data[..4].try_into().unwrap()) % (1 << 21);
        let mut buffer = Vec::new();
        match decode_fetched(claimed, &data[4..], 1 << 20, 1 << 20, &mut buffer) {
            Ok(Fetched::Decompressed(length)) => assert!(length <= buffer.len() && length <= 1 << 20),
            Ok(Fetched::Raw) => assert_eq!(data.len() - 4, claimed as usize, "raw only when the body is the claimed size"),
            Err(_) => {}
        }
    }
});

//! Request-frame decoding never panics; a frame that decodes re-encodes to
//! the same bytes; decoding an owned frame (the server's path) agrees with
//! decoding a slice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlog::protocol::{
    decode_request, decode_request_header, decode_request_owned, encode_request, frame_length,
};

fuzz_target!(|data: &[u8]| {
    if data.len() >= 4 {
        let _ = frame_length(data[..4].try_into().unwrap(), 1 << 20);
    }
    let _ = decode_request_header(data);
    let owned = decode_request_owned(data.to_vec());
    assert_eq!(owned.is_ok(), decode_request(data).is_ok(), "owned and slice decoding agree");
    if let Ok((header, request)) = decode_request(data) {
        assert_eq!(owned.unwrap(), (header, request.clone()));
        let mut encoded = Vec::new();
        encode_request(header.correlation_id, &request, &mut encoded);
        assert_eq!(&encoded[4..], data, "decode/encode round trip");
    }
});

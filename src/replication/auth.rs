//! The replication handshake's challenge–response: the leader sends a
//! random nonce, the follower answers HMAC-SHA256(secret, nonce | node id),
//! and the leader verifies it in constant time. The secret never crosses
//! the wire, and a recorded answer is useless against a new nonce.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of a challenge nonce.
pub const NONCE_BYTES: usize = 32;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], nonce: &[u8], node_id: u64) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(nonce);
    mac.update(&node_id.to_le_bytes());
    mac
}

/// The follower's answer to `nonce`.
pub fn proof(secret: &[u8], nonce: &[u8], node_id: u64) -> Vec<u8> {
    mac(secret, nonce, node_id).finalize().into_bytes().to_vec()
}

/// Whether `answer` proves knowledge of `secret` (constant-time compare).
pub fn verify(secret: &[u8], nonce: &[u8], node_id: u64, answer: &[u8]) -> bool {
    mac(secret, nonce, node_id).verify_slice(answer).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::random::random_bytes;

    #[test]
    fn only_the_right_secret_nonce_and_node_pass() {
        let nonce = random_bytes(NONCE_BYTES).unwrap();
        let answer = proof(b"secret", &nonce, 2);
        assert!(verify(b"secret", &nonce, 2, &answer));
        assert!(!verify(b"other", &nonce, 2, &answer));
        assert!(!verify(b"secret", &nonce, 3, &answer), "bound to the node id");
        assert!(!verify(b"secret", &random_bytes(NONCE_BYTES).unwrap(), 2, &answer), "bound to the nonce");
        assert!(!verify(b"secret", &nonce, 2, &answer[..31]));
    }
}

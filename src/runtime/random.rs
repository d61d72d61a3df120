//! Random bytes from the kernel (nonces, secrets, producer ids).

/// `count` random bytes from the kernel.
pub fn random_bytes(count: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = vec![0u8; count];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

//! Loading the small per-partition metadata files from arbitrary bytes
//! never panics. The first byte selects the file (one target because each
//! is a few lines of fixed layout; the rest of the input is the file; bit 7
//! set means "recompute the trailing CRC" so mutations reach the fields):
//! 0 `recovery-point`: a damaged file loads as 0 (scan everything), a
//!   loaded value came from a CRC-valid file and round-trips;
//! 1 `clean-shutdown`: a damaged marker loads as absent, a loaded one
//!   re-encodes to the same bytes;
//! 2 `fenced`: any existing file fences (damage never lifts a fence), and a
//!   parsed report round-trips through store and load.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlog::storage::fence::{load_fence, store_fence, FENCE_FILE};
use ringlog::storage::markers::{
    encode_clean_shutdown, load_clean_shutdown, load_recovery_point, store_recovery_point, CLEAN_SHUTDOWN_FILE,
    RECOVERY_POINT_FILE,
};

fn crc_valid(bytes: &[u8], magic: &[u8; 4], body_bytes: usize) -> bool {
    bytes.len() == body_bytes + 4
        && &bytes[..4] == magic
        && crc32fast::hash(&bytes[..body_bytes]).to_le_bytes() == bytes[body_bytes..]
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, file)) = data.split_first() else {
        return;
    };
    let mut file = file.to_vec();
    if selector & 0x80 != 0 && file.len() >= 4 {
        let body = file.len() - 4;
        let crc = crc32fast::hash(&file[..body]);
        file[body..].copy_from_slice(&crc.to_le_bytes());
    }
    let file = &file[..];
    let dir = tempfile::tempdir().unwrap();
    match (selector & 0x7f) % 3 {
        0 => {
            std::fs::write(dir.path().join(RECOVERY_POINT_FILE), file).unwrap();
            let point = load_recovery_point(dir.path()).expect("load never fails on content");
            if crc_valid(file, b"RLRP", 12) {
                assert_eq!(point, u64::from_le_bytes(file[4..12].try_into().unwrap()));
            } else {
                assert_eq!(point, 0, "a damaged recovery point must mean: scan everything");
            }
            let reload = tempfile::tempdir().unwrap();
            store_recovery_point(reload.path(), point).unwrap();
            assert_eq!(load_recovery_point(reload.path()).unwrap(), point);
        }
        1 => {
            std::fs::write(dir.path().join(CLEAN_SHUTDOWN_FILE), file).unwrap();
            let marker = load_clean_shutdown(dir.path()).expect("load never fails on content");
            assert_eq!(marker.is_some(), crc_valid(file, b"RLCS", 28), "damaged marker accepted or valid one refused");
            if let Some(marker) = marker {
                assert_eq!(encode_clean_shutdown(&marker), file);
            }
        }
        _ => {
            std::fs::write(dir.path().join(FENCE_FILE), file).unwrap();
            let report =
                load_fence(dir.path()).expect("load never fails on content").expect("a fence file always fences");
            let reload = tempfile::tempdir().unwrap();
            store_fence(reload.path(), &report).unwrap();
            assert_eq!(load_fence(reload.path()).unwrap(), Some(report));
        }
    }
});

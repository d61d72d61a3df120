//! The native client protocol: length-prefixed binary frames. See
//! `docs/PROTOCOL.md`.
//!
//! ```text
//! request  = frame_bytes u32 | api_key u16 | api_version u16 | correlation_id u32 | body
//! response = frame_bytes u32 | correlation_id u32 | error_code u16 | body
//! ```
//! `frame_bytes` counts the bytes after itself and is checked against the
//! configured maximum before any allocation. Strings are `u16 length | UTF-8`,
//! byte strings `u32 length | bytes`, integers little endian. A response
//! with a non-zero error code has the body `message string | leader string`
//! (the leader's client address for `not_leader`, else empty).
//!
//! Every layout is declared once (`field.rs`: `Field`, `record!`,
//! `wire_enum!`; `message.rs`: `messages!`) and both directions are
//! generated from it; `golden_tests.rs` pins the bytes.

mod field;
pub mod kafka;
mod message;
mod request;
mod response;
mod types;
mod wire;

#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod hostile_input_tests;

pub use request::*;
pub use response::*;
pub use types::*;
pub use wire::*;

//! Field layouts: how one value is laid out on the wire, declared once and
//! used by both directions.
//!
//! A [`Field`] encodes and decodes one value; the integers, strings, byte
//! strings, counted vectors, pairs and the sentinel-encoded options
//! implement it here. [`record!`] declares a struct's layout as one ordered
//! field list and generates both directions from it, so a field cannot be
//! added to one side only, and its fixed size (`MIN_BYTES`) is summed from
//! the fields instead of written as a literal. [`wire_enum!`] declares an
//! enum with its wire values. Message bodies are laid out the same way in
//! `message.rs`.

use super::types::*;
use super::wire::*;

/// One value's wire layout.
pub(super) trait Field: Sized {
    /// What decoding errors call the value: one name, or one per part.
    type Names: Copy;
    /// The fewest bytes an encoding takes (an empty string or byte string
    /// counts its length prefix only): the size of a fixed prefix, and the
    /// bound on what a hostile element count may preallocate.
    const MIN_BYTES: usize;
    /// Append the value.
    fn encode(&self, writer: &mut Writer<'_>);
    /// Read the value; never panics, whatever the bytes.
    fn decode(reader: &mut Reader<'_>, names: Self::Names) -> Result<Self, ProtocolError>;
}

/// Little-endian unsigned integers (the [`Reader`] and [`Writer`] methods
/// are named after the types).
macro_rules! integer_fields {
    ($($Integer:ident),*) => {$(
        impl Field for $Integer {
            type Names = &'static str;
            const MIN_BYTES: usize = std::mem::size_of::<$Integer>();
            fn encode(&self, writer: &mut Writer<'_>) {
                writer.$Integer(*self);
            }
            fn decode(reader: &mut Reader<'_>, name: &'static str) -> Result<$Integer, ProtocolError> {
                reader.$Integer(name)
            }
        }
    )*};
}
integer_fields!(u16, u32, u64);

/// Two's complement in a `u64`.
impl Field for i64 {
    type Names = &'static str;
    const MIN_BYTES: usize = 8;
    fn encode(&self, writer: &mut Writer<'_>) {
        writer.u64(*self as u64);
    }
    fn decode(reader: &mut Reader<'_>, name: &'static str) -> Result<i64, ProtocolError> {
        Ok(reader.u64(name)? as i64)
    }
}

/// A `u8`, 1 for true; any non-zero byte reads as true.
impl Field for bool {
    type Names = &'static str;
    const MIN_BYTES: usize = 1;
    fn encode(&self, writer: &mut Writer<'_>) {
        writer.u8(u8::from(*self));
    }
    fn decode(reader: &mut Reader<'_>, name: &'static str) -> Result<bool, ProtocolError> {
        Ok(reader.u8(name)? != 0)
    }
}

/// `u16 length | UTF-8`.
impl Field for String {
    type Names = &'static str;
    const MIN_BYTES: usize = 2;
    fn encode(&self, writer: &mut Writer<'_>) {
        writer.string(self);
    }
    fn decode(reader: &mut Reader<'_>, name: &'static str) -> Result<String, ProtocolError> {
        reader.string(name)
    }
}

/// `u32 length | bytes`.
impl Field for Vec<u8> {
    type Names = &'static str;
    const MIN_BYTES: usize = 4;
    fn encode(&self, writer: &mut Writer<'_>) {
        writer.bytes(self);
    }
    fn decode(reader: &mut Reader<'_>, name: &'static str) -> Result<Vec<u8>, ProtocolError> {
        reader.bytes(name)
    }
}

/// A byte string shared with the frame it was read from (see
/// [`Reader::over_frame`]); on the wire the same as `Vec<u8>`.
impl Field for bytes::Bytes {
    type Names = &'static str;
    const MIN_BYTES: usize = 4;
    fn encode(&self, writer: &mut Writer<'_>) {
        writer.shared_bytes(self);
    }
    fn decode(reader: &mut Reader<'_>, name: &'static str) -> Result<bytes::Bytes, ProtocolError> {
        reader.shared_bytes(name)
    }
}

/// An offset that may be unknown: `u64::MAX` on the wire for `None` (no
/// real offset reaches it).
impl Field for Option<u64> {
    type Names = &'static str;
    const MIN_BYTES: usize = 8;
    fn encode(&self, writer: &mut Writer<'_>) {
        writer.u64(self.unwrap_or(u64::MAX));
    }
    fn decode(reader: &mut Reader<'_>, name: &'static str) -> Result<Option<u64>, ProtocolError> {
        Ok(Some(reader.u64(name)?).filter(|&value| value != u64::MAX))
    }
}

/// An epoch that may be unknown: `known u8 | epoch u32`, the epoch 0 when
/// unknown (every value of a `u32` is a possible epoch, so no sentinel).
impl Field for Option<u32> {
    type Names = (&'static str, &'static str);
    const MIN_BYTES: usize = 1 + 4;
    fn encode(&self, writer: &mut Writer<'_>) {
        writer.u8(u8::from(self.is_some()));
        writer.u32(self.unwrap_or(0));
    }
    fn decode(reader: &mut Reader<'_>, (flag, name): Self::Names) -> Result<Option<u32>, ProtocolError> {
        let known = match reader.u8(flag)? {
            0 => false,
            1 => true,
            _ => return Err(ProtocolError::Invalid("epoch flag must be 0 or 1")),
        };
        let value = reader.u32(name)?;
        if !known && value != 0 {
            return Err(ProtocolError::Invalid("an unknown epoch must be sent as 0"));
        }
        Ok(known.then_some(value))
    }
}

/// Most elements a decoded vector reserves room for before they decode.
pub const MAX_PREALLOCATED_ELEMENTS: usize = 1024;

/// Room to reserve for `count` elements of at least `min_bytes` each when
/// `remaining` bytes are left: what the bytes could hold, at most
/// [`MAX_PREALLOCATED_ELEMENTS`].
pub fn preallocated_elements(count: usize, remaining: usize, min_bytes: usize) -> usize {
    count.min(remaining / min_bytes.max(1)).min(MAX_PREALLOCATED_ELEMENTS)
}

/// `u32 count | element*`.
impl<T: Field> Field for Vec<T> {
    type Names = (&'static str, T::Names);
    const MIN_BYTES: usize = 4;
    fn encode(&self, writer: &mut Writer<'_>) {
        writer.u32(u32::try_from(self.len()).expect("fewer than 2^32 elements"));
        for element in self {
            element.encode(writer);
        }
    }
    fn decode(reader: &mut Reader<'_>, (count_name, names): Self::Names) -> Result<Vec<T>, ProtocolError> {
        const { assert!(T::MIN_BYTES > 0, "an element must take bytes, or a count could be unbounded") };
        let count = reader.u32(count_name)? as usize;
        // A hostile count preallocates no more elements than the frame could
        // hold, and no more than a fixed number (an element in memory can
        // be several times its smallest wire size); past that it grows as
        // elements actually decode.
        let mut elements = Vec::with_capacity(preallocated_elements(count, reader.remaining(), T::MIN_BYTES));
        for _ in 0..count {
            elements.push(T::decode(reader, names)?);
        }
        debug_assert_eq!(elements.len(), count);
        Ok(elements)
    }
}

/// One field after the other.
impl<A: Field, B: Field> Field for (A, B) {
    type Names = (A::Names, B::Names);
    const MIN_BYTES: usize = A::MIN_BYTES + B::MIN_BYTES;
    fn encode(&self, writer: &mut Writer<'_>) {
        self.0.encode(writer);
        self.1.encode(writer);
    }
    fn decode(reader: &mut Reader<'_>, (first, second): Self::Names) -> Result<(A, B), ProtocolError> {
        Ok((A::decode(reader, first)?, B::decode(reader, second)?))
    }
}

/// An acks byte other than 0, 1 or 2.
pub(super) const INVALID_ACKS: ProtocolError = ProtocolError::Invalid("acks must be 0, 1 or 2");

/// `u8`: 0 none, 1 leader, 2 all.
impl Field for Acks {
    type Names = &'static str;
    const MIN_BYTES: usize = 1;
    fn encode(&self, writer: &mut Writer<'_>) {
        writer.u8(*self as u8);
    }
    fn decode(reader: &mut Reader<'_>, name: &'static str) -> Result<Acks, ProtocolError> {
        Acks::from_known(reader.u8(name)?).ok_or(INVALID_ACKS)
    }
}

/// A `u16` this side knows: read as `internal`, an unknown code would not
/// re-encode to what was sent. (A response header's code is read leniently
/// instead, with [`ErrorCode::from_wire`].)
impl Field for ErrorCode {
    type Names = &'static str;
    const MIN_BYTES: usize = 2;
    fn encode(&self, writer: &mut Writer<'_>) {
        writer.u16(*self as u16);
    }
    fn decode(reader: &mut Reader<'_>, name: &'static str) -> Result<ErrorCode, ProtocolError> {
        ErrorCode::from_known(reader.u16(name)?).ok_or(ProtocolError::Invalid("unknown error code"))
    }
}

/// Declares a fieldless enum whose wire value is its discriminant, and
/// `from_known`, the variant of a wire value (`None` for any other), from
/// the same list; with `=> "name"` after each value, also `name()`.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $Enum:ident : $Repr:ident { $( $(#[$variant_meta:meta])* $Variant:ident = $value:literal => $name:literal ),* $(,)? }
    ) => {
        wire_enum! { $(#[$meta])* pub enum $Enum: $Repr { $( $(#[$variant_meta])* $Variant = $value ),* } }

        impl $Enum {
            /// The spec's snake_case name.
            pub fn name(self) -> &'static str {
                match self {
                    $( $Enum::$Variant => $name, )*
                }
            }
        }
    };
    (
        $(#[$meta:meta])*
        pub enum $Enum:ident : $Repr:ident { $( $(#[$variant_meta:meta])* $Variant:ident = $value:literal ),* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr($Repr)]
        pub enum $Enum {
            $( $(#[$variant_meta])* $Variant = $value, )*
        }

        impl $Enum {
            /// The variant whose wire value is `value`, if any.
            pub(super) fn from_known(value: $Repr) -> Option<$Enum> {
                match value {
                    $( $value => Some($Enum::$Variant), )*
                    _ => None,
                }
            }
        }
    };
}
pub(super) use wire_enum;

/// Declares a struct's wire layout: its fields in wire order, each with
/// the name decoding errors give it. Implements [`Field`] for the struct.
macro_rules! record {
    ($Record:ident { $( $field:ident : $Type:ty = $names:expr ),* $(,)? }) => {
        impl $crate::protocol::field::Field for $Record {
            type Names = ();
            const MIN_BYTES: usize = 0 $( + <$Type as $crate::protocol::field::Field>::MIN_BYTES )*;
            fn encode(&self, writer: &mut $crate::protocol::wire::Writer<'_>) {
                $( <$Type as $crate::protocol::field::Field>::encode(&self.$field, writer); )*
            }
            fn decode(
                reader: &mut $crate::protocol::wire::Reader<'_>,
                _: (),
            ) -> Result<$Record, $crate::protocol::types::ProtocolError> {
                // Fields of a struct expression are evaluated in the order written: the wire order.
                Ok($Record { $( $field: <$Type as $crate::protocol::field::Field>::decode(reader, $names)?, )* })
            }
        }
    };
}
pub(super) use record;

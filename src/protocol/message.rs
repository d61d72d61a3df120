//! Message layouts: every body of a message enum declared once, in wire
//! order, with [`messages!`]; encode, decode and the zero-copy paths of a
//! message's trailing byte string are generated from that one entry.

use super::types::*;
use super::wire::*;

/// Where a message's trailing byte string (its last field, and nearly all
/// of its bytes) sits: the zero-copy paths read the fields before it, then
/// move or write the body itself without copying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Trailing {
    /// Its length, as the frame declares it.
    pub bytes: usize,
    /// What errors call it.
    pub name: &'static str,
}

impl Trailing {
    /// A body starting at `start` must end exactly where the frame of
    /// `frame_bytes` does.
    pub fn check_ends_at(self, start: usize, frame_bytes: usize) -> Result<(), ProtocolError> {
        match start.saturating_add(self.bytes).cmp(&frame_bytes) {
            std::cmp::Ordering::Greater => Err(ProtocolError::Truncated(self.name)),
            std::cmp::Ordering::Less => Err(ProtocolError::Invalid("trailing bytes after the body")),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }
}

/// A message enum whose bodies [`messages!`] lays out.
pub(super) trait Message: Sized {
    /// Append the body up to its trailing byte string's length; return the
    /// trailing bytes (empty when the message has none).
    fn encode_head(&self, writer: &mut Writer<'_>) -> &[u8];
    /// Read the body of an `api_key` message up to its trailing byte
    /// string's length; the trailing field is left empty.
    fn decode_head(api_key: ApiKey, reader: &mut Reader<'_>) -> Result<(Self, Option<Trailing>), ProtocolError>;
    /// The trailing byte string, when the message has one.
    fn trailing_mut(&mut self) -> Option<&mut Vec<u8>>;

    /// Append the whole body.
    fn encode_body(&self, writer: &mut Writer<'_>) {
        let trailing = self.encode_head(writer);
        writer.raw(trailing);
    }

    /// Read the whole body of an `api_key` message.
    fn decode_body(api_key: ApiKey, reader: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let (mut message, trailing) = Self::decode_head(api_key, reader)?;
        if let Some(trailing) = trailing {
            let bytes = reader.take(trailing.bytes, trailing.name)?;
            let body = message.trailing_mut().expect("a message with a trailing length has a trailing field");
            debug_assert!(body.is_empty());
            body.extend_from_slice(bytes);
        }
        Ok(message)
    }
}

/// Declares the body layout of every variant of a message enum, one entry
/// per API key: `Key => Variant ()` (no body), `Key => Variant (field: Type
/// = names)` (one unnamed field) or `Key => Variant { field: Type = names,
/// ... }`, optionally ending in `; body = "name"`: a trailing `Vec<u8>`
/// (`u32 length | bytes`) that the zero-copy paths send and receive without
/// copying. Implements [`Message`] and `api_key()` from that one list.
macro_rules! messages {
    ($Enum:ident { $( $key:ident => $Variant:ident $shape:tt ),* $(,)? }) => {
        impl $Enum {
            /// The API key this message belongs to.
            pub fn api_key(&self) -> ApiKey {
                match self {
                    $( messages!(@any $Enum $Variant $shape) => ApiKey::$key, )*
                }
            }
        }

        impl $crate::protocol::message::Message for $Enum {
            fn encode_head(&self, writer: &mut Writer<'_>) -> &[u8] {
                match self {
                    $( messages!(@bind $Enum $Variant $shape) => messages!(@encode writer $shape), )*
                }
            }

            fn decode_head(
                api_key: ApiKey,
                reader: &mut Reader<'_>,
            ) -> Result<(Self, Option<$crate::protocol::message::Trailing>), ProtocolError> {
                Ok(match api_key {
                    $( ApiKey::$key => messages!(@decode reader $Enum $Variant $shape), )*
                })
            }

            fn trailing_mut(&mut self) -> Option<&mut Vec<u8>> {
                match self {
                    $( messages!(@bind_trailing $Enum $Variant $shape) => messages!(@trailing $shape), )*
                }
            }
        }
    };

    // A pattern matching the variant.
    (@any $Enum:ident $Variant:ident ()) => { $Enum::$Variant };
    (@any $Enum:ident $Variant:ident ($($tuple:tt)*)) => { $Enum::$Variant(..) };
    (@any $Enum:ident $Variant:ident {$($fields:tt)*}) => { $Enum::$Variant { .. } };

    // A pattern binding every field.
    (@bind $Enum:ident $Variant:ident ()) => { $Enum::$Variant };
    (@bind $Enum:ident $Variant:ident ($field:ident : $Type:ty = $names:expr)) => { $Enum::$Variant($field) };
    (@bind $Enum:ident $Variant:ident {
        $( $field:ident : $Type:ty = $names:expr ),* $(; $body:ident = $body_name:expr)? $(,)?
    }) => {
        $Enum::$Variant { $( $field, )* $( $body, )? }
    };

    // A pattern binding the trailing field only, and the expression giving it.
    (@bind_trailing $Enum:ident $Variant:ident {
        $( $field:ident : $Type:ty = $names:expr ),* ; $body:ident = $body_name:expr $(,)?
    }) => {
        $Enum::$Variant { $body, .. }
    };
    (@bind_trailing $Enum:ident $Variant:ident $shape:tt) => { messages!(@any $Enum $Variant $shape) };
    (@trailing {
        $( $field:ident : $Type:ty = $names:expr ),* ; $body:ident = $body_name:expr $(,)?
    }) => {
        Some($body)
    };
    (@trailing $shape:tt) => { None };

    // Encoding the bound fields up to the trailing body's length; the body.
    (@encode $writer:ident ()) => { &[] };
    (@encode $writer:ident ($field:ident : $Type:ty = $names:expr)) => {{
        <$Type as $crate::protocol::field::Field>::encode($field, $writer);
        &[]
    }};
    (@encode $writer:ident {
        $( $field:ident : $Type:ty = $names:expr ),* $(; $body:ident = $body_name:expr)? $(,)?
    }) => {{
        $( <$Type as $crate::protocol::field::Field>::encode($field, $writer); )*
        messages!(@encode_trailing $writer $($body)?)
    }};
    (@encode_trailing $writer:ident) => { &[] };
    (@encode_trailing $writer:ident $body:ident) => {{
        $writer.u32(u32::try_from($body.len()).expect("a body shorter than 4 GiB"));
        $body.as_slice()
    }};

    // Decoding the fields up to the trailing body's length.
    (@decode $reader:ident $Enum:ident $Variant:ident ()) => { ($Enum::$Variant, None) };
    (@decode $reader:ident $Enum:ident $Variant:ident ($field:ident : $Type:ty = $names:expr)) => {
        ($Enum::$Variant(<$Type as $crate::protocol::field::Field>::decode($reader, $names)?), None)
    };
    (@decode $reader:ident $Enum:ident $Variant:ident {
        $( $field:ident : $Type:ty = $names:expr ),* $(; $body:ident = $body_name:expr)? $(,)?
    }) => {{
        // Fields of a struct expression are evaluated in the order written: the wire order.
        let message = $Enum::$Variant {
            $( $field: <$Type as $crate::protocol::field::Field>::decode($reader, $names)?, )*
            $( $body: messages!(@empty $body), )?
        };
        (message, messages!(@decode_trailing $reader $($body_name)?))
    }};
    (@empty $body:ident) => { Vec::new() };
    (@decode_trailing $reader:ident) => { None };
    (@decode_trailing $reader:ident $body_name:expr) => {
        Some($crate::protocol::message::Trailing { bytes: $reader.u32($body_name)? as usize, name: $body_name })
    };
}
pub(super) use messages;

//! One way to write an item to the wire, and the `Encoder` impls built on it.
//!
//! Every item a codec sends (a reply built in memory, a frame passed
//! through, a request's wire form) only appends bytes and cannot fail, so
//! the item says how via [`Encode`] and [`encoders!`] gives each codec its
//! [`tokio_util::codec::Encoder`] impls, owned and borrowed, in one line.
//! A macro rather than `impl<T: Encode> Encoder<T> for …`: the list of items
//! per codec is the protocol's direction (a client is sent replies, never
//! requests), which a blanket impl would lose.

use bytes::{Bytes, BytesMut};

/// An item that knows its own wire form.
pub trait Encode {
    /// Appends the wire form of `self` to `dst`.
    fn encode(&self, dst: &mut BytesMut);
}

impl<T: Encode + ?Sized> Encode for &T {
    fn encode(&self, dst: &mut BytesMut) {
        (**self).encode(dst);
    }
}

/// Bytes already in wire form (a backend's raw reply, a merged reply) are
/// written as they are.
impl Encode for Bytes {
    fn encode(&self, dst: &mut BytesMut) {
        dst.extend_from_slice(self);
    }
}

/// Implements `Encoder<T>` and `Encoder<&T>` for `$codec`, for each listed
/// `T: Encode`, with [`crate::ProtoError`] as the error.
macro_rules! encoders {
    ($codec:ty: $($item:ty),+ $(,)?) => {$(
        impl tokio_util::codec::Encoder<$item> for $codec {
            type Error = $crate::ProtoError;

            fn encode(
                &mut self,
                item: $item,
                dst: &mut bytes::BytesMut,
            ) -> Result<(), $crate::ProtoError> {
                $crate::Encode::encode(&item, dst);
                Ok(())
            }
        }

        impl tokio_util::codec::Encoder<&$item> for $codec {
            type Error = $crate::ProtoError;

            fn encode(
                &mut self,
                item: &$item,
                dst: &mut bytes::BytesMut,
            ) -> Result<(), $crate::ProtoError> {
                $crate::Encode::encode(item, dst);
                Ok(())
            }
        }
    )+};
}
pub(crate) use encoders;

#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#[cfg(test)]
mod tests {
    use super::*;

    // A reference encodes as the item does; bytes are written unchanged.
    #[test]
    fn bytes_and_references() {
        let mut dst = BytesMut::new();
        let b = Bytes::from_static(b"+OK\r\n");
        b.encode(&mut dst);
        (&&b).encode(&mut dst);
        assert_eq!(&dst[..], b"+OK\r\n+OK\r\n");
    }
}

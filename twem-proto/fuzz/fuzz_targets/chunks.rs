//! The chunking every stream fuzz target shares: pieces of 1 to 64 bytes,
//! sized by an xorshift seeded from two input bytes, so a crash reproduces
//! from its input alone; and the loop that feeds them to a decoder.

use bytes::BytesMut;
use tokio_util::codec::Decoder;

/// What [`feed`] reports to its target.
pub enum Event<T> {
    /// A decoded item.
    Item(T),
    /// A piece was decoded as far as it goes: `fed` bytes so far, of which
    /// `buffered` are still in the codec's buffer.
    Piece { fed: usize, buffered: usize },
}

/// Feeds the stream after the two seed bytes of `data` to `codec` in the
/// pieces the seed picks, decoding all it can after each piece, and stops
/// at the first error (the stream is then closed, nothing after it counts).
/// Does nothing when `data` has no seed.
pub fn feed<D: Decoder>(data: &[u8], codec: &mut D, mut on: impl FnMut(Event<D::Item>)) {
    let Some((seed, input)) = data.split_first_chunk::<2>() else {
        return;
    };
    let mut buf = BytesMut::new();
    let mut fed = 0usize;
    'outer: for piece in chunks(*seed, input) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(item)) => on(Event::Item(item)),
                Ok(None) => break,
                Err(_) => break 'outer,
            }
        }
        let buffered = buf.len();
        on(Event::Piece { fed, buffered });
    }
}

/// Split `input` into pieces whose sizes follow `seed`.
pub fn chunks(seed: [u8; 2], input: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rng = u16::from_le_bytes(seed) as u32 | 1;
    let mut fed = 0usize;
    std::iter::from_fn(move || {
        if fed >= input.len() {
            return None;
        }
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let n = (rng as usize % 64 + 1).min(input.len() - fed);
        let piece = &input[fed..fed + n];
        fed += n;
        Some(piece)
    })
}

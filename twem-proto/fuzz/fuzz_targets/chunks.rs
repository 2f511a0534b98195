//! The chunking every stream fuzz target shares: pieces of 1 to 64 bytes,
//! sized by an xorshift seeded from two input bytes, so a crash reproduces
//! from its input alone.

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

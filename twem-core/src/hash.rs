//! Key hashes, bit-exact with nutcracker 0.5.0's hashkit, plus hash tags.
//!
//! Every nutcracker hash is reproduced with its quirks, because placement must
//! not move when a deployment swaps nutcracker for twem:
//!
//! - nutcracker reads key bytes through a (signed, on x86-64) `char`, so bytes
//!   `>= 0x80` are sign-extended before they are mixed in (`one_at_a_time`, the
//!   four FNVs, the last odd byte of `hsieh`);
//! - `fnv1a_64` is a 32-bit loop whose constants are the 64-bit FNV ones
//!   truncated to 32 bits;
//! - `crc16` (XMODEM polynomial) keeps its state in 32 bits and is never masked,
//!   so long keys give values above `0xffff`;
//! - `crc32` returns only bits 16..=30 of the CRC-32; `crc32a` is the full CRC-32.
//!
//! [`HashKind::Siphash`] is twem's own addition (SipHash-2-4, zero key, low 32
//! bits): well spread, but nutcracker has no such hash, so a pool using it does
//! not place keys like any nutcracker deployment.
//!
//! ```
//! use twem_core::hash::{HashKind, HashTag};
//!
//! assert_eq!(HashKind::from_name("fnv1a_64"), Some(HashKind::Fnv1a_64));
//! assert_eq!(HashKind::Crc32a.hash(b"a"), 0xe8b7_be43);
//! // Keys sharing a tag hash alike, so they land on the same server.
//! let tag = HashTag::new(b'{', b'}');
//! assert_eq!(tag.apply(b"user:{42}:name"), b"42");
//! ```

use std::fmt;

use md5::{Digest, Md5};

/// One of the key hash functions a pool can be configured with.
///
/// Names and results follow nutcracker 0.5.0 for every variant except
/// [`HashKind::Siphash`]; see [`HashKind::nutcracker_compatible`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)] // variant names mirror nutcracker's config names
pub enum HashKind {
    /// Bob Jenkins' one-at-a-time hash, reading bytes as signed `char`.
    OneAtATime,
    /// The first four bytes of the MD5 digest, little-endian.
    Md5,
    /// CRC-16/XMODEM with nutcracker's unmasked 32-bit state.
    Crc16,
    /// Bits 16..=30 of the CRC-32 (nutcracker's libmemcached-style `crc32`).
    Crc32,
    /// The full CRC-32 (IEEE).
    Crc32a,
    /// 64-bit FNV-1 truncated to its low 32 bits.
    Fnv1_64,
    /// nutcracker's `fnv1a_64`: a 32-bit FNV-1a loop with the 64-bit
    /// constants truncated. This is the default hash.
    #[default]
    Fnv1a_64,
    /// 32-bit FNV-1.
    Fnv1_32,
    /// 32-bit FNV-1a.
    Fnv1a_32,
    /// Paul Hsieh's SuperFastHash.
    Hsieh,
    /// MurmurHash2 seeded with `0xdeadbeef * len`.
    Murmur,
    /// Bob Jenkins' lookup3 `hashlittle` with initval 13.
    Jenkins,
    /// SipHash-2-4 with a zero key, low 32 bits. Not in nutcracker.
    Siphash,
}

impl HashKind {
    /// Every hash, nutcracker's twelve in their documented order, then
    /// `siphash`.
    pub const ALL: [HashKind; 13] = [
        HashKind::OneAtATime,
        HashKind::Md5,
        HashKind::Crc16,
        HashKind::Crc32,
        HashKind::Crc32a,
        HashKind::Fnv1_64,
        HashKind::Fnv1a_64,
        HashKind::Fnv1_32,
        HashKind::Fnv1a_32,
        HashKind::Hsieh,
        HashKind::Murmur,
        HashKind::Jenkins,
        HashKind::Siphash,
    ];

    /// The name used for this hash in `nutcracker.yml` (`hash: <name>`).
    pub fn name(self) -> &'static str {
        match self {
            HashKind::OneAtATime => "one_at_a_time",
            HashKind::Md5 => "md5",
            HashKind::Crc16 => "crc16",
            HashKind::Crc32 => "crc32",
            HashKind::Crc32a => "crc32a",
            HashKind::Fnv1_64 => "fnv1_64",
            HashKind::Fnv1a_64 => "fnv1a_64",
            HashKind::Fnv1_32 => "fnv1_32",
            HashKind::Fnv1a_32 => "fnv1a_32",
            HashKind::Hsieh => "hsieh",
            HashKind::Murmur => "murmur",
            HashKind::Jenkins => "jenkins",
            HashKind::Siphash => "siphash",
        }
    }

    /// The hash configured as `name`, matched exactly as nutcracker does
    /// (case-sensitive); `None` for an unknown name.
    pub fn from_name(name: &str) -> Option<HashKind> {
        HashKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Whether a pool using this hash places keys exactly as nutcracker
    /// 0.5.0 does. Only [`HashKind::Siphash`] is not.
    pub fn nutcracker_compatible(self) -> bool {
        self != HashKind::Siphash
    }

    /// Hashes `key` (the whole key: apply a [`HashTag`] first if the pool has
    /// one). An empty key gets the function's own value here; the ring, like
    /// nutcracker, never hashes an empty key but places it at 0.
    pub fn hash(self, key: &[u8]) -> u32 {
        match self {
            HashKind::OneAtATime => one_at_a_time(key),
            HashKind::Md5 => md5(key),
            HashKind::Crc16 => crc16(key),
            // nutcracker keeps bits 16..=30 only, a libmemcached legacy.
            HashKind::Crc32 => (crc32fast::hash(key) >> 16) & 0x7fff,
            HashKind::Crc32a => crc32fast::hash(key),
            HashKind::Fnv1_64 => fnv1_64(key),
            HashKind::Fnv1a_64 => fnv1a_64(key),
            HashKind::Fnv1_32 => fnv1_32(key),
            HashKind::Fnv1a_32 => fnv1a_32(key),
            HashKind::Hsieh => hsieh(key),
            HashKind::Murmur => murmur(key),
            HashKind::Jenkins => jenkins(key),
            HashKind::Siphash => siphash(key),
        }
    }
}

impl fmt::Display for HashKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A two-byte hash tag such as `{}`: when a key contains `{...}`, only the part
/// inside is hashed, so related keys can be kept on one server.
///
/// The rule is nutcracker's: the tag applies only when the open byte is found,
/// the close byte is found after it, and the content between them is
/// non-empty; otherwise the whole key is hashed. Open and close may be the
/// same byte (`$$`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HashTag {
    open: u8,
    close: u8,
}

impl HashTag {
    /// A tag delimited by `open` and `close`.
    pub fn new(open: u8, close: u8) -> HashTag {
        HashTag { open, close }
    }

    /// The tag spelled as in `nutcracker.yml` (`hash_tag: "{}"`): exactly two
    /// bytes, else `None`.
    pub fn from_bytes(tag: &[u8]) -> Option<HashTag> {
        match tag {
            [open, close] => Some(HashTag::new(*open, *close)),
            _ => None,
        }
    }

    /// The opening byte.
    pub fn open(&self) -> u8 {
        self.open
    }

    /// The closing byte.
    pub fn close(&self) -> u8 {
        self.close
    }

    /// The part of `key` that is hashed: the content of the first tag, or the
    /// whole key when the tag is absent, unclosed or empty.
    pub fn apply<'a>(&self, key: &'a [u8]) -> &'a [u8] {
        let Some(start) = memchr_byte(self.open, key) else {
            return key;
        };
        let rest = key.get(start + 1..).unwrap_or_default();
        match memchr_byte(self.close, rest) {
            Some(len) if len > 0 => rest.get(..len).unwrap_or(key),
            _ => key,
        }
    }
}

impl fmt::Display for HashTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}",
            self.open.escape_ascii(),
            self.close.escape_ascii()
        )
    }
}

fn memchr_byte(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// A key byte as nutcracker sees it through a signed `char`, widened to 32
/// bits: bytes `>= 0x80` become `0xffffff80..`.
#[inline]
fn signed32(byte: u8) -> u32 {
    byte as i8 as u32
}

fn one_at_a_time(key: &[u8]) -> u32 {
    let mut value: u32 = 0;
    for &byte in key {
        value = value.wrapping_add(signed32(byte));
        value = value.wrapping_add(value << 10);
        value ^= value >> 6;
    }
    value = value.wrapping_add(value << 3);
    value ^= value >> 11;
    value.wrapping_add(value << 15)
}

fn md5(key: &[u8]) -> u32 {
    let digest = Md5::digest(key);
    u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// CRC-16/XMODEM (polynomial 0x1021), the table nutcracker uses.
const CRC16_TABLE: [u16; 256] = crc16_table();

const fn crc16_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

fn crc16(key: &[u8]) -> u32 {
    // The state is 32 bits wide and never masked, as in nutcracker: bits
    // shifted past 16 stay in the result.
    let mut crc: u32 = 0;
    for &byte in key {
        let index = ((crc >> 8) ^ u32::from(byte)) & 0xff;
        crc = (crc << 8) ^ u32::from(CRC16_TABLE[index as usize]);
    }
    crc
}

const FNV_64_INIT: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_64_PRIME: u64 = 0x0000_0100_0000_01b3;
const FNV_32_INIT: u32 = 0x811c_9dc5;
const FNV_32_PRIME: u32 = 0x0100_0193;

fn fnv1_64(key: &[u8]) -> u32 {
    let mut hash = FNV_64_INIT;
    for &byte in key {
        hash = hash.wrapping_mul(FNV_64_PRIME);
        hash ^= byte as i8 as u64;
    }
    hash as u32
}

fn fnv1a_64(key: &[u8]) -> u32 {
    // nutcracker truncates both 64-bit constants and runs a 32-bit loop.
    let mut hash = FNV_64_INIT as u32;
    for &byte in key {
        hash ^= signed32(byte);
        hash = hash.wrapping_mul(FNV_64_PRIME as u32);
    }
    hash
}

fn fnv1_32(key: &[u8]) -> u32 {
    let mut hash = FNV_32_INIT;
    for &byte in key {
        hash = hash.wrapping_mul(FNV_32_PRIME);
        hash ^= signed32(byte);
    }
    hash
}

fn fnv1a_32(key: &[u8]) -> u32 {
    let mut hash = FNV_32_INIT;
    for &byte in key {
        hash ^= signed32(byte);
        hash = hash.wrapping_mul(FNV_32_PRIME);
    }
    hash
}

fn hsieh(key: &[u8]) -> u32 {
    if key.is_empty() {
        return 0;
    }
    let get16 = |pair: &[u8]| match pair {
        [lo, hi, ..] => u32::from(*lo) | (u32::from(*hi) << 8),
        _ => 0,
    };
    let mut hash: u32 = 0;
    let mut chunks = key.chunks_exact(4);
    for chunk in &mut chunks {
        hash = hash.wrapping_add(get16(chunk));
        let tmp = (get16(chunk.get(2..).unwrap_or_default()) << 11) ^ hash;
        hash = (hash << 16) ^ tmp;
        hash = hash.wrapping_add(hash >> 11);
    }
    match chunks.remainder() {
        [a, b, c] => {
            hash = hash.wrapping_add(get16(&[*a, *b]));
            hash ^= hash << 16;
            // The third byte goes through a signed `char` in nutcracker.
            hash ^= signed32(*c) << 18;
            hash = hash.wrapping_add(hash >> 11);
        }
        [a, b] => {
            hash = hash.wrapping_add(get16(&[*a, *b]));
            hash ^= hash << 11;
            hash = hash.wrapping_add(hash >> 17);
        }
        [a] => {
            hash = hash.wrapping_add(u32::from(*a));
            hash ^= hash << 10;
            hash = hash.wrapping_add(hash >> 1);
        }
        _ => {}
    }
    hash ^= hash << 3;
    hash = hash.wrapping_add(hash >> 5);
    hash ^= hash << 4;
    hash = hash.wrapping_add(hash >> 17);
    hash ^= hash << 25;
    hash.wrapping_add(hash >> 6)
}

fn murmur(key: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // nutcracker truncates the length to 32 bits for the seed.
    let len = key.len() as u32;
    let mut h = 0xdead_beef_u32.wrapping_mul(len) ^ len;
    let mut chunks = key.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = match chunk {
            [a, b, c, d] => u32::from_le_bytes([*a, *b, *c, *d]),
            _ => 0,
        };
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if let Some(&b) = tail.get(2) {
        h ^= u32::from(b) << 16;
    }
    if let Some(&b) = tail.get(1) {
        h ^= u32::from(b) << 8;
    }
    if let Some(&b) = tail.first() {
        h ^= u32::from(b);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

fn jenkins(key: &[u8]) -> u32 {
    // lookup3 `hashlittle`; nutcracker's three read paths (aligned words,
    // half-words, bytes) all reduce to this on little-endian machines.
    let init = 0xdead_beef_u32
        .wrapping_add(key.len() as u32)
        .wrapping_add(13);
    let (mut a, mut b, mut c) = (init, init, init);
    let word = |bytes: &[u8]| {
        let mut w = [0u8; 4];
        for (dst, src) in w.iter_mut().zip(bytes) {
            *dst = *src;
        }
        u32::from_le_bytes(w)
    };
    let mut rest = key;
    while rest.len() > 12 {
        let Some((block, tail)) = rest.split_first_chunk::<12>() else {
            break;
        };
        let [a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3] = *block;
        a = a.wrapping_add(u32::from_le_bytes([a0, a1, a2, a3]));
        b = b.wrapping_add(u32::from_le_bytes([b0, b1, b2, b3]));
        c = c.wrapping_add(u32::from_le_bytes([c0, c1, c2, c3]));
        jenkins_mix(&mut a, &mut b, &mut c);
        rest = tail;
    }
    if rest.is_empty() {
        return c;
    }
    a = a.wrapping_add(word(rest));
    b = b.wrapping_add(word(rest.get(4..).unwrap_or_default()));
    c = c.wrapping_add(word(rest.get(8..).unwrap_or_default()));
    jenkins_final(&mut a, &mut b, &mut c);
    c
}

#[inline]
fn jenkins_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

#[inline]
fn jenkins_final(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

fn siphash(key: &[u8]) -> u32 {
    // A fixed zero key keeps placement stable across restarts and machines;
    // SipHash is used for its spread, not as a defence against chosen keys.
    siphasher::sip::SipHasher::new_with_keys(0, 0).hash(key) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every name round-trips, and the names are the config spellings.
    #[test]
    fn names_round_trip() {
        for kind in HashKind::ALL {
            assert_eq!(HashKind::from_name(kind.name()), Some(kind));
            assert_eq!(kind.to_string(), kind.name());
        }
        assert_eq!(HashKind::from_name("FNV1A_64"), None);
        assert_eq!(HashKind::from_name("sha1"), None);
        assert_eq!(HashKind::from_name(""), None);
    }

    // nutcracker's default hash is fnv1a_64.
    #[test]
    fn default_is_fnv1a_64() {
        assert_eq!(HashKind::default(), HashKind::Fnv1a_64);
    }

    // Only siphash is flagged as not placing keys like nutcracker.
    #[test]
    fn only_siphash_is_incompatible() {
        let incompatible: Vec<_> = HashKind::ALL
            .into_iter()
            .filter(|k| !k.nutcracker_compatible())
            .collect();
        assert_eq!(incompatible, vec![HashKind::Siphash]);
    }

    // siphash is SipHash-2-4 with a zero key, truncated to the low 32 bits.
    #[test]
    fn siphash_matches_siphasher_zero_key() {
        let reference = siphasher::sip::SipHasher24::new_with_keys(0, 0);
        for key in [&b""[..], b"a", b"foo", b"placeholder", &[0xff; 100]] {
            assert_eq!(HashKind::Siphash.hash(key), reference.hash(key) as u32);
        }
    }

    // A published SipHash-2-4 value pins the zero key independently of the
    // crate: SipHash-2-4(k = 0, "") = 0x1e924b9d737700d7.
    #[test]
    fn siphash_empty_key_vector() {
        assert_eq!(HashKind::Siphash.hash(b""), 0x7377_00d7);
    }

    // The XMODEM table entries nutcracker ships start 0x0000, 0x1021, 0x2042
    // and end 0x1ef0.
    #[test]
    fn crc16_table_is_xmodem() {
        assert_eq!(&CRC16_TABLE[..3], &[0x0000, 0x1021, 0x2042]);
        assert_eq!(CRC16_TABLE[255], 0x1ef0);
    }

    // crc16's state is not masked: three bytes already exceed 16 bits.
    #[test]
    fn crc16_is_unmasked() {
        assert!(HashKind::Crc16.hash(b"foo") > 0xffff);
    }

    // crc32 is bits 16..=30 of crc32a.
    #[test]
    fn crc32_is_high_bits_of_crc32a() {
        for key in [&b"a"[..], b"foo", b"placeholder"] {
            let full = HashKind::Crc32a.hash(key);
            assert_eq!(HashKind::Crc32.hash(key), (full >> 16) & 0x7fff);
        }
    }

    // Bytes >= 0x80 are sign-extended: 0x80 and 0x80 as u32 give different
    // fnv1a_32 values, and the sign-extended one is what nutcracker computes.
    #[test]
    fn fnv_reads_signed_bytes() {
        let signed = (FNV_32_INIT ^ 0xffff_ff80).wrapping_mul(FNV_32_PRIME);
        assert_eq!(HashKind::Fnv1a_32.hash(&[0x80]), signed);
    }

    // How a `{}` tag picks the part of a key that is hashed.
    #[test]
    fn tag_brace_cases() {
        let tag = HashTag::new(b'{', b'}');
        for (key, hashed) in [
            // A tag applies to its non-empty content.
            (&b"user:{42}:name"[..], &b"42"[..]),
            // An empty tag `{}` leaves the whole key.
            (b"{}x", b"{}x"),
            // An unclosed tag leaves the whole key.
            (b"{a", b"{a"),
            (b"a}", b"a}"),
            // Only the first tag counts.
            (b"a{b}{c}", b"b"),
            // The close byte is searched after the first open byte only, so a
            // later open byte inside the content is part of it.
            (b"{{a}}", b"{a"),
        ] {
            assert_eq!(tag.apply(key), hashed, "{key:?}");
        }
    }

    // Open and close may be the same byte.
    #[test]
    fn tag_same_open_and_close() {
        let tag = HashTag::new(b'$', b'$');
        assert_eq!(tag.apply(b"$ab$"), b"ab");
        // `$$ab`: the content between the first two `$` is empty.
        assert_eq!(tag.apply(b"$$ab"), b"$$ab");
        assert_eq!(tag.apply(b"::x::"), b"::x::");
    }

    // The config spelling must be exactly two bytes.
    #[test]
    fn tag_from_bytes() {
        assert_eq!(HashTag::from_bytes(b"{}"), Some(HashTag::new(b'{', b'}')));
        assert_eq!(HashTag::from_bytes(b"{"), None);
        assert_eq!(HashTag::from_bytes(b"{}}"), None);
        assert_eq!(HashTag::new(b'{', b'}').to_string(), "{}");
    }

    // No hash panics on keys of any length around their block sizes.
    #[test]
    fn all_hashes_take_every_short_length() {
        let data: Vec<u8> = (0..=40u8).map(|b| b.wrapping_mul(37) | 0x80).collect();
        for kind in HashKind::ALL {
            let values: Vec<u32> = (0..data.len()).map(|n| kind.hash(&data[..n])).collect();
            // Distinct prefixes should not all collide; a constant would mean
            // the key is ignored.
            assert!(values.windows(2).any(|w| w[0] != w[1]), "{kind}");
        }
    }
}

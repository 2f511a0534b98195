//! Number and line helpers shared by the RESP and memcached codecs.
//!
//! Both protocols are text framed by `\r\n` with decimal numbers in their
//! headers; the two used to carry their own copies of these helpers. The
//! number parsers differ on purpose: Redis reads numbers with `string2ll`
//! (no leading zeros, no `-0`), memcached with `strtoull` (leading zeros
//! allowed), and each codec must accept exactly what its server accepts.

use bytes::{BufMut, BytesMut};

/// The most digits a `u64` has (`18446744073709551615`).
const U64_DIGITS: usize = 20;

/// Parses an unsigned decimal the way memcached does: digits only, no sign,
/// no blanks, no overflow; leading zeros are allowed.
#[inline]
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > U64_DIGITS {
        return None;
    }
    digits_u64(s)
}

/// The value of `digits`, all ASCII digits, or `None` (a non-digit or
/// overflow). Empty is 0: callers check for that themselves.
#[inline]
fn digits_u64(digits: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(v)
}

/// Parses a decimal with an optional leading `-` (memcached's exptime may be
/// negative: "expire immediately").
#[inline]
pub(crate) fn parse_i64(s: &[u8]) -> Option<i64> {
    match s.split_first() {
        Some((b'-', rest)) => 0i64.checked_sub_unsigned(parse_u64(rest)?),
        _ => i64::try_from(parse_u64(s)?).ok(),
    }
}

/// Parses a `u32` (memcached's flags), refusing anything larger.
#[inline]
pub(crate) fn parse_u32(s: &[u8]) -> Option<u32> {
    u32::try_from(parse_u64(s)?).ok()
}

/// Parses a decimal integer the way Redis's `string2ll` does: an optional
/// `-`, no `+`, no blanks, no leading zeros (so no `-0`), no overflow.
///
/// Redis refuses these forms, so a proxy accepting them would forward a
/// request the server then reads differently from us. Every RESP header
/// goes through here, so it is one pass over the digits.
#[inline]
pub(crate) fn parse_i64_canonical(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, s),
    };
    if *digits.first()? == b'0' {
        return (digits.len() == 1 && !neg).then_some(0);
    }
    let v = digits_u64(digits)?;
    if neg {
        // i64::MIN's magnitude is one more than i64::MAX.
        0i64.checked_sub_unsigned(v)
    } else {
        i64::try_from(v).ok()
    }
}

/// Appends the decimal form of `n` without going through `fmt` (no
/// allocation, nothing to unwrap).
#[inline]
pub(crate) fn put_u64(dst: &mut BytesMut, mut n: u64) {
    let mut buf = [0u8; U64_DIGITS];
    let mut start = buf.len();
    // Filled from the right; `n % 10` is a single digit, so the cast is exact.
    for slot in buf.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        start -= 1;
        if n == 0 {
            break;
        }
    }
    // `extend_from_slice`, not `BufMut::put_slice`: the latter was an
    // extra call per number on the reply path.
    dst.extend_from_slice(buf.get(start..).unwrap_or_default());
}

/// Appends the decimal form of `n`, with a `-` when negative.
#[inline]
pub(crate) fn put_i64(dst: &mut BytesMut, n: i64) {
    if n < 0 {
        dst.put_u8(b'-');
    }
    put_u64(dst, n.unsigned_abs());
}

/// True if `buf` holds `\r\n` at `at`: the end of a data block whose length
/// was announced, which both protocols check instead of trusting the count.
#[inline]
pub(crate) fn crlf_at(buf: &[u8], at: usize) -> bool {
    at.checked_add(2)
        .and_then(|end| buf.get(at..end))
        .is_some_and(|two| two == b"\r\n")
}

/// A line without its `\r`, for the protocols that also end lines with a
/// bare `\n` (memcached requests, RESP inline requests).
#[inline]
pub(crate) fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A usize length as the `u64` that errors carry; saturates on the (not yet
/// built) platform whose `usize` is wider.
#[inline]
pub(crate) fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#[cfg(test)]
mod tests {
    use super::*;

    // parse_i64_canonical follows string2ll.
    #[test]
    fn integer_parsing() {
        let parse_i64 = parse_i64_canonical;
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"-9223372036854775809"), None);
        assert_eq!(parse_i64(b"-0"), None);
        assert_eq!(parse_i64(b"007"), None);
        assert_eq!(parse_i64(b""), None);
        assert_eq!(parse_i64(b"-"), None);
    }

    // Redis's stricter forms that memcached's parser still refuses.
    #[test]
    fn canonical_refuses_signs_and_blanks() {
        for s in [&b"+1"[..], b" 1", b"1 ", b"1x", b"--1", b"-01"] {
            assert_eq!(parse_i64_canonical(s), None, "{s:?}");
        }
    }

    // Numbers: no sign on unsigned, overflow refused, i64 bounds exact.
    #[test]
    fn numbers() {
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"+1"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"-"), None);
        assert_eq!(parse_i64(b"-1"), Some(-1));
    }

    // Memcached's numbers allow leading zeros (strtoull does), within the
    // 20 digits a u64 can have.
    #[test]
    fn memcached_leading_zeros() {
        assert_eq!(parse_u64(b"007"), Some(7));
        assert_eq!(parse_u64(b"000000000000000000001"), None);
        assert_eq!(parse_i64(b"-0"), Some(0));
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
    }

    // Every boundary value survives a write and a read.
    #[test]
    fn put_round_trips() {
        for n in [0, 1, -1, 9, 10, -10, 12345, i64::MAX, i64::MIN] {
            let mut buf = BytesMut::new();
            put_i64(&mut buf, n);
            assert_eq!(&buf[..], n.to_string().as_bytes());
            assert_eq!(parse_i64_canonical(&buf), Some(n));
        }
        let mut buf = BytesMut::new();
        put_u64(&mut buf, u64::MAX);
        assert_eq!(&buf[..], b"18446744073709551615");
    }

    #[test]
    fn line_helpers() {
        assert!(crlf_at(b"ab\r\n", 2));
        assert!(!crlf_at(b"ab\r\n", 1));
        assert!(!crlf_at(b"ab\r", 2));
        assert!(!crlf_at(b"ab", usize::MAX));
        assert_eq!(trim_cr(b"x\r"), b"x");
        assert_eq!(trim_cr(b"x"), b"x");
        assert_eq!(len_u64(7), 7);
    }
}

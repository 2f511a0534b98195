//! Recognising HTTP on a text-protocol port.
//!
//! A web page can make a browser send an HTTP request to any host and port it
//! names, `127.0.0.1:6379` included. Redis's inline commands and memcached's
//! line protocol both answer a line they do not know with an error and go on
//! with the next one, so the request's headers are refused one by one and its
//! body then runs as commands. redis-server closes the connection at a `POST`
//! or `Host:` command, memcached at an unknown command whose last word starts
//! with `HTTP/`; the codecs use these checks to do the same, on both
//! protocols.

/// The HTTP methods, spelled as HTTP requires (upper case).
const METHODS: [&[u8]; 9] = [
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
];

/// What a command named `name` gives away, if it is one of redis-server's
/// two attack markers: `POST` (a request line) and `Host:` (the header every
/// HTTP/1.1 request carries). Compared in any case, as Redis looks commands
/// up.
pub(crate) fn http_command(name: &[u8]) -> Option<&'static str> {
    if name.eq_ignore_ascii_case(b"post") {
        Some("HTTP 'POST' request line")
    } else if name.eq_ignore_ascii_case(b"host:") {
        Some("HTTP 'Host:' header")
    } else {
        None
    }
}

/// What an unparsed text line gives away, if it is HTTP: a `POST` or
/// `Host:` line (see [`http_command`]), or a request line
/// `<METHOD> <target> HTTP/<version>`. The request line rule asks for all
/// three words so that a Redis `GET /path` (a key that looks like a path)
/// stays a command; `GET / HTTP/1.1` is no valid command of either protocol.
pub(crate) fn http_line(line: &[u8]) -> Option<&'static str> {
    let mut words = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    let first = words.next()?;
    if let Some(seen) = http_command(first) {
        return Some(seen);
    }
    match (words.next(), words.next(), words.next()) {
        (Some(_target), Some(version), None)
            if METHODS.contains(&first) && version.starts_with(b"HTTP/") =>
        {
            Some("HTTP request line")
        }
        _ => None,
    }
}

#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#[cfg(test)]
mod tests {
    use super::*;

    // The markers redis-server reacts to, in any case.
    #[test]
    fn commands() {
        assert!(http_command(b"POST").is_some());
        assert!(http_command(b"post").is_some());
        assert!(http_command(b"Host:").is_some());
        assert!(http_command(b"HOST:").is_some());
        assert!(http_command(b"Host").is_none());
        assert!(http_command(b"GET").is_none());
    }

    // Request lines need method, target and version; keys that look like
    // paths do not trip it.
    #[test]
    fn lines() {
        assert_eq!(http_line(b"GET / HTTP/1.1"), Some("HTTP request line"));
        assert_eq!(http_line(b"PUT /x HTTP/1.0"), Some("HTTP request line"));
        assert_eq!(http_line(b"HEAD  /x\tHTTP/2"), Some("HTTP request line"));
        assert_eq!(http_line(b"POST"), Some("HTTP 'POST' request line"));
        assert_eq!(http_line(b"Host: x"), Some("HTTP 'Host:' header"));
        assert_eq!(http_line(b"GET /path"), None);
        assert_eq!(http_line(b"get / HTTP/1.1"), None);
        assert_eq!(http_line(b"SET / HTTP/1.1"), None);
        assert_eq!(http_line(b"GET / HTTP/1.1 x"), None);
        assert_eq!(http_line(b""), None);
    }
}

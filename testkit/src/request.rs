//! Raw HTTP/1.1 requests, built byte for byte so that tests can also send
//! what no well-behaved client would.

/// Builds a raw HTTP/1.1 request. Adds `Host`, and `Content-Length` for a non-empty body
/// or a POST/PUT, unless the caller set `Content-Length` or `Transfer-Encoding` itself.
/// `body` is written as given (pass already chunk-encoded bytes for chunked uploads).
pub fn req(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    req_host(method, target, "relay.test", headers, body)
}

/// Like `req`, but with the given `Host` header value instead of `relay.test`.
pub fn req_host(
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n");
    let framed = headers.iter().any(|(name, _)| {
        name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
    });
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !framed && (!body.is_empty() || method == "POST" || method == "PUT") {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Chunk-encodes `pieces` (one chunk each, empty pieces skipped); with `last`, adds the
/// terminating zero chunk and the empty trailer section.
pub fn chunked(pieces: &[&[u8]], last: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in pieces.iter().filter(|p| !p.is_empty()) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    if last {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_gets_its_length_and_a_chunked_one_does_not() {
        assert_eq!(
            req_host("POST", "/link/a", "bench", &[], b"xy"),
            b"POST /link/a HTTP/1.1\r\nHost: bench\r\nContent-Length: 2\r\n\r\nxy"
        );
        assert_eq!(
            req("POST", "/a", &[("Transfer-Encoding", "chunked")], b""),
            b"POST /a HTTP/1.1\r\nHost: relay.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        assert_eq!(chunked(&[b"abc", b""], true), b"3\r\nabc\r\n0\r\n\r\n");
    }
}

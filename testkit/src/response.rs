//! Responses as the client reads them: the head, how the body is framed, and
//! whether the body arrived whole.

use std::io;

/// A response head.
#[derive(Clone, Debug)]
pub struct Head {
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// First value of a header, name compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether a comma-separated header (any of its lines) lists `token`, case-insensitively.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.header_all(name)
            .iter()
            .any(|v| lists_token(v.as_bytes(), token))
    }

    pub fn is_chunked(&self) -> bool {
        self.header_has_token("transfer-encoding", "chunked")
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length").map(|v| {
            parse_decimal(v.as_bytes()).unwrap_or_else(|| panic!("bad Content-Length {v:?}"))
        })
    }

    pub(crate) fn framing(&self, head_request: bool) -> Framing {
        Framing::of(
            self.status,
            head_request,
            self.is_chunked(),
            self.content_length(),
        )
    }
}

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

impl Framing {
    /// RFC 9112 section 6.3, for what a response head says.
    pub(crate) fn of(
        status: u16,
        head_request: bool,
        chunked: bool,
        content_length: Option<u64>,
    ) -> Framing {
        if head_request || status < 200 || status == 204 || status == 304 {
            Framing::Empty
        } else if chunked {
            Framing::Chunked
        } else if let Some(len) = content_length {
            Framing::Length(len)
        } else {
            Framing::UntilClose
        }
    }
}

/// How a response body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Every byte the framing announced arrived (or the body is close-delimited).
    Complete,
    /// The connection closed before the framing said the body was over.
    Truncated,
}

/// A response body and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Complete(Vec<u8>),
    Truncated(Vec<u8>),
}

impl Body {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Body::Complete(b) | Body::Truncated(b) => b,
        }
    }

    pub fn is_complete(&self) -> bool {
        matches!(self, Body::Complete(_))
    }
}

/// A whole response.
#[derive(Clone, Debug)]
pub struct Response {
    pub head: Head,
    pub body: Body,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.head.status
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    /// The body, which must be complete.
    pub fn body(&self) -> &[u8] {
        match &self.body {
            Body::Complete(b) => b,
            Body::Truncated(b) => panic!(
                "response body truncated after {} bytes: {:?}",
                b.len(),
                self.head
            ),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.body()).into_owned()
    }
}

/// Length of the complete `Content-Length`-framed response at the start of
/// `bytes`, once all of it is there: for clients that gather a response
/// without blocking and must tell when it is whole.
pub fn complete_length(bytes: &[u8]) -> Option<usize> {
    let head_len = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let body_len = bytes[..head_len - 2]
        .split(|&b| b == b'\n')
        .skip(1)
        .find_map(|line| {
            let (name, value) = split_header_line(strip_cr(line))?;
            name.eq_ignore_ascii_case(b"content-length")
                .then(|| parse_decimal(value))?
        })?;
    let len = head_len + usize::try_from(body_len).ok()?;
    (bytes.len() >= len).then_some(len)
}

/// The status code of a status line, after checking it is HTTP/1.x.
pub(crate) fn parse_status_line(line: &[u8]) -> io::Result<(&str, u16)> {
    let bad = || {
        invalid(format!(
            "bad status line {:?}",
            String::from_utf8_lossy(line)
        ))
    };
    let text = std::str::from_utf8(line).map_err(|_| bad())?;
    let mut parts = text.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(bad());
    }
    let status = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    Ok((version, status))
}

/// A header line's name and value, whitespace trimmed; `None` without a colon.
pub(crate) fn split_header_line(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    Some((line[..colon].trim_ascii(), line[colon + 1..].trim_ascii()))
}

/// Whether a comma-separated header value lists `token`, case-insensitively.
pub(crate) fn lists_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// A decimal number with nothing around it (header values are trimmed first).
pub(crate) fn parse_decimal(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit()
            .then(|| acc.checked_mul(10)?.checked_add(u64::from(b - b'0')))?
    })
}

/// A chunk-size line's size (extensions after `;` ignored).
pub(crate) fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let v = line.split(|&b| b == b';').next()?.trim_ascii();
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        let d = (b as char).to_digit(16)?;
        acc.checked_mul(16)?.checked_add(u64::from(d))
    })
}

pub(crate) fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

pub(crate) fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_complete_once_its_length_is_there() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Type: x\r\ncontent-length: 3\r\n\r\nabc";
        assert_eq!(complete_length(r), Some(r.len()));
        assert_eq!(complete_length(&r[..r.len() - 1]), None);
        let mut two = r.to_vec();
        two.extend_from_slice(b"HTTP/1.1");
        assert_eq!(complete_length(&two), Some(r.len()));
        assert_eq!(complete_length(b"HTTP/1.1 200 OK\r\n\r\n"), None);
    }

    #[test]
    fn heads_are_read_as_the_relay_writes_them() {
        assert_eq!(
            parse_status_line(b"HTTP/1.1 204 No Content").unwrap(),
            ("HTTP/1.1", 204)
        );
        assert!(parse_status_line(b"HTTP/2 200").is_err());
        assert_eq!(parse_chunk_size(b"1F;ext=1"), Some(31));
        assert_eq!(parse_chunk_size(b"zz"), None);
        assert_eq!(parse_decimal(b" 12 "), Some(12));
        assert_eq!(parse_decimal(b"1x"), None);
        assert!(lists_token(b"gzip, Chunked", "chunked"));
        assert_eq!(Framing::of(200, true, true, Some(3)), Framing::Empty);
        assert_eq!(Framing::of(200, false, true, Some(3)), Framing::Chunked);
        assert_eq!(Framing::of(200, false, false, None), Framing::UntilClose);
    }
}

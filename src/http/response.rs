//! Response heads, written straight into a connection's output buffer.

/// Statuses the relay sends, with their reason phrases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status(pub u16);

impl Status {
    pub fn reason(self) -> &'static str {
        match self.0 {
            100 => "Continue",
            200 => "OK",
            201 => "Created",
            202 => "Accepted",
            203 => "Non-Authoritative Information",
            204 => "No Content",
            205 => "Reset Content",
            206 => "Partial Content",
            300 => "Multiple Choices",
            301 => "Moved Permanently",
            302 => "Found",
            303 => "See Other",
            304 => "Not Modified",
            307 => "Temporary Redirect",
            308 => "Permanent Redirect",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            406 => "Not Acceptable",
            408 => "Request Timeout",
            409 => "Conflict",
            410 => "Gone",
            413 => "Content Too Large",
            415 => "Unsupported Media Type",
            417 => "Expectation Failed",
            422 => "Unprocessable Content",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            507 => "Insufficient Storage",
            // The reason phrase may be empty (RFC 9112 §4).
            _ => "",
        }
    }
}

/// Appends a response head to a byte slice. Overflow is sticky and reported by
/// [`HeadWriter::finish`], so callers write every field and check once.
pub struct HeadWriter<'a> {
    out: &'a mut [u8],
    len: usize,
    overflow: bool,
}

impl<'a> HeadWriter<'a> {
    /// Starts a head with the status line.
    pub fn new(out: &'a mut [u8], status: Status) -> HeadWriter<'a> {
        let mut w = HeadWriter {
            out,
            len: 0,
            overflow: false,
        };
        w.raw(b"HTTP/1.1 ");
        w.number(u64::from(status.0));
        w.raw(b" ");
        w.raw(status.reason().as_bytes());
        w.raw(b"\r\n");
        w
    }

    pub fn header(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.raw(name.as_bytes());
        self.raw(b": ");
        self.raw(value);
        self.raw(b"\r\n");
        self
    }

    /// A field whose value is the concatenation of `parts`.
    pub fn header_parts(&mut self, name: &str, parts: &[&[u8]]) -> &mut Self {
        self.raw(name.as_bytes());
        self.raw(b": ");
        for part in parts {
            self.raw(part);
        }
        self.raw(b"\r\n");
        self
    }

    pub fn header_number(&mut self, name: &str, value: u64) -> &mut Self {
        self.raw(name.as_bytes());
        self.raw(b": ");
        self.number(value);
        self.raw(b"\r\n");
        self
    }

    /// Ends the head; returns its length, or `None` if it did not fit.
    pub fn finish(mut self) -> Option<usize> {
        self.raw(b"\r\n");
        (!self.overflow).then_some(self.len)
    }

    /// Appends bytes after the head (a short body). Returns the total length.
    pub fn finish_with_body(mut self, body: &[u8]) -> Option<usize> {
        self.raw(b"\r\n");
        self.raw(body);
        (!self.overflow).then_some(self.len)
    }

    fn raw(&mut self, bytes: &[u8]) {
        match self.out.get_mut(self.len..self.len + bytes.len()) {
            Some(dst) if !self.overflow => {
                dst.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            _ => self.overflow = true,
        }
    }

    fn number(&mut self, n: u64) {
        let mut digits = [0u8; 20];
        self.raw(format_decimal(n, &mut digits));
    }
}

/// Formats `n` in decimal into `buf`, returning the digits.
pub fn format_decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Writes a chunk-size line (`{hex}\r\n`) into `out`; returns its length (at most 18).
pub(super) fn chunk_header(size: u64, out: &mut [u8]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (u64::BITS - size.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in 0..digits {
        out[digits - 1 - i] = HEX[((size >> (4 * i)) & 15) as usize];
    }
    out[digits..digits + 2].copy_from_slice(b"\r\n");
    digits + 2
}

/// Length of a fixed-width chunk-size line (see [`chunk_header_fixed`]).
pub(super) const FIXED_CHUNK_HEADER: usize = 10;

/// Writes `size` as an 8-digit hex chunk-size line (`0000abcd\r\n`). Leading
/// zeros are valid chunk syntax; the fixed width lets the line be written after
/// the data was read in behind it.
pub(super) fn chunk_header_fixed(size: usize, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    debug_assert!(u32::try_from(size).is_ok());
    for (i, byte) in out[..8].iter_mut().enumerate() {
        *byte = HEX[(size >> (4 * (7 - i))) & 15];
    }
    out[8..10].copy_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_head() {
        let mut buf = [0u8; 128];
        let mut w = HeadWriter::new(&mut buf, Status(404));
        w.header("Content-Type", b"text/plain")
            .header_number("Content-Length", 19);
        let n = w.finish_with_body(b"404 page not found\n").unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n\r\n404 page not found\n"
        );
    }

    #[test]
    fn overflow_is_reported() {
        let mut buf = [0u8; 24];
        let mut w = HeadWriter::new(&mut buf, Status(200));
        w.header("X", b"a long value that does not fit");
        assert_eq!(w.finish(), None);
    }

    #[test]
    fn chunk_headers() {
        let mut buf = [0u8; 20];
        for (n, text) in [
            (0, "0\r\n"),
            (10, "a\r\n"),
            (255, "ff\r\n"),
            (65536, "10000\r\n"),
        ] {
            let len = chunk_header(n as u64, &mut buf);
            assert_eq!(&buf[..len], text.as_bytes());
        }
    }

    #[test]
    fn fixed_chunk_headers() {
        let mut buf = [0u8; FIXED_CHUNK_HEADER];
        chunk_header_fixed(0x1a2b, &mut buf);
        assert_eq!(&buf, b"00001a2b\r\n");
    }

    #[test]
    fn decimal() {
        let mut d = [0u8; 20];
        assert_eq!(format_decimal(0, &mut d), b"0");
        assert_eq!(format_decimal(u64::MAX, &mut d), b"18446744073709551615");
    }
}

//! A blocking HTTP/1.1 client connection, TCP or Unix socket.
//!
//! Two ways to read a response: as a [`Response`] (head kept, body in memory
//! or streamed to a sink, a truncated body reported as such), or as its status
//! and body length alone, which allocates nothing and can sit inside a timed
//! loop. A timeout or read error panics in the first (a test fails with the
//! reason) and is returned in the second (a measurement reports it).

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::process::Addr;
use crate::response::{
    invalid, lists_token, parse_chunk_size, parse_decimal, parse_status_line, split_header_line,
    Body, End, Framing, Head, Response,
};

/// How long any socket read may block before the test fails instead of hanging.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// The read buffer a connection starts with; a longer head line grows it.
const BUFFER: usize = 64 * 1024;
/// The longest line of a response head (or chunk-size line) read at all.
const MAX_LINE: usize = 64 * 1024;
/// How much a read for a head or chunk line asks for at most.
const LINE_READ: usize = 16 * 1024;

/// A TCP connection with Nagle off and a read timeout, as every client here uses.
pub fn connect_tcp(addr: SocketAddr, read_timeout: Duration) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(read_timeout))?;
    Ok(s)
}

/// Like [`connect_tcp`], from the local IPv4 address `from` (any of
/// 127.0.0.0/8 on loopback): tests that need clients of several addresses.
pub fn connect_tcp_from(
    from: std::net::Ipv4Addr,
    addr: SocketAddr,
    read_timeout: Duration,
) -> io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(to) = addr else {
        return Err(io::Error::new(ErrorKind::InvalidInput, "an IPv4 relay"));
    };
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
        #[cfg(target_vendor = "apple")]
        sin_len: 0,
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket, owned by the TcpStream from here on; the
    // addresses are valid sockaddr_in values of the length given.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let local = sockaddr(from, 0);
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let remote = sockaddr(*to.ip(), to.port());
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(read_timeout))?;
        Ok(stream)
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }

    fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(Some(timeout)),
            Stream::Unix(s) => s.set_read_timeout(Some(timeout)),
        }
    }

    fn set_write_timeout(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(Some(timeout)),
            Stream::Unix(s) => s.set_write_timeout(Some(timeout)),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(out),
            Stream::Unix(s) => s.read(out),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(data),
            Stream::Unix(s) => s.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// One client connection with a read buffer (bytes of later pipelined responses stay
/// buffered for the next read).
pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl Conn {
    /// Connects to the relay with the default buffer and read timeout; panics on failure.
    pub fn open(addr: &Addr) -> Conn {
        Conn::try_open(addr, BUFFER, READ_TIMEOUT).expect("connect to relay")
    }

    /// Connects from the local IPv4 address `from` (see [`connect_tcp_from`]).
    pub fn open_from(from: std::net::Ipv4Addr, addr: &Addr) -> Conn {
        let Addr::Tcp(a) = addr else {
            panic!("a TCP relay");
        };
        let stream = connect_tcp_from(from, *a, READ_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect {a} from {from}: {e}"));
        Conn {
            stream: Stream::Tcp(stream),
            buf: vec![0; BUFFER],
            start: 0,
            end: 0,
        }
    }

    /// Connects with a read buffer of `buffer` bytes (the most one read asks for).
    pub fn try_open(addr: &Addr, buffer: usize, read_timeout: Duration) -> io::Result<Conn> {
        let stream = match addr {
            Addr::Tcp(a) => Stream::Tcp(
                connect_tcp(*a, read_timeout)
                    .map_err(|e| io::Error::new(e.kind(), format!("connect {a}: {e}")))?,
            ),
            Addr::Unix(p) => {
                let s = UnixStream::connect(p)
                    .map_err(|e| io::Error::new(e.kind(), format!("connect {p:?}: {e}")))?;
                s.set_read_timeout(Some(read_timeout))?;
                Stream::Unix(s)
            }
        };
        Ok(Conn {
            stream,
            buf: vec![0; buffer.max(1)],
            start: 0,
            end: 0,
        })
    }

    pub fn set_read_timeout(&mut self, timeout: Duration) {
        self.stream
            .set_read_timeout(timeout)
            .expect("set_read_timeout")
    }

    /// Limits how long a write may block before it fails (`send` then panics).
    pub fn set_write_timeout(&mut self, timeout: Duration) {
        self.stream
            .set_write_timeout(timeout)
            .expect("set_write_timeout")
    }

    /// Local TCP port of this connection (what the relay reports as `X-Real-Port`).
    pub fn local_port(&self) -> u16 {
        match &self.stream {
            Stream::Tcp(s) => s.local_addr().expect("local_addr").port(),
            Stream::Unix(_) => panic!("no port on a Unix socket"),
        }
    }

    /// Writes all bytes; panics on error.
    pub fn send(&mut self, data: &[u8]) {
        self.try_send(data).expect("write to relay");
    }

    pub fn try_send(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data)
    }

    /// A second handle on the socket that can write.
    pub fn writer(&self) -> Writer {
        Writer(self.stream.try_clone().expect("clone socket"))
    }

    /// Another handle on the same socket, to shut it down from another thread.
    pub fn handle(&self) -> Handle {
        Handle(self.stream.try_clone().expect("clone socket"))
    }

    /// Shuts the sending direction down (the relay sees end of stream); reads still work.
    pub fn shutdown_write(&self) {
        self.stream
            .shutdown(Shutdown::Write)
            .expect("shutdown(Write)")
    }

    /// Closes a TCP connection abortively: SO_LINGER with a zero timeout, then close,
    /// so that the relay receives a RST instead of a FIN.
    pub fn reset(self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: `linger` lives across the call and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &linger as *const libc::linger as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
        drop(self);
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads more bytes into the buffer, at most `max`. `Ok(0)` is end of stream
    /// (a reset counts as end of stream). A read timeout is an error.
    fn fill(&mut self, max: usize) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let len = self.buf.len();
                self.buf.resize(len * 2, 0);
            }
        }
        let stop = self.buf.len().min(self.end.saturating_add(max));
        loop {
            match self.stream.read(&mut self.buf[self.end..stop]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(0),
                Err(e) => return Err(e),
            }
        }
    }

    /// Like `fill`, with what was awaited in the error.
    fn fill_for(&mut self, max: usize, what: &str) -> io::Result<usize> {
        self.fill(max).map_err(|e| {
            let timed_out = matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
            let why = if timed_out { "timed out" } else { "read error" };
            io::Error::new(e.kind(), format!("{why} waiting for {what}: {e}"))
        })
    }

    /// The next line, consumed, as a range of `buf` without its CRLF (or bare LF);
    /// `None` at end of stream. The range is valid until the next read.
    fn next_line(&mut self, what: &str) -> io::Result<Option<(usize, usize)>> {
        loop {
            if let Some(i) = self.buffered().iter().position(|&b| b == b'\n') {
                let at = self.start;
                self.start += i + 1;
                let end = if i > 0 && self.buf[at + i - 1] == b'\r' {
                    at + i - 1
                } else {
                    at + i
                };
                return Ok(Some((at, end)));
            }
            if self.buffered().len() >= MAX_LINE {
                return Err(invalid(format!("line too long in {what}")));
            }
            if self.fill_for(LINE_READ, what)? == 0 {
                return Ok(None);
            }
        }
    }

    /// Reads a response head into a `Head`; `None` if the connection ends first.
    fn read_head_or_end(&mut self) -> io::Result<Option<Head>> {
        let Some((a, b)) = self.next_line("a status line")? else {
            return Ok(None);
        };
        let (version, status) = parse_status_line(&self.buf[a..b])?;
        let version = version.to_string();
        let mut headers = Vec::new();
        loop {
            let Some((a, b)) = self.next_line("response headers")? else {
                return Ok(None);
            };
            if a == b {
                break;
            }
            let line = std::str::from_utf8(&self.buf[a..b])
                .map_err(|_| invalid("non-UTF-8 header line".into()))?;
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        Ok(Some(Head {
            version,
            status,
            headers,
        }))
    }

    /// Reads a response head; `None` if the connection ends before a complete head.
    pub fn try_read_head(&mut self) -> Option<Head> {
        or_panic(self.read_head_or_end())
    }

    /// Reads a response head; panics if the connection ends first.
    pub fn read_head(&mut self) -> Head {
        self.try_read_head()
            .expect("connection closed before a response head")
    }

    /// Streams a body to `sink` in pieces of at most `max_read` bytes per socket read.
    /// Returns how it ended and how many body bytes were delivered.
    pub fn stream_body(
        &mut self,
        head: &Head,
        head_request: bool,
        max_read: usize,
        mut sink: impl FnMut(&[u8]),
    ) -> (End, u64) {
        or_panic(self.stream_framed(head.framing(head_request), max_read, &mut sink))
    }

    fn stream_framed(
        &mut self,
        framing: Framing,
        max_read: usize,
        sink: &mut impl FnMut(&[u8]),
    ) -> io::Result<(End, u64)> {
        let mut total = 0u64;
        let end = match framing {
            Framing::Empty => End::Complete,
            Framing::Length(len) => self.stream_exact(len, max_read, sink, &mut total)?,
            Framing::UntilClose => loop {
                if self.buffered().is_empty() && self.fill_for(max_read, "body")? == 0 {
                    break End::Complete;
                }
                let n = self.buffered().len();
                sink(self.buffered());
                self.start += n;
                total += n as u64;
            },
            Framing::Chunked => loop {
                let Some((a, b)) = self.next_line("a chunk size")? else {
                    break End::Truncated;
                };
                let size = parse_chunk_size(&self.buf[a..b]).ok_or_else(|| {
                    let line = String::from_utf8_lossy(&self.buf[a..b]);
                    invalid(format!("bad chunk size line {line:?}"))
                })?;
                if size == 0 {
                    // Trailer section, ended by an empty line.
                    break loop {
                        match self.next_line("trailers")? {
                            None => break End::Truncated,
                            Some((a, b)) if a == b => break End::Complete,
                            Some(_) => {}
                        }
                    };
                }
                if self.stream_exact(size, max_read, sink, &mut total)? == End::Truncated {
                    break End::Truncated;
                }
                match self.next_line("a chunk's CRLF")? {
                    None => break End::Truncated,
                    Some((a, b)) if a == b => {}
                    Some(_) => return Err(invalid("chunk data longer than its size".into())),
                }
            },
        };
        Ok((end, total))
    }

    fn stream_exact(
        &mut self,
        mut left: u64,
        max_read: usize,
        sink: &mut impl FnMut(&[u8]),
        total: &mut u64,
    ) -> io::Result<End> {
        while left > 0 {
            if self.buffered().is_empty() && self.fill_for(max_read, "body")? == 0 {
                return Ok(End::Truncated);
            }
            let n = self.buffered().len().min(max_read);
            let n = n.min(usize::try_from(left).unwrap_or(usize::MAX));
            sink(&self.buf[self.start..self.start + n]);
            self.start += n;
            left -= n as u64;
            *total += n as u64;
        }
        Ok(End::Complete)
    }

    /// Reads a whole body into memory.
    pub fn read_body(&mut self, head: &Head, head_request: bool) -> Body {
        let mut bytes = Vec::new();
        let (end, _) = self.stream_body(head, head_request, 64 * 1024, |b| {
            bytes.extend_from_slice(b)
        });
        match end {
            End::Complete => Body::Complete(bytes),
            End::Truncated => Body::Truncated(bytes),
        }
    }

    /// Reads one whole response to a non-HEAD request.
    pub fn read_response(&mut self) -> Response {
        let head = self.read_head();
        let body = self.read_body(&head, false);
        Response { head, body }
    }

    /// Reads one whole response to a HEAD request (no body).
    pub fn read_head_response(&mut self) -> Response {
        let head = self.read_head();
        let body = self.read_body(&head, true);
        Response { head, body }
    }

    /// Sends a request and reads its response.
    pub fn exchange(&mut self, request: &[u8]) -> Response {
        self.send(request);
        self.read_response()
    }

    /// Reads one response to a non-HEAD request keeping nothing of its head:
    /// returns its status and body length, and appends the body to `keep` if
    /// given. Allocates nothing else. A connection that ends before the
    /// response is whole is an error here.
    pub fn read_status_and_body(
        &mut self,
        mut keep: Option<&mut Vec<u8>>,
    ) -> io::Result<(u16, u64)> {
        let closed = || io::Error::new(ErrorKind::UnexpectedEof, "connection closed by the peer");
        let (a, b) = self.next_line("a status line")?.ok_or_else(closed)?;
        let (_, status) = parse_status_line(&self.buf[a..b])?;
        let (mut chunked, mut length) = (false, None);
        loop {
            let (a, b) = self.next_line("response headers")?.ok_or_else(closed)?;
            if a == b {
                break;
            }
            let (name, value) = split_header_line(&self.buf[a..b])
                .ok_or_else(|| invalid("header line without a colon".into()))?;
            if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked |= lists_token(value, "chunked");
            } else if name.eq_ignore_ascii_case(b"content-length") {
                length =
                    Some(parse_decimal(value).ok_or_else(|| invalid("bad Content-Length".into()))?);
            }
        }
        let framing = Framing::of(status, false, chunked, length);
        let mut sink = |piece: &[u8]| {
            if let Some(k) = keep.as_deref_mut() {
                k.extend_from_slice(piece);
            }
        };
        match self.stream_framed(framing, usize::MAX, &mut sink)? {
            (End::Complete, n) => Ok((status, n)),
            (End::Truncated, n) => Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("connection closed after {n} body bytes"),
            )),
        }
    }

    /// Reads a response that must be `200` with a body of `len` bytes.
    pub fn expect_ok(&mut self, len: u64) -> io::Result<()> {
        match self.read_status_and_body(None)? {
            (200, n) if n == len => Ok(()),
            (status, n) => Err(io::Error::other(format!(
                "expected 200 with {len} bytes, got {status} with {n}"
            ))),
        }
    }

    /// True if nothing at all arrives within `wait` (the connection stays open and quiet).
    pub fn is_silent_for(&mut self, wait: Duration) -> bool {
        if !self.buffered().is_empty() {
            return false;
        }
        self.set_read_timeout(wait);
        let result = self.fill(1024);
        self.set_read_timeout(READ_TIMEOUT);
        matches!(result, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
    }

    /// True if the relay closes the connection (end of stream or reset) with no further
    /// bytes, within the read timeout.
    pub fn is_closed_by_peer(&mut self) -> bool {
        if !self.buffered().is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        loop {
            match self.stream.read(&mut probe) {
                Ok(0) => return true,
                Ok(_) => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
                Err(e) => panic!("waiting for the relay to close the connection: {e}"),
            }
        }
    }

    /// How the connection ends without any further request: `None` if it stays open
    /// and silent for `wait`, else `Some(bytes)` with whatever arrived before the relay
    /// closed it (end of stream or reset). Panics if the relay sends bytes and keeps
    /// the connection open past `wait`.
    pub fn closed_within(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut got = self.buffered().to_vec();
        self.start = self.end;
        let mut probe = [0u8; 4096];
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break if got.is_empty() {
                    None
                } else {
                    panic!(
                        "the relay sent {:?} and kept the connection open",
                        String::from_utf8_lossy(&got)
                    )
                };
            }
            self.set_read_timeout(left);
            match self.stream.read(&mut probe) {
                Ok(0) => break Some(got),
                Ok(n) => got.extend_from_slice(&probe[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break Some(got),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("waiting for the relay to close the connection: {e}"),
            }
        };
        self.set_read_timeout(READ_TIMEOUT);
        result
    }
}

/// Fails the test with the reason a read gave up.
fn or_panic<T>(result: io::Result<T>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// A write-only handle on a connection's socket, for a thread that writes while
/// another reads.
pub struct Writer(Stream);

impl Writer {
    pub fn send(&mut self, data: &[u8]) {
        self.try_send(data).expect("write to relay")
    }

    pub fn try_send(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.write_all(data)
    }
}

/// A second handle on a connection's socket, to shut it down so that a thread blocked
/// reading it sees end of stream.
pub struct Handle(Stream);

impl Handle {
    /// Shuts both directions down (errors ignored: the socket may be gone already).
    pub fn shutdown(&self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

//! Test support: start the relay binary, and a tiny blocking HTTP/1.1 client over
//! `std::net` / `std::os::unix::net` that reports truncated bodies distinctly.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long any socket read may block before the test fails instead of hanging.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a request is given to reach the relay and be parked there.
pub const PARK: Duration = Duration::from_millis(150);

/// Where the relay listens.
#[derive(Clone, Debug)]
pub enum Addr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// A running relay process; killed when dropped.
pub struct Relay {
    child: Child,
    addr: Addr,
    log: Arc<Mutex<String>>,
}

impl Relay {
    /// Starts the relay on 127.0.0.1 with an OS-chosen port.
    pub fn start() -> Relay {
        Relay::start_with(&["-a", "127.0.0.1", "-p", "0"])
    }

    /// Starts the relay on a Unix socket at `path`.
    pub fn start_unix(path: &Path) -> Relay {
        let path = path.to_str().expect("utf-8 socket path");
        Relay::start_with(&["-u", path])
    }

    /// Starts the relay with the given flags and waits for its `listening on ADDR` line.
    pub fn start_with(args: &[&str]) -> Relay {
        let mut command = Command::new(env!("CARGO_BIN_EXE_httprelay"));
        command.args(args);
        Relay::launch(command, &format!("{args:?}"))
    }

    /// Spawns `command` (the relay binary with its flags) and waits for its
    /// `listening on ADDR` line; `what` names it in a failure.
    fn launch(mut command: Command, what: &str) -> Relay {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the httprelay binary");
        let log = Arc::new(Mutex::new(String::new()));
        let (lines_tx, lines_rx) = mpsc::channel::<String>();
        // Drain both pipes for the whole life of the process so neither ever fills.
        let stderr = child.stderr.take().expect("stderr pipe");
        let stdout = child.stdout.take().expect("stdout pipe");
        drain(stderr, "stderr", lines_tx.clone(), log.clone());
        drain(stdout, "stdout", lines_tx, log.clone());

        let deadline = Instant::now() + Duration::from_secs(15);
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = parse_listening(&line) {
                        break addr;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "relay {what} never printed `listening on ADDR`; output:\n{}",
                        log.lock().unwrap()
                    );
                }
            }
        };
        Relay { child, addr, log }
    }

    pub fn addr(&self) -> &Addr {
        &self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size of the relay process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib_of(self.pid()).expect("relay process status")
    }

    /// Everything the relay printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Opens a client connection to the relay.
    pub fn connect(&self) -> Conn {
        Conn::open(&self.addr)
    }

    /// Sends SIGTERM to the relay.
    pub fn terminate(&self) {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn drain<R: Read + Send + 'static>(
    pipe: R,
    name: &'static str,
    lines: mpsc::Sender<String>,
    log: Arc<Mutex<String>>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&raw).trim_end().to_string();
                    log.lock().unwrap().push_str(&format!("[{name}] {line}\n"));
                    // The receiver is gone once the address is known; that is fine.
                    let _ = lines.send(line);
                }
            }
        }
    });
}

fn parse_listening(line: &str) -> Option<Addr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let token = rest.split_whitespace().next()?;
    if let Some(path) = token.strip_prefix("unix:") {
        return Some(Addr::Unix(PathBuf::from(path)));
    }
    let token = token.trim_end_matches([',', '.', ';']);
    token.parse().ok().map(Addr::Tcp)
}

/// VmRSS of a process in KiB, from /proc/PID/status.
pub fn rss_kib_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples a process's RSS every few milliseconds on a thread and keeps the peak.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(u64, usize)>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let (mut peak, mut samples) = (0, 0);
            while !flag.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib_of(pid) {
                    peak = peak.max(kib);
                    samples += 1;
                }
                thread::sleep(Duration::from_millis(10));
            }
            (peak, samples)
        });
        RssSampler { stop, handle }
    }

    /// Stops sampling; returns the peak RSS in KiB and the number of samples taken.
    pub fn finish(self) -> (u64, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("rss sampler thread")
    }
}

/// Milliseconds since the Unix epoch, as the relay's `HttpRelay-*Time` headers use.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// Builds a raw HTTP/1.1 request. Adds `Host`, and `Content-Length` for a non-empty body
/// or a POST/PUT, unless the caller set `Content-Length` or `Transfer-Encoding` itself.
/// `body` is written as given (pass already chunk-encoded bytes for chunked uploads).
pub fn req(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: relay.test\r\n");
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
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    pub fn is_chunked(&self) -> bool {
        self.header_all("transfer-encoding")
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("chunked"))
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length").map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("bad Content-Length {v:?}"))
        })
    }

    fn framing(&self, head_request: bool) -> Framing {
        if head_request || self.status < 200 || self.status == 204 || self.status == 304 {
            Framing::Empty
        } else if self.is_chunked() {
            Framing::Chunked
        } else if let Some(len) = self.content_length() {
            Framing::Length(len)
        } else {
            Framing::UntilClose
        }
    }
}

enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
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

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// One client connection with a read buffer (bytes of later pipelined responses stay
/// buffered for the next read).
pub struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    pos: usize,
}

impl Conn {
    pub fn open(addr: &Addr) -> Conn {
        let stream = match addr {
            Addr::Tcp(a) => {
                let s = TcpStream::connect(a).expect("connect to relay");
                s.set_nodelay(true).expect("nodelay");
                Stream::Tcp(s)
            }
            Addr::Unix(p) => Stream::Unix(UnixStream::connect(p).expect("connect to relay socket")),
        };
        let mut conn = Conn {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            pos: 0,
        };
        conn.set_read_timeout(READ_TIMEOUT);
        conn
    }

    pub fn set_read_timeout(&mut self, timeout: Duration) {
        match &self.stream {
            Stream::Tcp(s) => s.set_read_timeout(Some(timeout)),
            Stream::Unix(s) => s.set_read_timeout(Some(timeout)),
        }
        .expect("set_read_timeout")
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
        match &mut self.stream {
            Stream::Tcp(s) => s.write_all(data),
            Stream::Unix(s) => s.write_all(data),
        }
    }

    fn raw_read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match &mut self.stream {
            Stream::Tcp(s) => s.read(out),
            Stream::Unix(s) => s.read(out),
        }
    }

    /// Reads more bytes into the buffer, at most `max`. `Ok(0)` is end of stream
    /// (a reset counts as end of stream). A read timeout is an error.
    fn fill(&mut self, max: usize) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let start = self.buf.len();
        self.buf.resize(start + max, 0);
        let result = loop {
            let (_, spare) = self.buf.split_at_mut(start);
            match match &mut self.stream {
                Stream::Tcp(s) => s.read(spare),
                Stream::Unix(s) => s.read(spare),
            } {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break Ok(0),
                other => break other,
            }
        };
        self.buf.truncate(start + *result.as_ref().unwrap_or(&0));
        result
    }

    /// Like `fill`, but a timeout fails the test.
    fn fill_or_panic(&mut self, max: usize, what: &str) -> usize {
        match self.fill(max) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("timed out waiting for {what}")
            }
            Err(e) => panic!("read error waiting for {what}: {e}"),
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// One line without its CRLF, or `None` at end of stream.
    fn read_line(&mut self, what: &str) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = self.buffered().iter().position(|&b| b == b'\n') {
                let mut line = self.buffered()[..i].to_vec();
                self.pos += i + 1;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Some(line);
            }
            assert!(self.buffered().len() < 64 * 1024, "line too long in {what}");
            if self.fill_or_panic(16 * 1024, what) == 0 {
                return None;
            }
        }
    }

    /// Reads a response head; `None` if the connection ends before a complete head.
    pub fn try_read_head(&mut self) -> Option<Head> {
        let status_line = String::from_utf8(self.read_line("a status line")?).expect("utf-8");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_string();
        assert!(
            version.starts_with("HTTP/1."),
            "bad status line {status_line:?}"
        );
        let status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.read_line("response headers")?;
            if line.is_empty() {
                break;
            }
            let line = String::from_utf8(line).expect("utf-8 header");
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header line {line:?}"));
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        Some(Head {
            version,
            status,
            headers,
        })
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
        let mut total = 0u64;
        let end = match head.framing(head_request) {
            Framing::Empty => End::Complete,
            Framing::Length(len) => self.stream_exact(len, max_read, &mut sink, &mut total),
            Framing::UntilClose => loop {
                if self.buffered().is_empty() && self.fill_or_panic(max_read, "body") == 0 {
                    break End::Complete;
                }
                let n = self.buffered().len();
                sink(self.buffered());
                self.pos += n;
                total += n as u64;
            },
            Framing::Chunked => loop {
                let Some(line) = self.read_line("a chunk size") else {
                    break End::Truncated;
                };
                let line = String::from_utf8(line).expect("utf-8 chunk line");
                let size = line.split(';').next().unwrap_or_default().trim();
                let size = u64::from_str_radix(size, 16)
                    .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
                if size == 0 {
                    // Trailer section, ended by an empty line.
                    break loop {
                        match self.read_line("trailers") {
                            None => break End::Truncated,
                            Some(l) if l.is_empty() => break End::Complete,
                            Some(_) => {}
                        }
                    };
                }
                if self.stream_exact(size, max_read, &mut sink, &mut total) == End::Truncated {
                    break End::Truncated;
                }
                match self.read_line("a chunk's CRLF") {
                    None => break End::Truncated,
                    Some(l) => assert!(l.is_empty(), "chunk data longer than its size"),
                }
            },
        };
        (end, total)
    }

    fn stream_exact(
        &mut self,
        mut left: u64,
        max_read: usize,
        sink: &mut impl FnMut(&[u8]),
        total: &mut u64,
    ) -> End {
        while left > 0 {
            if self.buffered().is_empty() && self.fill_or_panic(max_read, "body") == 0 {
                return End::Truncated;
            }
            let n = self.buffered().len().min(max_read).min(left as usize);
            sink(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            left -= n as u64;
            *total += n as u64;
        }
        End::Complete
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
            match self.raw_read(&mut probe) {
                Ok(0) => return true,
                Ok(_) => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
                Err(e) => panic!("waiting for the relay to close the connection: {e}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Helpers for the mcast, sync, proxy and trust tests.

impl Relay {
    /// Starts the relay on 127.0.0.1 with an OS-chosen port and extra flags.
    pub fn start_flags(extra: &[&str]) -> Relay {
        let mut args = vec!["-a", "127.0.0.1", "-p", "0"];
        args.extend_from_slice(extra);
        Relay::start_with(&args)
    }
}

/// Like `req`, but with the given `Host` header value instead of `relay.test`.
pub fn req_host(
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut with_host = req(method, target, headers, body);
    let from = b"\r\nHost: relay.test\r\n";
    let at = with_host
        .windows(from.len())
        .position(|w| w == from)
        .expect("req writes a Host header");
    with_host.splice(
        at..at + from.len(),
        format!("\r\nHost: {host}\r\n").into_bytes(),
    );
    with_host
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

/// Sends `request` and checks that no response arrives while it is parked.
pub fn send_waiting(conn: &mut Conn, request: &[u8], what: &str) {
    conn.send(request);
    assert!(
        conn.is_silent_for(PARK),
        "{what} must wait, but the relay answered at once"
    );
}

/// A second handle on a connection's socket, to shut it down so that a thread blocked
/// reading it sees end of stream.
pub struct Handle(Stream);

impl Handle {
    /// Shuts both directions down (errors ignored: the socket may be gone already).
    pub fn shutdown(&self) {
        let _ = match &self.0 {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl Conn {
    /// Limits how long a write may block before it fails (`send` then panics).
    pub fn set_write_timeout(&mut self, timeout: Duration) {
        match &self.stream {
            Stream::Tcp(s) => s.set_write_timeout(Some(timeout)),
            Stream::Unix(s) => s.set_write_timeout(Some(timeout)),
        }
        .expect("set_write_timeout")
    }

    /// Another handle on the same socket.
    pub fn handle(&self) -> Handle {
        Handle(match &self.stream {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone().expect("clone socket")),
            Stream::Unix(s) => Stream::Unix(s.try_clone().expect("clone socket")),
        })
    }
}

// ---------------------------------------------------------------------------------
// Helpers for the hostile-input and stress tests.

impl Relay {
    /// Starts the relay on 127.0.0.1 with an OS-chosen port and extra flags, with its
    /// descriptor limit (RLIMIT_NOFILE, soft and hard) set to `nofile` before exec, so
    /// only the relay process is limited.
    pub fn start_nofile(nofile: u64, extra: &[&str]) -> Relay {
        use std::os::unix::process::CommandExt;

        let mut args = vec!["-a", "127.0.0.1", "-p", "0"];
        args.extend_from_slice(extra);
        let mut command = Command::new(env!("CARGO_BIN_EXE_httprelay"));
        command.args(&args);
        let limit = libc::rlimit {
            rlim_cur: nofile as libc::rlim_t,
            rlim_max: nofile as libc::rlim_t,
        };
        // SAFETY: setrlimit(2) is async-signal-safe and only reads `limit`, a plain
        // value copied into the closure.
        unsafe {
            command.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
        Relay::launch(command, &format!("{args:?} (nofile {nofile})"))
    }

    /// Whether the relay process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// CPU time (user + system) the relay has used so far.
    pub fn cpu_time(&self) -> Duration {
        cpu_time_of(self.pid()).expect("relay process stat")
    }

    /// The relay's TCP address (panics for a Unix-socket relay).
    pub fn tcp_addr(&self) -> SocketAddr {
        match &self.addr {
            Addr::Tcp(a) => *a,
            Addr::Unix(p) => panic!("relay listens on {p:?}, not TCP"),
        }
    }
}

/// User + system CPU time of a process, from /proc/PID/stat.
pub fn cpu_time_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as u64 } else { 100 };
    Some(Duration::from_micros((utime + stime) * 1_000_000 / ticks))
}

/// A write-only handle on a connection's socket, for a thread that writes while
/// another reads.
pub struct Writer(Stream);

impl Writer {
    pub fn send(&mut self, data: &[u8]) {
        self.try_send(data).expect("write to relay")
    }

    pub fn try_send(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.0 {
            Stream::Tcp(s) => s.write_all(data),
            Stream::Unix(s) => s.write_all(data),
        }
    }
}

impl Conn {
    fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match &self.stream {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    /// A second handle on the socket that can write.
    pub fn writer(&self) -> Writer {
        Writer(match &self.stream {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone().expect("clone socket")),
            Stream::Unix(s) => Stream::Unix(s.try_clone().expect("clone socket")),
        })
    }

    /// Shuts the sending direction down (the relay sees end of stream); reads still work.
    pub fn shutdown_write(&self) {
        match &self.stream {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        }
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
                self.raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &linger as *const libc::linger as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
        drop(self);
    }

    /// How the connection ends without any further request: `None` if it stays open
    /// and silent for `wait`, else `Some(bytes)` with whatever arrived before the relay
    /// closed it (end of stream or reset). Panics if the relay sends bytes and keeps
    /// the connection open past `wait`.
    pub fn closed_within(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + wait;
        let mut got = self.buffered().to_vec();
        self.pos = self.buf.len();
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
            match self.raw_read(&mut probe) {
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

/// Byte `offset` of the background transfers' pattern.
fn background_byte(offset: u64) -> u8 {
    (offset.wrapping_mul(7).wrapping_add(offset >> 8) % 253) as u8
}

/// A link transfer running on its own two connections while a test does something
/// hostile on others: the producer streams a chunked body in small pieces (a piece
/// every 20 ms, so it never looks stalled), the consumer checks every byte.
pub struct Background {
    id: String,
    stop: Arc<AtomicBool>,
    producer: JoinHandle<(u64, Response)>,
    consumer: JoinHandle<(Head, End, u64, Option<u64>)>,
}

impl Background {
    /// Starts the transfer and returns once the consumer has received body bytes.
    pub fn start(relay: &Relay, what: &str) -> Background {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("bg-{what}-{n}");
        let path = format!("/link/{id}");
        let stop = Arc::new(AtomicBool::new(false));
        let (started_tx, started_rx) = mpsc::channel::<()>();

        let mut consumer = relay.connect();
        consumer.send(&req("GET", &path, &[], b""));
        let consumer = thread::spawn(move || {
            let head = consumer.read_head();
            let mut offset = 0u64;
            let mut mismatch = None;
            let (end, received) = consumer.stream_body(&head, false, 16 * 1024, |piece| {
                for &b in piece {
                    if mismatch.is_none() && b != background_byte(offset) {
                        mismatch = Some(offset);
                    }
                    offset += 1;
                }
                let _ = started_tx.send(());
            });
            (head, end, received, mismatch)
        });

        let mut producer = relay.connect();
        let flag = stop.clone();
        let producer = thread::spawn(move || {
            producer.send(&req(
                "POST",
                &path,
                &[
                    ("Content-Type", "application/x-background"),
                    ("Transfer-Encoding", "chunked"),
                ],
                b"",
            ));
            let mut sent = 0u64;
            let mut piece = 1usize;
            while !flag.load(Ordering::Relaxed) {
                let data: Vec<u8> = (sent..sent + piece as u64).map(background_byte).collect();
                producer.send(&chunked(&[&data], false));
                sent += piece as u64;
                piece = piece % 3000 + 97;
                thread::sleep(Duration::from_millis(20));
            }
            producer.send(b"0\r\n\r\n");
            (sent, producer.read_response())
        });

        if started_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            stop.store(true, Ordering::Relaxed);
            panic!("background transfer {id}: no body bytes reached the consumer within 10 s");
        }
        Background {
            id,
            stop,
            producer,
            consumer,
        }
    }

    /// Ends the upload and checks every byte arrived intact and both sides got `200`.
    pub fn finish(self) {
        let id = &self.id;
        self.stop.store(true, Ordering::Relaxed);
        let (sent, done) = self
            .producer
            .join()
            .unwrap_or_else(|_| panic!("background transfer {id}: producer failed"));
        let (head, end, received, mismatch) = self
            .consumer
            .join()
            .unwrap_or_else(|_| panic!("background transfer {id}: consumer failed"));
        assert_eq!(head.status, 200, "background transfer {id}: {head:?}");
        assert_eq!(end, End::Complete, "background transfer {id}: body ended");
        assert_eq!(received, sent, "background transfer {id}: byte count");
        assert_eq!(
            mismatch, None,
            "background transfer {id}: first corrupted byte"
        );
        assert_eq!(
            done.status(),
            200,
            "background transfer {id}: producer's response {:?}",
            done.head
        );
    }
}

// ---------------------------------------------------------------------------------
// Helpers for the sharding test: HAProxy in front of several relays.

/// The `haproxy` binary: `$HTTPRELAY_HAPROXY`, else `haproxy` on `PATH`, else
/// `/usr/sbin/haproxy` (not on every user's `PATH`). `None` when there is none.
pub fn haproxy_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("HTTPRELAY_HAPROXY") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("haproxy"))
        .find(|p| p.is_file())
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for programs that cannot be
/// told to pick one themselves and report it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A running `haproxy -db -f CONFIG` (foreground); killed when dropped.
pub struct Haproxy {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Haproxy {
    /// Starts haproxy on `config`, after `haproxy -c` accepted it. Does not wait for
    /// its listeners: the caller knows what to poll.
    pub fn start(binary: &Path, config: &Path) -> Haproxy {
        let check = Command::new(binary)
            .arg("-c")
            .arg("-f")
            .arg(config)
            .output()
            .expect("run haproxy -c");
        assert!(
            check.status.success(),
            "haproxy -c rejects {}:\n{}{}",
            config.display(),
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let mut child = Command::new(binary)
            .arg("-db")
            .arg("-f")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn haproxy");
        let log = Arc::new(Mutex::new(String::new()));
        let (lines_tx, _) = mpsc::channel::<String>();
        let stderr = child.stderr.take().expect("stderr pipe");
        let stdout = child.stdout.take().expect("stdout pipe");
        drain(stderr, "stderr", lines_tx.clone(), log.clone());
        drain(stdout, "stdout", lines_tx, log.clone());
        Haproxy { child, log }
    }

    /// Everything haproxy printed so far.
    pub fn output(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Relay {
    /// Kills the relay at once (SIGKILL): no answers to its waiters, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes straight to the process's stderr: the test harness captures
/// `eprintln!` of passing tests, and these lines must be seen.
pub fn loud(text: &str) {
    let mut err = io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// A test whose outside tool (`tool`, e.g. "BROWSER") is missing: it fails when
/// `require_var=1` (as in CI), else prints a loud SKIPPED banner. `what_not`
/// says what went untested; `hint` how to get the tool.
pub fn unavailable(tool: &str, require_var: &str, reason: &str, what_not: &str, hint: &str) {
    let required = std::env::var(require_var).is_ok_and(|v| v == "1");
    let rule = "!".repeat(78);
    if required {
        panic!(
            "\n{rule}\n{tool} TEST FAILED: {reason}\n{require_var}=1 is set, so this test may \
             not be skipped.\n{hint}\n{rule}"
        );
    }
    loud(&format!(
        "\n{rule}\n!!\n!!  {tool} TEST SKIPPED: {reason}\n!!\n!!  {what_not}\n!!  {hint}, or set \
         {require_var}=1 to make this a failure.\n!!\n{rule}\n\n"
    ));
}

/// One link transfer on fresh connections (consumer's request sent first, then
/// the producer's, on the given paths); panics unless the bytes arrive intact and
/// both sides get `200`. Returns both responses and the producer's and
/// consumer's local ports.
pub fn link_exchange(
    addr: &Addr,
    producer_path: &str,
    consumer_path: &str,
    body: &[u8],
    timeout: Duration,
    what: &str,
) -> (Response, Response, u16, u16) {
    let connect = || {
        let mut conn = Conn::open(addr);
        conn.set_read_timeout(timeout);
        conn
    };
    let mut consumer = connect();
    consumer.send(&req("GET", consumer_path, &[], b""));
    let mut producer = connect();
    producer.send(&req("POST", producer_path, &[], body));
    let got = consumer.read_response();
    assert_eq!(got.status(), 200, "{what}: consumer {:?}", got.head);
    assert!(
        got.body() == body,
        "{what}: {} bytes arrived, {} sent, or the bytes differ",
        got.body().len(),
        body.len()
    );
    let done = producer.read_response();
    assert_eq!(done.status(), 200, "{what}: producer {:?}", done.head);
    (got, done, producer.local_port(), consumer.local_port())
}

/// Body bytes that differ per transfer, so that a mix-up is caught.
pub fn body_for(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

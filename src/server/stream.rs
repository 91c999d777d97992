//! A client socket and the edge-triggered reads and writes on it: what one
//! read, one write or one body taken from the input buffer came to, with the
//! readiness rules every phase of the shell follows.

use std::io::{self, Read, Write};

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use crate::buf::{Buf, BufPool};
use crate::http::BodyDecoder;

/// The socket kinds the server accepts.
enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// A TLS session over TCP (`--features tls`).
    #[cfg(feature = "tls")]
    Tls(Box<super::tls::Session>),
}

impl Socket {
    /// What is read and written: the socket, or the TLS session over it.
    fn inner(&mut self) -> &mut dyn ReadWrite {
        match self {
            Socket::Tcp(s) => s,
            Socket::Unix(s) => s,
            #[cfg(feature = "tls")]
            Socket::Tls(s) => s.as_mut(),
        }
    }

    /// What the poller watches.
    fn source(&mut self) -> &mut dyn Source {
        match self {
            Socket::Tcp(s) => s,
            Socket::Unix(s) => s,
            #[cfg(feature = "tls")]
            Socket::Tls(s) => s.tcp_mut(),
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A client socket that remembers whether bytes moved since it was last asked
/// (the body timeout's notion of progress).
pub struct Stream {
    socket: Socket,
    /// Set when a read or write moved at least one byte.
    pub progressed: bool,
    /// Bytes written since the current request began (for the access log).
    pub written: u64,
    /// Bytes moved either way since the connection opened (a runaway
    /// connection is one that is driven again and again without moving any).
    pub moved_total: u64,
}

impl Stream {
    pub fn tcp(s: TcpStream) -> Stream {
        Stream {
            socket: Socket::Tcp(s),
            progressed: false,
            written: 0,
            moved_total: 0,
        }
    }

    pub fn unix(s: UnixStream) -> Stream {
        Stream {
            socket: Socket::Unix(s),
            progressed: false,
            written: 0,
            moved_total: 0,
        }
    }

    /// A TLS session over an accepted TCP socket.
    #[cfg(feature = "tls")]
    pub fn tls(session: super::tls::Session) -> Stream {
        Stream {
            socket: Socket::Tls(Box::new(session)),
            progressed: false,
            written: 0,
            moved_total: 0,
        }
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match &self.socket {
            Socket::Tcp(s) => s.as_raw_fd(),
            Socket::Unix(s) => s.as_raw_fd(),
            #[cfg(feature = "tls")]
            Socket::Tls(s) => s.tcp().as_raw_fd(),
        }
    }

    /// Whether bytes cross this socket as they are, so that a transfer may
    /// move them kernel-side (splice, the pass buffer): not over TLS, where
    /// each byte is encrypted or decrypted on its way.
    pub fn is_plain(&self) -> bool {
        match self.socket {
            Socket::Tcp(_) | Socket::Unix(_) => true,
            #[cfg(feature = "tls")]
            Socket::Tls(_) => false,
        }
    }

    /// Whether a TLS handshake is under way (the handshake timer runs).
    pub fn is_handshaking(&self) -> bool {
        match &self.socket {
            #[cfg(feature = "tls")]
            Socket::Tls(s) => s.is_handshaking(),
            _ => false,
        }
    }

    /// Whether a TLS handshake completed since this was last asked (once per
    /// session).
    pub fn take_handshake_done(&mut self) -> bool {
        match &mut self.socket {
            #[cfg(feature = "tls")]
            Socket::Tls(s) => s.take_handshake_done(),
            _ => false,
        }
    }

    /// Sends what a TLS session holds of its own (handshake messages, an
    /// alert) when the socket has room again. Nothing for a plain socket.
    pub fn flush_records(&mut self) {
        #[cfg(feature = "tls")]
        if let Socket::Tls(s) = &mut self.socket {
            let _ = s.flush_records();
        }
    }

    /// How bytes passed on from this socket are consumed once sent: TCP
    /// discards them, a Unix socket has them read again.
    #[cfg(target_os = "linux")]
    pub fn pass_consume(&self) -> crate::sys::pass::Consume {
        match self.socket {
            Socket::Tcp(_) => crate::sys::pass::Consume::Discard,
            Socket::Unix(_) => crate::sys::pass::Consume::Reread,
            // (Never passed: see `is_plain`.)
            #[cfg(feature = "tls")]
            Socket::Tls(_) => crate::sys::pass::Consume::Discard,
        }
    }

    /// Records bytes moved by zero-copy transfer (they bypass `Read`/`Write`).
    #[cfg(target_os = "linux")]
    pub fn moved(&mut self, n: usize, outgoing: bool) {
        self.progressed |= n > 0;
        self.moved_total += n as u64;
        if outgoing {
            self.written += n as u64;
        }
    }

    /// Makes the coming close reset the connection, discarding unsent bytes,
    /// so that a client that stopped reading cannot keep them in kernel memory.
    pub fn reset_on_close(&self) {
        crate::sys::socket::reset_on_close(self.raw_fd());
    }

    /// Over TLS, says that nothing more follows (`close_notify`), as far as
    /// the socket takes it; nothing for a plain socket.
    pub fn close_notify(&mut self) {
        #[cfg(feature = "tls")]
        if let Socket::Tls(s) = &mut self.socket {
            if !s.is_handshaking() {
                s.close_notify();
            }
        }
    }

    /// Ends the sending side (after TLS's `close_notify`, for a session).
    pub fn shutdown_write(&mut self) {
        self.close_notify();
        let _ = match &self.socket {
            Socket::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Socket::Unix(s) => s.shutdown(std::net::Shutdown::Write),
            #[cfg(feature = "tls")]
            Socket::Tls(s) => s.tcp().shutdown(std::net::Shutdown::Write),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.socket.inner().read(buf)?;
        self.progressed |= n > 0;
        self.moved_total += n as u64;
        Ok(n)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.socket.inner().write(buf)?;
        self.progressed |= n > 0;
        self.written += n as u64;
        self.moved_total += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.socket.source().register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.socket.source().reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.socket.source().deregister(registry)
    }
}

/// A read that returned less than asked drained the socket: with
/// edge-triggered readiness the next arrival is reported again, so the read
/// that would only say `WouldBlock` can be skipped. Not after the peer's FIN
/// was reported: that event has been used up, and only reading finds the end.
pub fn note_short_read(readable: &mut bool, peer_closed: bool, n: usize, asked: usize) {
    if n < asked && !peer_closed {
        *readable = false;
    }
}

/// One read into `input` (taken from `pool` if needed), with the
/// edge-triggered rules: `WouldBlock` or a short read clears `readable`
/// ([`note_short_read`]). The parts of a connection it needs, so that a caller
/// holding its phase can still read.
pub fn fill(
    stream: &mut Stream,
    input: &mut Option<Buf>,
    readable: &mut bool,
    peer_closed: bool,
    pool: &mut BufPool,
) -> Fill {
    fill_at_most(stream, input, readable, peer_closed, pool, usize::MAX)
}

/// [`fill`], reading at most `max` bytes.
pub fn fill_at_most(
    stream: &mut Stream,
    input: &mut Option<Buf>,
    readable: &mut bool,
    peer_closed: bool,
    pool: &mut BufPool,
    max: usize,
) -> Fill {
    let input = input.get_or_insert_with(|| pool.take());
    let spare = input.spare();
    let asked = spare.len().min(max);
    match stream.read(&mut spare[..asked]) {
        Ok(0) => Fill::Gone,
        Ok(n) => {
            input.commit(n);
            note_short_read(readable, peer_closed, n, asked);
            Fill::Read
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            *readable = false;
            Fill::Blocked
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Fill::Read,
        Err(_) => Fill::Gone,
    }
}

/// Why a body being taken whole stopped short.
#[derive(Debug, PartialEq, Eq)]
pub enum TakeError<E> {
    /// The body's framing is broken.
    Bad(crate::http::BodyError),
    /// The sink refused the bytes (a limit).
    Refused(E),
}

/// Decodes the body bytes buffered in `input` and hands each piece of content
/// to `sink`, until the input is used up or the body ends (the bytes after it,
/// a pipelined request, stay). A refused piece stays in the input. Returns
/// whether anything was consumed.
pub fn take_body<E>(
    input: &mut Option<Buf>,
    body: &mut BodyDecoder,
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<bool, TakeError<E>> {
    let Some(input) = input.as_mut() else {
        return Ok(false);
    };
    let mut progress = false;
    while !input.is_empty() && !body.is_done() {
        let decoded = body
            .decode(input.pending(), usize::MAX)
            .map_err(TakeError::Bad)?;
        sink(&input.pending()[decoded.data.clone()]).map_err(TakeError::Refused)?;
        input.consume(decoded.consumed);
        progress = true;
    }
    Ok(progress)
}

/// What one write brought.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// This many bytes went out (0 after an interrupted call: try again).
    Bytes(usize),
    /// The socket's buffer is full; `writable` was cleared.
    Blocked,
    /// The connection is broken: close it.
    Gone,
}

/// One write of `bytes` with the edge-triggered rules: `WouldBlock` clears
/// `writable`; so does a short write (the buffer is full, and readiness will
/// be reported again when it drains, so the write that would only block is
/// saved).
pub fn send(stream: &mut Stream, writable: &mut bool, bytes: &[u8]) -> Sent {
    match stream.write(bytes) {
        Ok(0) if !bytes.is_empty() => Sent::Gone,
        Ok(n) => {
            if n < bytes.len() {
                *writable = false;
            }
            Sent::Bytes(n)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            *writable = false;
            Sent::Blocked
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Sent::Bytes(0),
        Err(_) => Sent::Gone,
    }
}

/// What sending a body held in memory came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drained {
    /// All of it is sent.
    Done,
    /// The socket is full; the rest waits for it to drain.
    Blocked,
    /// The peer is gone.
    Gone,
}

/// Sends `body[*offset..]` as far as the socket takes it, moving `offset` on
/// and adding what was sent to `counted`.
pub fn send_rest(
    stream: &mut Stream,
    writable: &mut bool,
    body: &[u8],
    offset: &mut usize,
    counted: &mut u64,
) -> Drained {
    while *offset < body.len() && *writable {
        match send(stream, writable, &body[*offset..]) {
            Sent::Bytes(n) => {
                *offset += n;
                *counted += n as u64;
            }
            Sent::Blocked => {}
            Sent::Gone => return Drained::Gone,
        }
    }
    if *offset < body.len() {
        Drained::Blocked
    } else {
        Drained::Done
    }
}

/// One write of the output's pending bytes, if there are any and the socket
/// is writable ([`send`]'s rules); what went out is consumed. `Blocked` when
/// nothing could be written.
pub fn send_pending(stream: &mut Stream, writable: &mut bool, output: &mut Buf) -> Sent {
    if output.is_empty() || !*writable {
        return Sent::Blocked;
    }
    let sent = send(stream, writable, output.pending());
    if let Sent::Bytes(n) = sent {
        output.consume(n);
    }
    sent
}

/// What reading more of a request brought.
pub enum Fill {
    /// Bytes arrived (they are in `Conn::input`).
    Read,
    /// Nothing more for now.
    Blocked,
    /// The client closed or reset its side.
    Gone,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_body_feeds_content_to_the_sink_and_leaves_what_follows() {
        use crate::http::Framing;
        let mut pool = BufPool::new(64, 1);
        let mut input = Some(pool.take());
        input
            .as_mut()
            .unwrap()
            .push(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nGET / HTTP/1.1\r\n");
        let mut body = BodyDecoder::new(Framing::Chunked);
        let mut got = Vec::new();
        let taken = take_body(&mut input, &mut body, |piece| {
            got.extend_from_slice(piece);
            Ok::<(), ()>(())
        });
        assert_eq!(taken, Ok(true));
        assert!(body.is_done());
        assert_eq!(got, b"abcde");
        assert_eq!(input.as_ref().unwrap().pending(), b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn take_body_stops_at_a_refusal_or_bad_framing() {
        use crate::http::Framing;
        let mut pool = BufPool::new(64, 1);
        let mut input = Some(pool.take());
        input.as_mut().unwrap().push(b"hello world");
        let mut body = BodyDecoder::new(Framing::Length(11));
        let refused = take_body(&mut input, &mut body, |piece| {
            if piece.len() > 4 {
                Err("too long")
            } else {
                Ok(())
            }
        });
        assert_eq!(refused, Err(TakeError::Refused("too long")));
        let mut input = Some(pool.take());
        input.as_mut().unwrap().push(b"zz\r\n");
        let mut body = BodyDecoder::new(Framing::Chunked);
        let bad = take_body(&mut input, &mut body, |_| Ok::<(), ()>(()));
        assert!(matches!(bad, Err(TakeError::Bad(_))));
        let mut none = None;
        assert_eq!(
            take_body(&mut none, &mut body, |_| Ok::<(), ()>(())),
            Ok(false)
        );
    }

    #[test]
    fn send_clears_writable_when_the_socket_is_full_and_reports_a_broken_peer() {
        let (a, b) = mio::net::UnixStream::pair().expect("a socket pair");
        let mut stream = Stream::unix(a);
        let mut writable = true;
        let chunk = [7u8; 64 * 1024];
        let mut sent = 0;
        loop {
            match send(&mut stream, &mut writable, &chunk) {
                Sent::Bytes(n) if writable => sent += n,
                Sent::Bytes(n) => {
                    sent += n;
                    break;
                }
                Sent::Blocked => break,
                Sent::Gone => panic!("the peer is there"),
            }
        }
        assert!(!writable, "a full socket clears writable");
        assert!(sent > 0);
        assert_eq!(stream.written, sent as u64);
        drop(b);
        let mut writable = true;
        assert_eq!(send(&mut stream, &mut writable, b"x"), Sent::Gone);
    }

    #[test]
    fn a_short_read_drains_readiness_unless_the_peer_closed() {
        let mut readable = true;
        note_short_read(&mut readable, false, 10, 100);
        assert!(!readable);
        let mut readable = true;
        note_short_read(&mut readable, true, 10, 100);
        assert!(readable, "after FIN only a read finds the end");
        let mut readable = true;
        note_short_read(&mut readable, false, 100, 100);
        assert!(readable, "a full read may leave more");
    }
}

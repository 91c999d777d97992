//! Moving a body from one socket to another through one buffer the loop
//! owns, holding nothing back between calls: the producer's bytes are
//! peeked into the buffer, sent, and only what the receiver took is then
//! consumed from the producer (`MSG_TRUNC` discards it on TCP without a
//! second copy). What the receiver did not take stays in the producer's
//! socket, so the buffer serves every transfer in turn and no transfer
//! holds memory of its own.
//!
//! Why not `splice(2)`: measured on loopback with one client sending and
//! one receiving 2 GiB, a copy through a 1 MiB buffer carries 20-40 % more
//! than a splice through a 1 MiB pipe for about the same relay CPU, and the
//! receiving client spends half the CPU per GiB: spliced pages reach it
//! cold, while pages the relay has just copied into are warm and recycled
//! (ARCHITECTURE.md, "Producing / Consuming").

use std::io;
use std::os::fd::RawFd;

/// The most content one pass moves.
pub const PASS_MAX: usize = 1 << 20;

/// The most that may go in front of the content, in the same send (a
/// receiver's response head).
pub const PREFIX_MAX: usize = 1024;

/// What a pass did. `peeked == 0` means the producer ended its side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passed {
    /// Content bytes peeked from the producer.
    pub peeked: usize,
    /// Of the prefix, the bytes sent.
    pub prefix_sent: usize,
    /// Content bytes sent (and consumed from the producer).
    pub sent: usize,
}

/// Which side a pass failed on (`WouldBlock` included: that side is not
/// ready).
#[derive(Debug)]
pub enum PassError {
    Producer(io::Error),
    Receiver(io::Error),
}

/// How the bytes the receiver took are consumed from the producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consume {
    /// `MSG_TRUNC`: the kernel drops them (TCP).
    Discard,
    /// Read again into the buffer (Unix sockets have no discard).
    Reread,
}

/// The loop's pass buffer, allocated at the first pass.
#[derive(Default)]
pub struct PassBuf(Vec<u8>);

impl PassBuf {
    /// Moves up to `len` bytes (at most [`PASS_MAX`]) from socket `from` to
    /// socket `to`, behind `prefix` (at most [`PREFIX_MAX`] bytes, sent in
    /// the same call).
    pub fn pass(
        &mut self,
        from: RawFd,
        to: RawFd,
        prefix: &[u8],
        len: usize,
        consume: Consume,
    ) -> Result<Passed, PassError> {
        if self.0.is_empty() {
            self.0 = vec![0; PREFIX_MAX + PASS_MAX];
        }
        let at = prefix.len().min(PREFIX_MAX);
        let len = len.min(PASS_MAX);
        let peeked =
            recv(from, &mut self.0[at..at + len], libc::MSG_PEEK).map_err(PassError::Producer)?;
        if peeked == 0 {
            return Ok(Passed {
                peeked,
                prefix_sent: 0,
                sent: 0,
            });
        }
        self.0[..at].copy_from_slice(&prefix[..at]);
        // SAFETY: a plain descriptor and `at + peeked` initialised bytes.
        let sent = unsafe {
            libc::send(
                to,
                self.0.as_ptr().cast(),
                at + peeked,
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if sent < 0 {
            return Err(PassError::Receiver(io::Error::last_os_error()));
        }
        let prefix_sent = (sent as usize).min(at);
        let sent = sent as usize - prefix_sent;
        let consumed = match consume {
            Consume::Discard => discard(from, sent),
            Consume::Reread => recv(from, &mut self.0[..sent], 0),
        }
        .map_err(PassError::Producer)?;
        if consumed != sent {
            // The bytes were there a moment ago and nothing else reads this
            // socket: the kernel broke its word.
            return Err(PassError::Producer(io::Error::other(
                "peeked bytes vanished",
            )));
        }
        Ok(Passed {
            peeked,
            prefix_sent,
            sent,
        })
    }
}

fn recv(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    loop {
        // SAFETY: a plain descriptor and a buffer of `buf.len()` bytes.
        let n = unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn discard(fd: RawFd, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: with MSG_TRUNC a TCP socket copies nothing: no buffer.
        let n = unsafe {
            libc::recv(
                fd,
                std::ptr::null_mut(),
                len,
                libc::MSG_TRUNC | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        (a, b)
    }

    /// Passes a 300,000-byte body from `producer` (written into `relay_in`)
    /// to `consumer` (reading `relay_out`), the first pass only 10 bytes.
    fn pass_all(
        mut producer: impl Write + Send + 'static,
        relay_in: RawFd,
        relay_out: RawFd,
        mut consumer: impl Read,
        consume: Consume,
    ) -> Vec<u8> {
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let writer = std::thread::spawn(move || producer.write_all(&body).map(|_| body));
        let mut buf = PassBuf::default();
        let mut got = Vec::new();
        let mut chunk = vec![0; 1 << 16];
        let mut passed = 0;
        while passed < 300_000 {
            let len = if passed == 0 { 10 } else { 300_000 - passed };
            let prefix: &[u8] = if passed == 0 { b"<" } else { b"" };
            match buf.pass(relay_in, relay_out, prefix, len, consume) {
                Ok(p) => {
                    assert!(p.sent <= p.peeked && p.peeked <= len, "{p:?}");
                    assert!(p.peeked > 0, "the producer has not ended");
                    if passed == 0 {
                        // The prefix and exactly ten bytes went, in one
                        // send; the rest waits in the socket.
                        assert_eq!((p.prefix_sent, p.sent), (1, 10));
                        let mut first = [0u8; 11];
                        consumer.read_exact(&mut first).unwrap();
                        assert_eq!(first[0], b'<');
                        got.extend_from_slice(&first[1..]);
                    }
                    passed += p.sent;
                }
                // The receiver is full: the consumer reads.
                Err(PassError::Receiver(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    let n = consumer.read(&mut chunk).unwrap();
                    got.extend_from_slice(&chunk[..n]);
                }
                // The writer has not written more yet.
                Err(PassError::Producer(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("{consume:?}: {e:?}"),
            }
        }
        let body = writer.join().unwrap().unwrap();
        while got.len() < body.len() {
            let n = consumer.read(&mut chunk).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&chunk[..n]);
        }
        assert!(got == body, "{consume:?}: the bytes differ");
        got
    }

    #[test]
    fn passes_what_the_receiver_takes_and_leaves_the_rest_with_the_producer() {
        let (producer, relay_in) = tcp_pair();
        let (relay_out, consumer) = tcp_pair();
        consumer
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let (i, o) = (relay_in.as_raw_fd(), relay_out.as_raw_fd());
        pass_all(producer, i, o, consumer, Consume::Discard);
        let (producer, relay_in) = UnixStream::pair().unwrap();
        let (relay_out, consumer) = UnixStream::pair().unwrap();
        consumer
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let (i, o) = (relay_in.as_raw_fd(), relay_out.as_raw_fd());
        pass_all(producer, i, o, consumer, Consume::Reread);
    }

    #[test]
    fn an_ended_producer_peeks_nothing() {
        let (producer, relay_in) = tcp_pair();
        let (relay_out, _consumer) = tcp_pair();
        drop(producer);
        std::thread::sleep(Duration::from_millis(20));
        let passed = PassBuf::default()
            .pass(
                relay_in.as_raw_fd(),
                relay_out.as_raw_fd(),
                b"",
                100,
                Consume::Discard,
            )
            .unwrap();
        assert_eq!(passed.peeked, 0);
        assert_eq!(passed.sent, 0);
    }
}

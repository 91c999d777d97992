//! The shortcuts of a transfer to one receiver: a Content-Length body passed
//! socket → socket through the loop's pass buffer, a chunked body's large
//! chunks spliced socket → pipe → socket (both Linux), and content that
//! needs no decoding read straight into the receiver's output otherwise.
//! Several receivers, or a form, take the general way (`copy_to_receivers`,
//! and `tee` for zero copy).

use std::io::{self, Read};

use slab::Slab;

use super::Broke;
use crate::buf::Buf;
use crate::http::{BodyDecoder, Encoder};
use crate::server::conn::{Conn, ConnId, Phase};
use crate::server::stream::{note_short_read, Stream};

/// The least of a Content-Length body's rest that is passed socket to
/// socket; less is read into the receiver's output, where one read and one
/// send cost less than a peek, a send and a discard.
#[cfg(target_os = "linux")]
pub(super) const PASS_MIN: u64 = 16 << 10;

/// The least chunk data (or rest of it) a transfer splices; less is copied.
pub(super) const SPLICE_CHUNK_MIN: u64 = 16 << 10;

/// What a transfer's first pass may move; each pass that the receiver takes
/// whole doubles it, up to the pass buffer.
pub(super) const PASS_FIRST: u32 = 64 << 10;

/// Borrows the parts of producer `p` and its one receiver `r` that the
/// shortcuts work on, with the round's body decoder; `None` when `r` is not
/// receiving.
pub(super) fn ends<'a>(
    conns: &'a mut Slab<Conn>,
    p: ConnId,
    r: ConnId,
    body: &'a mut BodyDecoder,
) -> Result<Option<Ends<'a>>, Broke> {
    let Some((producer, receiver)) = conns.get2_mut(p.0, r.0) else {
        return Ok(None);
    };
    let Phase::Consuming {
        encoder,
        pass_window,
        ..
    } = &mut receiver.phase
    else {
        return Ok(None);
    };
    // (Only Linux passes bodies socket to socket.)
    #[cfg(not(target_os = "linux"))]
    let _ = pass_window;
    let output = receiver.output.as_mut().ok_or(Broke::NoOutput(r))?;
    Ok(Some(Ends {
        body,
        encoder,
        input: &mut producer.input,
        output,
        from: Side {
            stream: &mut producer.stream,
            ready: &mut producer.readable,
        },
        producer_closed: producer.peer_closed,
        #[cfg(target_os = "linux")]
        to: Side {
            stream: &mut receiver.stream,
            ready: &mut receiver.writable,
        },
        #[cfg(target_os = "linux")]
        receiver: r,
        #[cfg(target_os = "linux")]
        pass_window,
        #[cfg(target_os = "linux")]
        pipe: &mut receiver.pipe,
    }))
}

/// One side of a transfer: its socket and its readiness (readable for the
/// producer, writable for the receiver).
struct Side<'a> {
    stream: &'a mut Stream,
    ready: &'a mut bool,
}

/// The parts of a producer and its one receiver that the shortcuts work
/// on, borrowed apart so that each takes what it needs.
pub(super) struct Ends<'a> {
    body: &'a mut BodyDecoder,
    encoder: &'a mut Encoder,
    /// The producer's buffered bytes.
    input: &'a mut Option<Buf>,
    /// The receiver's framed bytes waiting to be sent.
    output: &'a mut Buf,
    from: Side<'a>,
    /// The producer closed its side: a short read may be its last.
    producer_closed: bool,
    #[cfg(target_os = "linux")]
    to: Side<'a>,
    #[cfg(target_os = "linux")]
    receiver: ConnId,
    /// The most the next pass may move (see [`PASS_FIRST`]).
    #[cfg(target_os = "linux")]
    pass_window: &'a mut u32,
    /// The pipe carrying a chunked body's large chunks to the receiver.
    #[cfg(target_os = "linux")]
    pipe: &'a mut Option<crate::sys::splice::Pipe>,
}

impl Ends<'_> {
    fn input_empty(&self) -> bool {
        self.input.as_ref().is_none_or(Buf::is_empty)
    }

    /// The rest of a Content-Length body sent as is, once nothing of it is
    /// buffered in user space and at least [`PASS_MIN`] of it is left, is
    /// passed from the producer's socket to the receiver's through the
    /// loop's pass buffer (`sys::pass`): up to the transfer's window is
    /// peeked, sent, and what the receiver took consumed from the producer;
    /// the rest stays in the producer's socket. What the receiver's output
    /// holds before it (its response head) goes in the same send when it is
    /// short. `None` when the body cannot go this way now; else whether
    /// bytes moved.
    #[cfg(target_os = "linux")]
    pub(super) fn pass(
        &mut self,
        buf: &mut crate::sys::pass::PassBuf,
        (relayed, passed): (&mut u64, &mut u64),
    ) -> Result<Option<bool>, Broke> {
        use crate::sys::pass::{PassError, PASS_MAX, PREFIX_MAX};
        if !self.may_pass() {
            return Ok(None);
        }
        let remaining = self.body.remaining_plain().unwrap_or(0);
        if !(*self.from.ready && *self.to.ready && self.output.len() <= PREFIX_MAX) {
            return Ok(Some(false));
        }
        let window = (*self.pass_window as usize).min(PASS_MAX);
        let len = usize::try_from(remaining).unwrap_or(usize::MAX).min(window);
        let consume = self.from.stream.pass_consume();
        let (from, to) = (self.from.stream.raw_fd(), self.to.stream.raw_fd());
        let p = match buf.pass(from, to, self.output.pending(), len, consume) {
            Ok(p) if p.peeked == 0 => return Err(Broke::Producer),
            Ok(p) => p,
            Err(PassError::Producer(e)) => match e.kind() {
                io::ErrorKind::WouldBlock => {
                    *self.from.ready = false;
                    return Ok(Some(false));
                }
                _ => return Err(Broke::Producer),
            },
            Err(PassError::Receiver(e)) => match e.kind() {
                io::ErrorKind::WouldBlock => {
                    *self.to.ready = false;
                    return Ok(Some(false));
                }
                io::ErrorKind::Interrupted => return Ok(Some(true)),
                _ => return Err(Broke::Receiver(self.receiver)),
            },
        };
        self.output.consume(p.prefix_sent);
        self.from.stream.moved(p.sent, false);
        self.to.stream.moved(p.prefix_sent + p.sent, true);
        self.body.advance_plain(p.sent as u64);
        *relayed += p.sent as u64;
        *passed += p.sent as u64;
        // A receiver that took a whole window may take more next time; one
        // that took less than was peeked sets the size of the next pass, so
        // that a slow receiver does not make every pass peek in vain. (Less
        // peeked than asked is the producer's pace, not the receiver's.)
        if p.sent == len {
            *self.pass_window = (*self.pass_window).saturating_mul(2).min(PASS_MAX as u32);
        } else if p.sent < p.peeked {
            *self.pass_window = u32::try_from(p.sent)
                .unwrap_or(u32::MAX)
                .max(PASS_MIN as u32);
        }
        if p.sent < p.peeked || !self.output.is_empty() {
            // The receiver is full; the producer's socket still holds what
            // was peeked and not taken.
            *self.to.ready = false;
        } else {
            note_short_read(self.from.ready, self.producer_closed, p.peeked, len);
        }
        Ok(Some(p.prefix_sent + p.sent > 0))
    }

    /// Whether the body may be passed socket to socket now: the rest of a
    /// Content-Length body sent as is, at least [`PASS_MIN`] of it, nothing
    /// of it buffered in the producer's input.
    #[cfg(target_os = "linux")]
    fn may_pass(&self) -> bool {
        self.body
            .remaining_in_length()
            .is_some_and(|r| r >= PASS_MIN)
            && self.encoder.sends_as_is()
            && self.input_empty()
    }

    /// Zero copy for a chunked body: once nothing is buffered in user space,
    /// a chunk's data of at least [`SPLICE_CHUNK_MIN`] (or its rest) moves
    /// socket → pipe → socket, filling and draining the pipe as each side
    /// allows (the pipe's size is the backpressure). A chunked receiver gets
    /// it as one chunk of its own: the size line goes into its output and
    /// out before the pipe drains, the CRLF after (`Encoder::open_chunk`).
    /// Only the size lines and the CRLFs between chunks pass through user
    /// space. `None` when the body cannot go this way now; else whether
    /// bytes moved.
    #[cfg(target_os = "linux")]
    pub(super) fn splice(
        &mut self,
        pipes: &mut crate::sys::splice::PipePool,
        (relayed, spliced): (&mut u64, &mut u64),
    ) -> Result<Option<bool>, Broke> {
        let pipe_busy = self.pipe.as_ref().is_some_and(|pipe| pipe.filled > 0);
        let in_chunk = self.encoder.chunk_open();
        let starts = !pipe_busy && !in_chunk && self.may_start();
        if !(pipe_busy || in_chunk || starts) {
            return Ok(None);
        }
        if self.pipe.is_none() {
            *self.pipe = pipes.take();
        }
        let Some(pipe) = self.pipe.as_mut() else {
            return Ok(None);
        };
        let mut progress = false;
        if starts && self.encoder.is_chunked() {
            let size = self.body.remaining_plain().unwrap_or(0);
            let line = self.encoder.open_chunk(size, self.output.spare());
            if line == 0 {
                return Ok(None);
            }
            self.output.commit(line);
            progress = true;
        }
        // The pipe drains once the output before it (a size line) is out.
        if pipe.filled > 0 && *self.to.ready && self.output.is_empty() {
            match pipe.drain_into(self.to.stream.raw_fd()) {
                Ok(n) => {
                    self.to.stream.moved(n, true);
                    *relayed += n as u64;
                    *spliced += n as u64;
                    progress |= n > 0;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => *self.to.ready = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                Err(_) => return Err(Broke::Receiver(self.receiver)),
            }
        }
        let remaining = self.body.remaining_plain().unwrap_or(0);
        if pipe.filled < pipe.capacity && remaining > 0 && *self.from.ready {
            let want = usize::try_from(remaining).unwrap_or(usize::MAX);
            match pipe.fill_from(self.from.stream.raw_fd(), want) {
                Ok(0) => return Err(Broke::Producer),
                Ok(n) => {
                    self.from.stream.moved(n, false);
                    self.body.advance_plain(n as u64);
                    progress = true;
                }
                // A would-block on filling means "the producer has nothing
                // more" only when the pipe is empty; with bytes in it, it
                // may mean the pipe is full, so readiness is kept.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if pipe.filled == 0 {
                        *self.from.ready = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                Err(_) => return Err(Broke::Producer),
            }
        }
        let chunk_through = pipe.filled == 0 && self.body.remaining_plain().unwrap_or(0) == 0;
        if self.encoder.chunk_open() && chunk_through {
            // Its CRLF goes out with what is framed next.
            self.encoder.close_chunk();
            progress = true;
        }
        Ok(Some(progress))
    }

    /// Whether a chunk's data may start going through a pipe now: nothing of
    /// it is buffered in the producer's input (the receiver's output may hold
    /// bytes before it: the pipe drains only once they are sent), at least
    /// [`SPLICE_CHUNK_MIN`] of it is left (below that the size line and the
    /// extra calls cost more than the copy), and the receiver keeps the body.
    /// A Content-Length body is passed instead (`pass`).
    #[cfg(target_os = "linux")]
    fn may_start(&self) -> bool {
        self.body.remaining_in_length().is_none()
            && self
                .body
                .remaining_plain()
                .is_some_and(|r| r >= SPLICE_CHUNK_MIN)
            && !self.encoder.drops_body()
            && self.input_empty()
    }

    /// Reads content that needs no decoding (a Content-Length body, or the
    /// data of the current chunk) straight into the receiver's output, never
    /// past its end (pipelined bytes after it belong to the producer's next
    /// request). Re-chunked, it goes behind a fixed-width chunk-size line
    /// written after the read. `None` when the content is not of that kind
    /// now (bytes are buffered, or the receiver drops the body).
    pub(super) fn read_direct(&mut self, relayed: &mut u64) -> Option<Result<bool, Broke>> {
        let remaining = self
            .body
            .remaining_plain()
            .filter(|&r| r > 0 && self.input_empty() && !self.encoder.drops_body())?;
        Some(self.read_plain(remaining, relayed))
    }

    fn read_plain(&mut self, remaining: u64, relayed: &mut u64) -> Result<bool, Broke> {
        if !*self.from.ready {
            return Ok(false);
        }
        let spare = self.output.spare();
        let start = self.encoder.direct_start();
        let room = self.encoder.direct_room(spare.len());
        let limit = usize::try_from(remaining).map_or(room, |r| r.min(room));
        if limit == 0 {
            return Ok(false);
        }
        match self.from.stream.read(&mut spare[start..start + limit]) {
            Ok(0) => Err(Broke::Producer),
            Ok(n) => {
                self.body.advance_plain(n as u64);
                let framed = self.encoder.frame_direct(n, spare);
                self.output.commit(framed);
                note_short_read(self.from.ready, self.producer_closed, n, limit);
                *relayed += n as u64;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *self.from.ready = false;
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(_) => Err(Broke::Producer),
        }
    }
}

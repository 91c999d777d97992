//! The shortcuts of a transfer to one receiver: a `Content-Length` body
//! spliced socket → pipe → socket (Linux), and content that needs no decoding
//! read straight into the receiver's output. Several receivers, or a form,
//! take the general way (`copy_to_receivers`, and `tee` for zero copy).

use std::io::{self, Read};

use slab::Slab;

use super::Broke;
use crate::buf::Buf;
use crate::http::{BodyDecoder, Encoder};
use crate::server::conn::{Conn, ConnId, Phase};
use crate::server::stream::{note_short_read, Stream};

/// The least chunk data (or rest of it) a transfer splices; less is copied.
pub(super) const SPLICE_CHUNK_MIN: u64 = 16 << 10;

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
    let Phase::Consuming { encoder, .. } = &mut receiver.phase else {
        return Ok(None);
    };
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
    /// The pipe carrying the body to the receiver without copying.
    #[cfg(target_os = "linux")]
    pipe: &'a mut Option<crate::sys::splice::Pipe>,
}

impl Ends<'_> {
    fn input_empty(&self) -> bool {
        self.input.as_ref().is_none_or(Buf::is_empty)
    }

    /// Zero copy: once nothing is buffered in user space, content that needs
    /// no decoding (the rest of a Content-Length body, or of a chunk's data
    /// of at least [`SPLICE_CHUNK_MIN`]) moves socket → pipe → socket,
    /// filling and draining the pipe as each side allows (the pipe's size is
    /// the backpressure). A chunked receiver gets a chunk's data as one chunk
    /// of its own: the size line goes into its output and out before the
    /// pipe drains, the CRLF after (`Encoder::open_chunk`). Only the size
    /// lines and the CRLFs between chunks pass through user space. `None`
    /// when the body cannot go this way now; else whether bytes moved.
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

    /// Whether the content may start going through a pipe now: nothing of
    /// it is buffered in the producer's input (the receiver's output may hold
    /// bytes before it: the pipe drains only once they are sent), and there
    /// is enough of it that needs no
    /// decoding (any rest of a Content-Length body; a chunk's data of at
    /// least [`SPLICE_CHUNK_MIN`], below which the size line and the extra
    /// calls cost more than the copy).
    #[cfg(target_os = "linux")]
    fn may_start(&self) -> bool {
        let Some(remaining) = self.body.remaining_plain().filter(|&r| r > 0) else {
            return false;
        };
        let worth_it = self.body.remaining_in_length().is_some() && self.encoder.sends_as_is()
            || remaining >= SPLICE_CHUNK_MIN && !self.encoder.drops_body();
        // (Output before the content is fine: the pipe drains after it.)
        worth_it && self.input_empty()
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

//! Streamed transfers between two connections: a producer's request body
//! becomes a consumer's response body as it arrives, with backpressure. Used by
//! link (producer to consumer) and proxy (client request to `SERVE` response,
//! and `SERVE` result to client response).

use std::io::{self, Read};

use super::{flush, Server, Step};
use crate::buf::{Buf, BufPool};
use crate::http::{
    response_framing, BodyDecoder, BodyError, Encoder, Exchange, HeadWriter, Status, CHUNK_OVERHEAD,
};
use crate::server::conn::{After, ConnId, Phase, Transfer};
use crate::server::reply::{self, Expose, Replaced};
use crate::server::stream::{fill, note_short_read, send, Fill, Sent, Stream};

mod fanout;
#[cfg(target_os = "linux")]
mod tee;

impl Server {
    /// Pairs producer `p` and consumer `c` for a transfer of `kind`: the
    /// consumer's response head goes out at once and the producer's body follows
    /// as it arrives.
    pub(super) fn start_transfer(&mut self, p: ConnId, c: ConnId, kind: Transfer) {
        // Either side may have been parked: its stashed bytes come first.
        self.unstash_input(p);
        self.unstash_input(c);
        let Some((producer, consumer)) = self.conns.get2_mut(p.0, c.0) else {
            self.broken(p, "paired with a connection that is gone");
            self.broken(c, "paired with a connection that is gone");
            return;
        };
        let framing = producer.req.framing();
        let output = consumer
            .output
            .get_or_insert_with(|| self.output_pool.take());
        // A proxy result may replace the relay's own fields with its values.
        let (status, expose, replaced) = match kind {
            Transfer::Link => (Status(200), Expose::Metadata, Replaced::NONE),
            Transfer::ProxyJob => (Status(200), Expose::All, Replaced::NONE),
            Transfer::ProxyResult => (
                super::proxy::result_status(&producer.head_copy),
                Expose::All,
                super::proxy::result_replaces(&producer.head_copy),
            ),
            // Unused: a piping receiver gets the reference's fields, below.
            Transfer::Piping => (Status(200), Expose::Metadata, Replaced::NONE),
        };
        consumer.status = status.0;
        let mut w = HeadWriter::new(output.spare(), status);
        let date = self.date.as_bytes();
        if kind == Transfer::Piping {
            // The reference server's fields, none of the relay's own.
            super::piping::receiver_fields(&mut w, producer, None);
            w.header("Date", date);
        } else {
            reply::common_except(&mut w, date, &consumer.req.origin, expose, replaced);
        }
        match kind {
            Transfer::Piping => {}
            Transfer::Link => {
                self.query_filter
                    .filter(&producer.req.query, &mut self.text);
                let meta = producer.meta(&self.text);
                reply::metadata(&mut w, &meta, consumer.arrived_unix_ms);
                if !producer.req.content_type.is_empty() {
                    w.header("Content-Type", &producer.req.content_type);
                }
            }
            Transfer::ProxyJob => super::proxy::job_fields(&mut w, producer),
            Transfer::ProxyResult => {
                // The relay reflects the client's Origin: caches must keep
                // responses for different origins apart whatever Vary the
                // result brings.
                let vary_origin =
                    !consumer.req.origin.is_empty() && !replaced.has(Replaced::ALLOW_ORIGIN);
                super::proxy::result_fields(&mut w, producer, vary_origin)
            }
        }
        // The producer's body framing, the consumer's method and version, and
        // the status decide how the body goes out (or that it is dropped).
        let chosen = response_framing(&Exchange {
            body: framing.into(),
            head_request: consumer.req.method_is("HEAD"),
            status: status.0,
            minor_version: consumer.req.minor_version,
            keep_alive: consumer.req.keep_alive,
        });
        consumer.req.keep_alive = chosen.keep_alive;
        chosen.header.write(&mut w);
        reply::persistence(&mut w, consumer.req.keep_alive, consumer.req.minor_version);
        match w.finish() {
            Some(n) => output.commit(n),
            None => {
                // Both sides are refused: neither can be paired any more.
                self.refuse_oversized_head(c);
                self.refuse_oversized_head(p);
                return;
            }
        }
        producer.phase = Phase::Producing {
            consumer: c,
            body: BodyDecoder::new(framing),
            kind,
        };
        consumer.phase = Phase::Consuming {
            producer: p,
            kind,
            encoder: chosen.encoder,
        };
        self.ready.extend([p, c]);
    }

    /// Moves body bytes from producer `p` to consumer `c` until one side blocks.
    pub(super) fn pump(&mut self, p: ConnId, c: ConnId) -> Step {
        loop {
            match self.pump_round(p, c) {
                Ok(Pumped::Moved) => {}
                Ok(Pumped::Blocked) => return Step::Blocked,
                Ok(Pumped::Finished) => {
                    self.finish_transfer(p, c);
                    return Step::Again;
                }
                Ok(Pumped::NotATransfer) => return Step::Closed,
                Err(Broke::Producer) => {
                    // The producer left mid-body: the consumer's response
                    // stays visibly incomplete.
                    self.close(p);
                    return Step::Again;
                }
                Err(Broke::Consumer) => {
                    self.close(c);
                    return Step::Again;
                }
                Err(Broke::Framing(e)) => {
                    self.abort_bad_body(p, c, e);
                    return Step::Again;
                }
                Err(Broke::NoOutput) => {
                    self.broken(c, "a consumer without its output buffer");
                    return Step::Again;
                }
            }
        }
    }

    /// One round of a transfer: decode what is buffered, send, move by
    /// splice or read more, each as far as the other side has room.
    fn pump_round(&mut self, p: ConnId, c: ConnId) -> Result<Pumped, Broke> {
        let Some((producer, consumer)) = self.conns.get2_mut(p.0, c.0) else {
            return Ok(Pumped::NotATransfer);
        };
        // A `100 Continue` may still be on its way to the producer.
        if producer.output.is_some() {
            flush(producer).map_err(|_| Broke::Producer)?;
            self.output_pool.give_if_empty(&mut producer.output);
        }
        let (Phase::Producing { body, .. }, Phase::Consuming { encoder, kind, .. }) =
            (&mut producer.phase, &mut consumer.phase)
        else {
            return Ok(Pumped::NotATransfer);
        };
        if *kind == Transfer::Piping && consumer.peer_closed {
            // A receiver that closed its side has left (`drive_consumer`).
            return Err(Broke::Consumer);
        }
        let output = consumer.output.as_mut().ok_or(Broke::NoOutput)?;
        let mut ends = Ends {
            body,
            encoder,
            input: &mut producer.input,
            output,
            from: Side {
                stream: &mut producer.stream,
                ready: &mut producer.readable,
                closed: producer.peer_closed,
            },
            to: Side {
                stream: &mut consumer.stream,
                ready: &mut consumer.writable,
                closed: consumer.peer_closed,
            },
        };
        let relayed = &mut self.stats.relayed_bytes;
        let mut progress = ends.decode_buffered(relayed)?;
        progress |= ends.send_output()?;
        #[cfg(target_os = "linux")]
        let spliced = {
            let pipe = &mut consumer.pipe;
            match ends.splice(pipe, &mut self.pipes, relayed)? {
                Some(moved) => {
                    progress |= moved;
                    true
                }
                None => false,
            }
        };
        #[cfg(not(target_os = "linux"))]
        let spliced = false;
        if !spliced {
            progress |= ends.read_more(&mut self.input_pool, relayed)?;
        }
        #[cfg(target_os = "linux")]
        let pipe_empty = consumer.pipe.as_ref().is_none_or(|pipe| pipe.filled == 0);
        #[cfg(not(target_os = "linux"))]
        let pipe_empty = true;
        let done = ends.body.is_done() && ends.encoder.is_ended();
        Ok(if done && ends.output.is_empty() && pipe_empty {
            Pumped::Finished
        } else if progress {
            Pumped::Moved
        } else {
            Pumped::Blocked
        })
    }

    /// The whole body reached the consumer: both move on, as the kind says.
    fn finish_transfer(&mut self, p: ConnId, c: ConnId) {
        let Some((producer, consumer)) = self.conns.get2_mut(p.0, c.0) else {
            return;
        };
        let Phase::Producing { kind, .. } = producer.phase else {
            return;
        };
        #[cfg(target_os = "linux")]
        if let Some(pipe) = consumer.pipe.take() {
            self.pipes.give(pipe);
        }
        consumer.phase = Phase::Responding(After::keeping(consumer.req.keep_alive));
        self.ready.extend([p, c]);
        self.transfer_done(p, c, kind);
    }

    /// The producer's chunked framing is broken: it gets `400`, the consumer a
    /// truncated body.
    fn abort_bad_body(&mut self, p: ConnId, c: ConnId, error: BodyError) {
        if let Some(Phase::Producing {
            kind: Transfer::Piping,
            ..
        }) = self.conns.get(p.0).map(|c| &c.phase)
        {
            // The sender's response has begun: it can only end. Closing it
            // cuts the receiver short and frees the path.
            self.close(p);
            return;
        }
        if let Some(Phase::Producing {
            kind: Transfer::ProxyJob,
            ..
        }) = self.conns.get(p.0).map(|c| &c.phase)
        {
            self.proxy_forget_job(p);
        }
        self.truncate_consumer(c);
        if let Some(producer) = self.conns.get_mut(p.0) {
            producer.req.keep_alive = false;
            let text = format!("400 {error}\n");
            self.respond_text(p, Status(400), &text, After::Linger);
        }
    }

    /// The consumer's response can never complete: send what is buffered (no
    /// final chunk) and close, so that it ends visibly short.
    pub(super) fn truncate_consumer(&mut self, c: ConnId) {
        if let Some(consumer) = self.conns.get_mut(c.0) {
            consumer.phase = Phase::Responding(After::Close);
            consumer.req.keep_alive = false;
            self.ready.push(c);
        }
    }

    /// The producer of a transfer failed: its consumer left, or its
    /// counterpart's part of the exchange broke. It gets `answer`, and its
    /// unread body is not waited for.
    pub(super) fn producer_failed(&mut self, p: ConnId, (status, text): (Status, &str)) {
        if let Some(producer) = self.conns.get_mut(p.0) {
            producer.req.keep_alive = false;
            self.respond_text(p, status, text, After::Linger);
            self.ready.push(p);
        }
    }
}

/// A broadcast's state while a round runs (taken out of the sender's phase).
pub(super) struct Group {
    pub(super) body: BodyDecoder,
    pub(super) receivers: Vec<ConnId>,
    pub(super) form: Option<Box<crate::server::conn::Form>>,
}

/// What one round of a transfer came to.
enum Pumped {
    /// Bytes moved: go again.
    Moved,
    /// Nothing can move until a socket is ready.
    Blocked,
    /// The whole body is with the consumer.
    Finished,
    /// The two are no longer producer and consumer of one transfer.
    NotATransfer,
}

/// Why a transfer round could not go on.
enum Broke {
    /// The producer left or its socket failed.
    Producer,
    /// The consumer left or its socket failed.
    Consumer,
    /// The producer's chunked framing is broken.
    Framing(BodyError),
    /// A consumer without an output buffer (a broken invariant).
    NoOutput,
}

/// One side of a transfer: its socket, its readiness (readable for the
/// producer, writable for the consumer) and whether its peer closed.
struct Side<'a> {
    stream: &'a mut Stream,
    ready: &'a mut bool,
    closed: bool,
}

/// The parts of a transfer's two connections that a round works on,
/// borrowed apart so that each step takes what it needs.
struct Ends<'a> {
    body: &'a mut BodyDecoder,
    encoder: &'a mut Encoder,
    /// The producer's buffered bytes.
    input: &'a mut Option<Buf>,
    /// The consumer's framed bytes waiting to be sent.
    output: &'a mut Buf,
    from: Side<'a>,
    to: Side<'a>,
}

impl Ends<'_> {
    fn input_empty(&self) -> bool {
        self.input.as_ref().is_none_or(Buf::is_empty)
    }

    /// Decodes buffered producer bytes into the consumer's output, as far as
    /// it has room, and frames the end once the body is over.
    fn decode_buffered(&mut self, relayed: &mut u64) -> Result<bool, Broke> {
        let mut progress = false;
        if let Some(input) = self.input.as_mut() {
            while !input.is_empty() && !self.body.is_done() {
                let spare = self.output.spare();
                let room = self.encoder.room(spare.len());
                if room == 0 {
                    break;
                }
                let decoded = self
                    .body
                    .decode(input.pending(), room)
                    .map_err(Broke::Framing)?;
                let data = &input.pending()[decoded.data.clone()];
                let framed = self.encoder.encode(data, spare);
                self.output.commit(framed);
                if !self.encoder.drops_body() {
                    *relayed += data.len() as u64;
                }
                input.consume(decoded.consumed);
                progress |= decoded.consumed > 0;
                if decoded.consumed == 0 {
                    break;
                }
            }
        }
        if self.body.is_done() && !self.encoder.is_ended() {
            let n = self.encoder.end(self.output.spare());
            self.output.commit(n);
        }
        Ok(progress)
    }

    /// Sends what the consumer's output holds.
    fn send_output(&mut self) -> Result<bool, Broke> {
        if self.output.is_empty() || !*self.to.ready {
            return Ok(false);
        }
        match send(self.to.stream, self.to.ready, self.output.pending()) {
            Sent::Bytes(n) => {
                self.output.consume(n);
                Ok(true)
            }
            Sent::Blocked => Ok(false),
            Sent::Gone => Err(Broke::Consumer),
        }
    }

    /// Zero copy: once nothing is buffered in user space, a Content-Length
    /// body moves socket → pipe → socket, filling and draining the pipe as
    /// each side allows (the pipe's size is the backpressure). `None` when
    /// the body cannot go this way now; else whether bytes moved.
    #[cfg(target_os = "linux")]
    fn splice(
        &mut self,
        pipe: &mut Option<crate::sys::splice::Pipe>,
        pipes: &mut crate::sys::splice::PipePool,
        relayed: &mut u64,
    ) -> Result<Option<bool>, Broke> {
        let pipe_busy = pipe.as_ref().is_some_and(|pipe| pipe.filled > 0);
        let eligible = pipe_busy
            || (self.encoder.sends_as_is()
                && self.input_empty()
                && self.output.is_empty()
                && self.body.remaining_in_length().is_some_and(|r| r > 0));
        if eligible && pipe.is_none() {
            *pipe = pipes.take();
        }
        let Some(pipe) = pipe.as_mut().filter(|_| eligible) else {
            return Ok(None);
        };
        let mut progress = false;
        if pipe.filled > 0 && *self.to.ready {
            match pipe.drain_into(self.to.stream.raw_fd()) {
                Ok(n) => {
                    self.to.stream.moved(n, true);
                    *relayed += n as u64;
                    progress |= n > 0;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => *self.to.ready = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                Err(_) => return Err(Broke::Consumer),
            }
        }
        let remaining = self.body.remaining_in_length().unwrap_or(0);
        if pipe.filled < pipe.capacity && remaining > 0 && *self.from.ready {
            let want = usize::try_from(remaining).unwrap_or(usize::MAX);
            match pipe.fill_from(self.from.stream.raw_fd(), want) {
                Ok(0) => return Err(Broke::Producer),
                Ok(n) => {
                    self.from.stream.moved(n, false);
                    self.body.advance_length(n as u64);
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
        Ok(Some(progress))
    }

    /// Reads more of the body, only when the output has room for it (this is
    /// the backpressure: a slow consumer slows the producer). Content that
    /// needs no decoding goes straight into the consumer's output.
    fn read_more(&mut self, pool: &mut BufPool, relayed: &mut u64) -> Result<bool, Broke> {
        let input_empty = self.input_empty();
        let direct = self
            .body
            .remaining_plain()
            .filter(|&r| r > 0 && input_empty && !self.encoder.drops_body());
        if let Some(remaining) = direct {
            return self.read_direct(remaining, relayed);
        }
        if self.body.is_done()
            || !input_empty
            || !*self.from.ready
            || self.output.spare_len() <= CHUNK_OVERHEAD
        {
            return Ok(false);
        }
        match fill(
            self.from.stream,
            self.input,
            self.from.ready,
            self.from.closed,
            pool,
        ) {
            Fill::Read => Ok(true),
            Fill::Blocked => Ok(false),
            Fill::Gone => Err(Broke::Producer),
        }
    }

    /// Reads content that needs no decoding (a Content-Length body, or the
    /// data of the current chunk) straight into the consumer's output, never
    /// past its end (pipelined bytes after it belong to the producer's next
    /// request). Re-chunked, it goes behind a fixed-width chunk-size line
    /// written after the read.
    fn read_direct(&mut self, remaining: u64, relayed: &mut u64) -> Result<bool, Broke> {
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
                note_short_read(self.from.ready, self.from.closed, n, limit);
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

#[cfg(test)]
mod tests {
    use crate::server::testing::{body_of, status_of, Shell};

    #[test]
    fn a_large_body_moves_at_the_consumers_pace_through_fixed_buffers() {
        const LEN: usize = 8 << 20;
        let body: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
        let mut shell = Shell::new(&[]);
        let length = format!("Content-Length: {LEN}");
        let (mut consumer, mut producer) = shell.link_pair("big", &length, b"");
        // The consumer reads nothing: the producer soon cannot write more.
        let mut sent = 0;
        loop {
            let n = producer.try_send(&mut shell, &body[sent..]);
            if n == 0 {
                break;
            }
            sent += n;
        }
        assert!(
            sent < LEN / 2,
            "{sent} bytes taken from the producer while its consumer reads nothing"
        );
        // Then both move, and every byte arrives in order.
        let mut received = consumer.take();
        while sent < LEN {
            sent += producer.try_send(&mut shell, &body[sent..]);
            received.extend(consumer.take());
        }
        for _ in 0..100 {
            shell.settle();
            received.extend(consumer.take());
        }
        let split = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(
            status_of(std::str::from_utf8(&received[..split]).unwrap()),
            200
        );
        assert!(
            received[split..] == body[..],
            "the body arrives whole and in order"
        );
        assert_eq!(status_of(&producer.text()), 200);
    }

    #[test]
    fn a_chunked_upload_reaches_the_consumer_as_it_comes() {
        let mut shell = Shell::new(&[]);
        let (mut consumer, mut producer) =
            shell.link_pair("c", "Transfer-Encoding: chunked", b"5\r\nhello\r\n");
        let first = consumer.text();
        assert_eq!(status_of(&first), 200);
        assert!(
            first.contains("\r\nTransfer-Encoding: chunked\r\n"),
            "{first}"
        );
        assert_eq!(body_of(&first), "5\r\nhello\r\n");
        producer.send(&mut shell, b"6\r\n world\r\n0\r\n\r\n");
        assert_eq!(consumer.text(), "6\r\n world\r\n0\r\n\r\n");
        assert_eq!(status_of(&producer.text()), 200);
    }

    #[test]
    fn broken_chunk_framing_is_400_for_the_producer_and_a_short_body_for_the_consumer() {
        let mut shell = Shell::new(&[]);
        let (mut consumer, mut producer) =
            shell.link_pair("c", "Transfer-Encoding: chunked", b"5\r\nhello\r\nzz\r\n");
        let got = consumer.text();
        assert!(got.ends_with("5\r\nhello\r\n"), "no final chunk: {got}");
        assert!(consumer.closed());
        let answer = producer.text();
        assert_eq!(status_of(&answer), 400);
        assert!(body_of(&answer).starts_with("400 "));
    }

    #[test]
    fn a_consumer_that_leaves_mid_body_gets_its_producer_a_502() {
        let mut shell = Shell::new(&[]);
        let (mut consumer, mut producer) = shell.link_pair("l", "Content-Length: 10", b"abc");
        assert_eq!(status_of(&consumer.text()), 200);
        consumer.close(&mut shell);
        // Learnt when the next bytes cannot be delivered (a consumer that only
        // shut its sending side may still be reading).
        producer.send(&mut shell, b"defg");
        let answer = producer.text();
        assert_eq!(status_of(&answer), 502);
        assert_eq!(body_of(&answer), "502 consumer disconnected\n");
    }
}

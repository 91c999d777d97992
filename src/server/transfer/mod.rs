//! Streamed transfers between two connections: a producer's request body
//! becomes a consumer's response body as it arrives, with backpressure. Used by
//! link (producer to consumer) and proxy (client request to `SERVE` response,
//! and `SERVE` result to client response).

use std::io::{self, Read};

use super::{flush, Server, Step};
use crate::buf::Buf;
use crate::http::{
    response_framing, BodyDecoder, BodyError, Exchange, HeadWriter, Status, CHUNK_OVERHEAD,
};
use crate::server::conn::{fill, send, After, ConnId, Fill, Phase, Sent, Transfer};
use crate::server::reply::{self, Expose, Replaced};

mod fanout;

impl Server {
    /// Pairs producer `p` and consumer `c` for a transfer of `kind`: the
    /// consumer's response head goes out at once and the producer's body follows
    /// as it arrives.
    pub(super) fn start_transfer(&mut self, p: ConnId, c: ConnId, kind: Transfer) {
        // Either side may have been parked: its stashed bytes come first.
        self.unstash_input(p);
        self.unstash_input(c);
        let Some((producer, consumer)) = self.conns.get2_mut(p.0, c.0) else {
            debug_assert!(false, "paired with a connection that is gone");
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
            let Some((producer, consumer)) = self.conns.get2_mut(p.0, c.0) else {
                return Step::Closed;
            };
            // A `100 Continue` may still be on its way to the producer.
            if producer.output.is_some() {
                if flush(producer).is_err() {
                    self.close(p);
                    return Step::Again;
                }
                self.output_pool.give_if_empty(&mut producer.output);
            }
            let Phase::Producing { body, .. } = &mut producer.phase else {
                return Step::Closed;
            };
            let Phase::Consuming { encoder, kind, .. } = &mut consumer.phase else {
                return Step::Closed;
            };
            if *kind == Transfer::Piping && consumer.peer_closed {
                // A receiver that closed its side has left (`drive_consumer`).
                self.close(c);
                return Step::Again;
            }
            let Some(output) = consumer.output.as_mut() else {
                debug_assert!(false, "a consumer holds its output buffer");
                return Step::Closed;
            };
            let mut progress = false;

            // 1. Decode buffered producer bytes into the consumer's output.
            if let Some(input) = producer.input.as_mut() {
                while !input.is_empty() && !body.is_done() {
                    let spare = output.spare();
                    let room = encoder.room(spare.len());
                    if room == 0 {
                        break;
                    }
                    let decoded = match body.decode(input.pending(), room) {
                        Ok(d) => d,
                        Err(e) => {
                            self.abort_bad_body(p, c, e);
                            return Step::Again;
                        }
                    };
                    let data = &input.pending()[decoded.data.clone()];
                    let framed = encoder.encode(data, spare);
                    output.commit(framed);
                    if !encoder.drops_body() {
                        self.stats.relayed_bytes += data.len() as u64;
                    }
                    input.consume(decoded.consumed);
                    progress |= decoded.consumed > 0;
                    if decoded.consumed == 0 {
                        break;
                    }
                }
            }
            if body.is_done() && !encoder.is_ended() {
                let n = encoder.end(output.spare());
                output.commit(n);
            }

            // 2. Send what the consumer's output holds.
            if !output.is_empty() && consumer.writable {
                match send(
                    &mut consumer.stream,
                    &mut consumer.writable,
                    output.pending(),
                ) {
                    Sent::Bytes(n) => {
                        output.consume(n);
                        progress = true;
                    }
                    Sent::Blocked => {}
                    Sent::Gone => {
                        self.close(c);
                        return Step::Again;
                    }
                }
            }

            let input_empty = producer.input.as_ref().is_none_or(Buf::is_empty);

            // 3a. Zero copy: once nothing is buffered in user space, a
            //     Content-Length body moves socket → pipe → socket, filling and
            //     draining the pipe as each side allows (the pipe's size is the
            //     backpressure). A would-block on filling means "producer has
            //     nothing more" only when the pipe is empty; with bytes in it, it
            //     may mean the pipe is full, so readiness is kept.
            #[cfg(target_os = "linux")]
            let spliced = {
                let pipe_busy = consumer.pipe.as_ref().is_some_and(|pipe| pipe.filled > 0);
                let eligible = pipe_busy
                    || (encoder.sends_as_is()
                        && input_empty
                        && output.is_empty()
                        && body.remaining_in_length().is_some_and(|r| r > 0));
                if eligible && consumer.pipe.is_none() {
                    consumer.pipe = self.pipes.take();
                }
                match consumer.pipe.as_mut().filter(|_| eligible) {
                    None => false,
                    Some(pipe) => {
                        if pipe.filled > 0 && consumer.writable {
                            match pipe.drain_into(consumer.stream.raw_fd()) {
                                Ok(n) => {
                                    consumer.stream.moved(n, true);
                                    self.stats.relayed_bytes += n as u64;
                                    progress |= n > 0;
                                }
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                    consumer.writable = false
                                }
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                                Err(_) => {
                                    self.close(c);
                                    return Step::Again;
                                }
                            }
                        }
                        let remaining = body.remaining_in_length().unwrap_or(0);
                        if pipe.filled < pipe.capacity && remaining > 0 && producer.readable {
                            let want = usize::try_from(remaining).unwrap_or(usize::MAX);
                            match pipe.fill_from(producer.stream.raw_fd(), want) {
                                Ok(0) => {
                                    // The producer left mid-body.
                                    self.close(p);
                                    return Step::Again;
                                }
                                Ok(n) => {
                                    producer.stream.moved(n, false);
                                    body.advance_length(n as u64);
                                    progress = true;
                                }
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                    if pipe.filled == 0 {
                                        producer.readable = false;
                                    }
                                }
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                                Err(_) => {
                                    self.close(p);
                                    return Step::Again;
                                }
                            }
                        }
                        true
                    }
                }
            };
            #[cfg(not(target_os = "linux"))]
            let spliced = false;

            // 3b. Otherwise read more of the body, only when the output has room
            //     for it (this is the backpressure: a slow consumer slows the
            //     producer).
            let direct = body
                .remaining_plain()
                .filter(|&r| r > 0 && input_empty && !encoder.drops_body() && !spliced);
            if let Some(remaining) = direct.filter(|_| producer.readable) {
                // Content that needs no decoding (a Content-Length body, or the
                // data of the current chunk) is read straight into the
                // consumer's output, never past its end (pipelined bytes after
                // it belong to the producer's next request). Re-chunked, it goes
                // behind a fixed-width chunk-size line written after the read.
                let spare = output.spare();
                let start = encoder.direct_start();
                let room = encoder.direct_room(spare.len());
                let limit = usize::try_from(remaining).map_or(room, |r| r.min(room));
                if limit > 0 {
                    match producer.stream.read(&mut spare[start..start + limit]) {
                        Ok(0) => {
                            // The producer left mid-body.
                            self.close(p);
                            return Step::Again;
                        }
                        Ok(n) => {
                            body.advance_plain(n as u64);
                            let framed = encoder.frame_direct(n, spare);
                            output.commit(framed);
                            crate::server::conn::note_short_read(
                                &mut producer.readable,
                                producer.peer_closed,
                                n,
                                limit,
                            );
                            self.stats.relayed_bytes += n as u64;
                            progress = true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            producer.readable = false
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                        Err(_) => {
                            self.close(p);
                            return Step::Again;
                        }
                    }
                }
            } else if direct.is_none()
                && !spliced
                && !body.is_done()
                && input_empty
                && producer.readable
                && output.spare_len() > CHUNK_OVERHEAD
            {
                match fill(
                    &mut producer.stream,
                    &mut producer.input,
                    &mut producer.readable,
                    producer.peer_closed,
                    &mut self.input_pool,
                ) {
                    Fill::Read => progress = true,
                    Fill::Blocked => {}
                    Fill::Gone => {
                        // The producer left mid-body: the consumer's response stays
                        // visibly incomplete.
                        self.close(p);
                        return Step::Again;
                    }
                }
            }

            #[cfg(target_os = "linux")]
            let pipe_empty = consumer.pipe.as_ref().is_none_or(|pipe| pipe.filled == 0);
            #[cfg(not(target_os = "linux"))]
            let pipe_empty = true;
            let done = body.is_done() && encoder.is_ended();
            if done && output.is_empty() && pipe_empty {
                self.finish_transfer(p, c);
                return Step::Again;
            }
            if !progress {
                return Step::Blocked;
            }
        }
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
            producer.phase = Phase::ReadingHead;
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

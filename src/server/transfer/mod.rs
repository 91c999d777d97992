//! The transfer engine: a producer's request body becomes the response body
//! of its receivers as it arrives, with backpressure. One receiver for link,
//! proxy (a client's request to a `SERVE` response, a `SERVE`'s result to the
//! client) and a piping path; several for piping with `?n=`; a form upload's
//! first part for a piping sender with a `multipart/form-data` body.
//!
//! One way through for all of them, a round of named steps repeated until
//! nothing moves: straight from socket to socket where it applies
//! (`straight`: a Content-Length body passed to one receiver, a chunked
//! body's large chunks spliced to one, any body teed to several), else the
//! buffered bytes decoded once and copied into every receiver's output
//! (`copy_to_receivers`), each receiver's output sent (`send_to_receivers`),
//! and more of the body read only when every receiver has room for it
//! (`read_more`): the slowest receiver sets the pace, with one fixed output
//! buffer each. Whatever breaks comes back as one [`Broke`], settled by
//! `transfer_broke`; the whole body delivered ends in `finish_transfer`, and
//! each method says what follows (`rooms::transfer_done`).

use super::{flush, Server, Step};
use crate::http::{
    response_framing, BodyDecoder, BodyError, Encoder, Exchange, HeadWriter, MultipartError,
    Status, CHUNK_OVERHEAD, MAX_DELIMITER,
};
use crate::server::conn::{After, ConnId, Form, FormPart, Phase, Receivers, Transfer};
use crate::server::reply;
use crate::server::rooms::{receiver_fields, receiver_status};
use crate::server::stream::{fill_at_most, send, Fill, Sent};

mod form;
mod one;
#[cfg(target_os = "linux")]
mod tee;

#[cfg(target_os = "linux")]
use tee::pipe_filled;

/// What a read between large chunks takes: the CRLF after a chunk and the
/// next size line, with a few bytes of data.
const FRAMING_READ: usize = 32;

/// A transfer's state while a round runs, taken out of the producer's phase
/// (so that each step can borrow any connection) and put back after it.
pub(super) struct Group {
    pub(super) body: BodyDecoder,
    pub(super) form: Option<Box<Form>>,
    pub(super) receivers: Receivers,
}

impl Group {
    pub(super) fn receivers(&self) -> &[ConnId] {
        self.receivers.as_slice()
    }

    /// The one receiver of a plain transfer (the zero-copy and direct-read
    /// shortcuts apply to it), or `None` for several or a form.
    fn single(&self) -> Option<ConnId> {
        match (&self.receivers, &self.form) {
            (Receivers::One(r), None) => Some(*r),
            _ => None,
        }
    }
}

/// What one round of a transfer came to.
enum Round {
    /// Bytes moved: go again.
    Moved,
    /// Nothing can move until a socket is ready.
    Blocked,
    /// Every receiver has the whole body (or the form's first part).
    Finished,
}

/// Why a transfer round could not go on.
pub(super) enum Broke {
    /// The producer left, its socket failed, or its body was cut.
    Producer,
    /// This receiver left or its socket failed.
    Receiver(ConnId),
    /// The producer's chunked framing is broken.
    Framing(BodyError),
    /// The upload is not the `multipart/form-data` it claims to be;
    /// `started`: the receivers have their heads already.
    Form {
        error: MultipartError,
        started: bool,
    },
    /// A receiver without its output buffer (a broken invariant).
    NoOutput(ConnId),
}

impl Server {
    /// Pairs producer `p` with `receivers` for a transfer of `kind`: each
    /// receiver's response head goes out at once, and the producer's body
    /// follows as it arrives.
    pub(super) fn start_transfer(&mut self, p: ConnId, receivers: Receivers, kind: Transfer) {
        // Any side may have been parked: its stashed bytes come first.
        self.unstash_input(p);
        for (i, &r) in receivers.as_slice().iter().enumerate() {
            self.unstash_input(r);
            let Some(encoder) = self.receiver_head(p, r, kind) else {
                self.refuse_all_heads(p, receivers.as_slice(), i);
                return;
            };
            self.conns[r.0].phase = Phase::Consuming {
                producer: p,
                kind,
                encoder,
                pass_window: one::PASS_FIRST,
            };
            self.ready.push(r);
        }
        let producer = &mut self.conns[p.0];
        producer.phase = Phase::Producing {
            body: BodyDecoder::new(producer.req.framing()),
            receivers,
            kind,
            form: None,
        };
        self.ready.push(p);
    }

    /// Writes receiver `c`'s response head for a transfer of `kind` from `p`;
    /// returns how its body is framed, or `None` when the head did not fit.
    fn receiver_head(&mut self, p: ConnId, c: ConnId, kind: Transfer) -> Option<Encoder> {
        let Some((producer, consumer)) = self.conns.get2_mut(p.0, c.0) else {
            self.broken(p, "paired with a connection that is gone");
            self.broken(c, "paired with a connection that is gone");
            return None;
        };
        let framing = producer.req.framing();
        let status = receiver_status(kind, producer);
        consumer.status = status.0;
        // Taken out while the head is written: each method's fields read the
        // whole receiving connection.
        let mut output = consumer
            .output
            .take()
            .unwrap_or_else(|| self.output_pool.take());
        let mut w = HeadWriter::new(output.spare(), status);
        let scratch = (&mut self.query_filter, &mut self.text);
        receiver_fields(
            kind,
            &mut w,
            producer,
            consumer,
            self.date.as_bytes(),
            scratch,
        );
        // The producer's body framing, the consumer's method and version, and
        // the status decide how the body goes out (or that it is dropped).
        let chosen = response_framing(&Exchange {
            body: framing.into(),
            head_request: consumer.req.method_is("HEAD"),
            status: status.0,
            minor_version: consumer.req.minor_version,
            keep_alive: consumer.req.keep_alive,
        });
        chosen.header.write(&mut w);
        reply::persistence(&mut w, chosen.keep_alive, consumer.req.minor_version);
        let written = w.finish();
        if let Some(n) = written {
            output.commit(n);
        }
        consumer.output = Some(output);
        consumer.req.keep_alive = chosen.keep_alive;
        written.map(|_| chosen.encoder)
    }

    /// A receiver's head did not fit (it reflects fields of the producer's
    /// head): nobody can be paired any more. The receivers before it, whose
    /// heads went out, end short; it, the rest and the producer get `500`.
    fn refuse_all_heads(&mut self, p: ConnId, receivers: &[ConnId], failed: usize) {
        for &r in &receivers[..failed] {
            self.truncate_consumer(r);
        }
        for &r in &receivers[failed..] {
            self.refuse_oversized_head(r);
        }
        self.refuse_oversized_head(p);
    }

    /// Moves producer `p`'s body to its receivers until nothing moves.
    pub(super) fn transfer(&mut self, p: ConnId) -> Step {
        loop {
            let Some(mut group) = self.take_group(p) else {
                return Step::Closed;
            };
            let round = self.transfer_round(p, &mut group);
            self.put_group(p, group);
            match round {
                Ok(Round::Moved) => {}
                Ok(Round::Blocked) => return Step::Blocked,
                Ok(Round::Finished) => {
                    self.finish_transfer(p);
                    return Step::Again;
                }
                Err(broke) => {
                    self.transfer_broke(p, broke);
                    return Step::Again;
                }
            }
        }
    }

    /// The producer's transfer state for a round, or `None` when it is not
    /// producing.
    fn take_group(&mut self, p: ConnId) -> Option<Group> {
        let Phase::Producing {
            body,
            receivers,
            form,
            ..
        } = &mut self.conns.get_mut(p.0)?.phase
        else {
            return None;
        };
        Some(Group {
            body: *body,
            form: form.take(),
            receivers: std::mem::take(receivers),
        })
    }

    /// Puts the round's state back into the producer's phase (nothing looks
    /// at it there while the round runs).
    fn put_group(&mut self, p: ConnId, group: Group) {
        if let Some(Phase::Producing {
            body,
            receivers,
            form,
            ..
        }) = self.conns.get_mut(p.0).map(|c| &mut c.phase)
        {
            (*body, *receivers, *form) = (group.body, group.receivers, group.form);
        }
    }

    /// Takes the receivers out of a producer's phase that is about to end.
    fn take_receivers(&mut self, p: ConnId) -> Option<(Receivers, Transfer)> {
        match &mut self.conns.get_mut(p.0)?.phase {
            Phase::Producing {
                receivers, kind, ..
            } => Some((std::mem::take(receivers), *kind)),
            _ => None,
        }
    }

    /// One round: zero copy, or decoded copies into every receiver's output;
    /// sends; more of the body when every receiver has room.
    fn transfer_round(&mut self, p: ConnId, group: &mut Group) -> Result<Round, Broke> {
        self.flush_producer(p)?;
        let mut straight = self.straight(p, group)?;
        let mut progress = match straight {
            Some(moved) => moved,
            None => {
                let copied = self.copy_to_receivers(p, group)?;
                // With the buffered bytes copied, the rest of the content
                // may go straight (behind them) rather than be read into
                // the producer's input.
                straight = self.straight(p, group)?;
                copied | straight.unwrap_or(false)
            }
        };
        let (sent, all_sent) = self.send_to_receivers(group)?;
        progress |= sent;
        if straight.is_none() {
            progress |= self.read_more(p, group)?;
        }
        // Bytes staged for the receivers are not sent yet either.
        #[cfg(target_os = "linux")]
        let all_sent = all_sent && pipe_filled(self.conns.get(p.0)) == 0;
        if group.body.is_done() {
            if let Some(form) = &group.form {
                if form.part != FormPart::After {
                    let error = form.decoder.finish().err();
                    return Err(Broke::Form {
                        error: error.unwrap_or(MultipartError::Unterminated),
                        started: form.part != FormPart::Before,
                    });
                }
            }
            if all_sent {
                return Ok(Round::Finished);
            }
        }
        Ok(if progress {
            Round::Moved
        } else {
            Round::Blocked
        })
    }

    /// Sends what the producer's own output holds: a `100 Continue`, or a
    /// piping sender's progress lines.
    fn flush_producer(&mut self, p: ConnId) -> Result<(), Broke> {
        let producer = &mut self.conns[p.0];
        if producer.output.is_some() {
            flush(producer).map_err(|_| Broke::Producer)?;
            self.output_pool.give_if_empty(&mut producer.output);
        }
        Ok(())
    }

    /// Straight from the producer's socket to the receivers', where it
    /// applies (Linux): to one receiver, a Content-Length body passed
    /// through the loop's buffer (`one::Ends::pass`) and a chunked body's
    /// large chunks through a pipe (`one::Ends::splice`); through a stage
    /// pipe and `tee(2)` to several.
    /// `None` when the round cannot go this way; else whether bytes moved.
    #[cfg(target_os = "linux")]
    fn straight(&mut self, p: ConnId, group: &mut Group) -> Result<Option<bool>, Broke> {
        if let Some(r) = group.single() {
            if !self.plain_ends(p, r) {
                // Over TLS every byte is encrypted or decrypted on its way:
                // the copy through the receiver's output, below.
                return Ok(None);
            }
            let Some(mut ends) = one::ends(&mut self.conns, p, r, &mut group.body)? else {
                return Ok(None);
            };
            let counts = (&mut self.stats.relayed_bytes, &mut self.stats.passed_bytes);
            if let Some(moved) = ends.pass(&mut self.pass_buf, counts)? {
                return Ok(Some(moved));
            }
            let counts = (&mut self.stats.relayed_bytes, &mut self.stats.spliced_bytes);
            return ends.splice(&mut self.pipes, counts);
        }
        match self.splice_round(p, group) {
            None => Ok(None),
            Some(Ok(moved)) => Ok(Some(moved)),
            Some(Err(tee::Cut)) => Err(Broke::Producer),
        }
    }

    /// Whether producer `p` and receiver `r` both carry bytes as they are
    /// (no TLS), so that they may go socket to socket between them.
    fn plain_ends(&self, p: ConnId, r: ConnId) -> bool {
        [p, r]
            .iter()
            .all(|c| self.conns.get(c.0).is_some_and(|c| c.stream.is_plain()))
    }

    #[cfg(not(target_os = "linux"))]
    fn straight(&mut self, _p: ConnId, _group: &mut Group) -> Result<Option<bool>, Broke> {
        Ok(None)
    }

    /// What the fullest receiver's output can take; a form's content may
    /// hand on a held delimiter prefix besides.
    fn room(&self, group: &Group) -> Result<usize, Broke> {
        let mut room = usize::MAX;
        for &r in group.receivers() {
            let Some(receiver) = self.conns.get(r.0) else {
                continue;
            };
            if let Phase::Consuming { encoder, .. } = &receiver.phase {
                let output = receiver.output.as_ref().ok_or(Broke::NoOutput(r))?;
                room = room.min(encoder.room(output.spare_len()));
            }
        }
        if group.form.is_some() {
            room = room.saturating_sub(MAX_DELIMITER + CHUNK_OVERHEAD);
        }
        Ok(room)
    }

    /// Decodes the producer's buffered bytes once and copies the content into
    /// every receiver's output (a form's through its multipart decoder), as
    /// far as the fullest has room.
    fn copy_to_receivers(&mut self, p: ConnId, group: &mut Group) -> Result<bool, Broke> {
        let mut progress = false;
        while !group.body.is_done() {
            let room = self.room(group)?;
            if room == 0 {
                break;
            }
            let Some(input) = self.conns[p.0].input.as_ref().filter(|i| !i.is_empty()) else {
                break;
            };
            let decoded = group
                .body
                .decode(input.pending(), room)
                .map_err(Broke::Framing)?;
            let data = decoded.data.clone();
            if group.form.is_some() {
                self.form_piece(p, group, data)
                    .map_err(|error| Broke::Form {
                        error,
                        started: group
                            .form
                            .as_ref()
                            .is_some_and(|f| f.part != FormPart::Before),
                    })?;
            } else {
                self.copy_piece(p, group, data);
            }
            if let Some(input) = self.conns[p.0].input.as_mut() {
                input.consume(decoded.consumed);
            }
            progress |= decoded.consumed > 0;
            if decoded.consumed == 0 {
                break;
            }
        }
        Ok(progress)
    }

    /// Frames `range` of the producer's input into every receiver's output.
    fn copy_piece(&mut self, p: ConnId, group: &Group, range: std::ops::Range<usize>) {
        for &r in group.receivers() {
            let Some((producer, receiver)) = self.conns.get2_mut(p.0, r.0) else {
                continue;
            };
            let (Phase::Consuming { encoder, .. }, Some(output), Some(input)) = (
                &mut receiver.phase,
                receiver.output.as_mut(),
                producer.input.as_ref(),
            ) else {
                continue;
            };
            let framed = encoder.encode(&input.pending()[range.clone()], output.spare());
            output.commit(framed);
            if !encoder.drops_body() {
                self.stats.relayed_bytes += range.len() as u64;
            }
        }
    }

    /// Each receiver sends what its output holds; the end is framed once the
    /// body (or the form's part) is over. Returns whether bytes went out, and
    /// whether every receiver has sent everything.
    fn send_to_receivers(&mut self, group: &mut Group) -> Result<(bool, bool), Broke> {
        let ended = match &group.form {
            None => group.body.is_done(),
            Some(form) => form.part == FormPart::After,
        };
        let mut progress = false;
        let mut all_sent = true;
        for &r in group.receivers() {
            let Some(receiver) = self.conns.get_mut(r.0) else {
                continue;
            };
            let Phase::Consuming { encoder, .. } = &mut receiver.phase else {
                continue;
            };
            let output = receiver.output.as_mut().ok_or(Broke::NoOutput(r))?;
            if ended && !encoder.is_ended() {
                let n = encoder.end(output.spare());
                output.commit(n);
            }
            if !output.is_empty() && receiver.writable {
                match send(
                    &mut receiver.stream,
                    &mut receiver.writable,
                    output.pending(),
                ) {
                    Sent::Bytes(n) => {
                        output.consume(n);
                        progress |= n > 0;
                    }
                    Sent::Blocked => {}
                    Sent::Gone => return Err(Broke::Receiver(r)),
                }
            }
            #[cfg(target_os = "linux")]
            let pipe_empty = receiver.pipe.as_ref().is_none_or(|p| p.filled == 0);
            #[cfg(not(target_os = "linux"))]
            let pipe_empty = true;
            all_sent &= output.is_empty() && encoder.is_ended() && pipe_empty;
        }
        Ok((progress, all_sent))
    }

    /// Reads more of the body, only when every receiver has room for it (this
    /// is the backpressure: a slow receiver slows the producer). For one
    /// receiver, content that needs no decoding goes straight into its output.
    fn read_more(&mut self, p: ConnId, group: &mut Group) -> Result<bool, Broke> {
        if let Some(r) = group.single() {
            if let Some(mut ends) = one::ends(&mut self.conns, p, r, &mut group.body)? {
                if let Some(read) = ends.read_direct(&mut self.stats.relayed_bytes) {
                    return read;
                }
            }
        }
        let room = self.room(group)?;
        let spliceable = group.single().is_some_and(|r| self.plain_ends(p, r));
        let producer = &mut self.conns[p.0];
        let input_empty = producer.input.as_ref().is_none_or(|i| i.is_empty());
        if group.body.is_done() || !input_empty || !producer.readable || room <= CHUNK_OVERHEAD {
            return Ok(false);
        }
        // Between chunks to one receiver, while the sender's chunks are
        // large, only the framing is read (and what little data comes with
        // it): the next chunk's data is left in the socket for the pipe
        // (`one::Ends::splice`).
        let max = if cfg!(target_os = "linux")
            && spliceable
            && group.body.in_framing()
            && group.body.recent_chunk() >= one::SPLICE_CHUNK_MIN
        {
            FRAMING_READ
        } else {
            usize::MAX
        };
        match fill_at_most(
            &mut producer.stream,
            &mut producer.input,
            &mut producer.readable,
            producer.peer_closed,
            &mut self.input_pool,
            max,
        ) {
            Fill::Read => Ok(true),
            Fill::Blocked => Ok(false),
            Fill::Gone => Err(Broke::Producer),
        }
    }

    /// Every receiver has the whole body: all move on, and the method says
    /// what follows for the producer.
    fn finish_transfer(&mut self, p: ConnId) {
        let Some((receivers, kind)) = self.take_receivers(p) else {
            return;
        };
        for &r in receivers.as_slice() {
            let Some(receiver) = self.conns.get_mut(r.0) else {
                continue;
            };
            #[cfg(target_os = "linux")]
            if let Some(pipe) = receiver.pipe.take() {
                self.pipes.give(pipe);
            }
            receiver.phase = Phase::Responding(After::keeping(receiver.req.keep_alive));
            self.ready.push(r);
        }
        #[cfg(target_os = "linux")]
        if let Some(stage) = self.conns.get_mut(p.0).and_then(|c| c.pipe.take()) {
            self.pipes.give(stage);
        }
        self.ready.push(p);
        let first = receivers.as_slice().first().copied();
        self.transfer_done(p, first, kind);
    }

    /// Settles what broke a round (the producer's phase holds the transfer
    /// again).
    fn transfer_broke(&mut self, p: ConnId, broke: Broke) {
        match broke {
            // The producer left mid-body: every receiver's response stays
            // visibly incomplete (`rooms::closed`).
            Broke::Producer => self.close(p),
            // The method learns it (`rooms::consumer_gone`).
            Broke::Receiver(r) => self.close(r),
            Broke::Framing(error) => {
                if let Some(&Phase::Producing { kind, .. }) = self.conns.get(p.0).map(|c| &c.phase)
                {
                    self.bad_body(p, kind, error);
                }
            }
            Broke::Form { error, started } => self.form_broke(p, error, started),
            Broke::NoOutput(r) => self.broken(r, "a receiver without its output buffer"),
        }
    }

    /// The producer's body cannot go on (its framing broke): it gets `400`,
    /// the receivers a truncated body.
    pub(super) fn cut_transfer(&mut self, p: ConnId, error: BodyError) {
        self.truncate_receivers(p);
        let text = format!("400 {error}\n");
        self.producer_failed(p, (Status(400), text.as_str()));
    }

    /// Every receiver of `p`, whose transfer is about to end, ends short.
    fn truncate_receivers(&mut self, p: ConnId) {
        let Some((receivers, _)) = self.take_receivers(p) else {
            return;
        };
        for &r in receivers.as_slice() {
            self.truncate_consumer(r);
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

    /// A receiver that closes after its whole response went out is done, not
    /// gone: it leaves the transfer without a word to the producer, and the
    /// transfer ends when the others have theirs.
    pub(super) fn receiver_done(&mut self, p: ConnId, r: ConnId) {
        if !self.conns.contains(r.0) {
            return;
        }
        // Nothing for it in its pipe, nor in the producer's stage.
        #[cfg(target_os = "linux")]
        let pipe_empty = self.conns[r.0].pipe.as_ref().is_none_or(|p| p.filled == 0)
            && pipe_filled(self.conns.get(p.0)) == 0;
        #[cfg(not(target_os = "linux"))]
        let pipe_empty = true;
        let receiver = &self.conns[r.0];
        let whole = matches!(&receiver.phase, Phase::Consuming { encoder, .. } if encoder.is_ended())
            && receiver.output.as_ref().is_none_or(|o| o.is_empty())
            && pipe_empty;
        let Some(Phase::Producing { receivers, .. }) =
            self.conns.get_mut(p.0).map(|c| &mut c.phase)
        else {
            return;
        };
        if !whole || !receivers.as_slice().contains(&r) {
            return;
        }
        receivers.remove(r);
        // Closed as done: `close` sees no transfer to settle.
        self.conns[r.0].phase = Phase::Responding(After::Close);
        self.ready.push(p);
    }
}

#[cfg(test)]
mod tests;

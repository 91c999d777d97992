//! One piping sender's body to its receivers when it cannot go as a plain
//! transfer: several receivers (`?n=`), or a `multipart/form-data` upload
//! whose first part alone is sent. The body is decoded once and copied into
//! every receiver's output as far as the fullest one has room, so the transfer
//! goes at the pace of the slowest receiver with one fixed output buffer each.

use crate::http::{
    response_framing, BodyDecoder, BodySize, Exchange, HeadWriter, MultipartError, MultipartEvent,
    Status, CHUNK_OVERHEAD, MAX_DELIMITER,
};
use crate::relay::Method;
use crate::server::conn::{After, ConnId, Form, FormPart, Phase, Transfer};
use crate::server::piping::{line, receiver_fields, PartFields};
use crate::server::reply;

#[cfg(target_os = "linux")]
use super::tee::{pipe_filled, Cut};
use super::Group;
use crate::server::stream::{fill, send, Fill, Sent};
use crate::server::{Server, Step};

/// What one round of a broadcast came to.
enum Round {
    /// Bytes moved: go again.
    Moved,
    /// Nothing can move until a socket is ready.
    Blocked,
    /// Every receiver has the whole body (or the form's first part).
    Finished,
    /// The sender left or its body's framing is broken.
    SenderGone,
    /// The upload is not the `multipart/form-data` it claims to be.
    BadForm(MultipartError),
}

impl Server {
    /// Turns the transfers just started from `sender` to each of `receivers`
    /// into one broadcast.
    pub(in crate::server) fn start_broadcast(&mut self, sender: ConnId, receivers: Vec<ConnId>) {
        let Some(conn) = self.conns.get_mut(sender.0) else {
            return;
        };
        if let Phase::Producing { body, .. } = conn.phase {
            conn.phase = Phase::Broadcasting {
                body,
                receivers,
                form: None,
            };
        }
    }

    /// Starts sending the first part of a form upload to `receivers`: their
    /// heads wait for the part's own fields.
    pub(in crate::server) fn start_form(
        &mut self,
        sender: ConnId,
        receivers: Vec<ConnId>,
        form: Form,
    ) {
        self.unstash_input(sender);
        for &r in &receivers {
            self.unstash_input(r);
            let Some(receiver) = self.conns.get_mut(r.0) else {
                continue;
            };
            receiver
                .output
                .get_or_insert_with(|| self.output_pool.take());
            receiver.phase = Phase::Consuming {
                producer: sender,
                kind: Transfer::Piping,
                encoder: part_framing(&receiver.req).encoder,
            };
            self.ready.push(r);
        }
        let Some(conn) = self.conns.get_mut(sender.0) else {
            return;
        };
        conn.phase = Phase::Broadcasting {
            body: BodyDecoder::new(conn.req.framing()),
            receivers,
            form: Some(Box::new(form)),
        };
        self.ready.push(sender);
    }

    /// A form upload whose `Content-Type` names no usable boundary: nothing
    /// is sent.
    pub(in crate::server) fn refuse_form(
        &mut self,
        sender: ConnId,
        receivers: Vec<ConnId>,
        error: MultipartError,
    ) {
        let body = BodyDecoder::new(self.conns[sender.0].req.framing());
        let group = Group {
            body,
            receivers,
            form: None,
        };
        self.form_failed(sender, group, error);
    }

    /// Moves the sender's body to its receivers until nothing moves.
    pub(in crate::server) fn broadcast(&mut self, s: ConnId) -> Step {
        loop {
            if !self.conns.contains(s.0) {
                return Step::Closed;
            }
            // Progress lines to the sender go out as they come.
            if self.send_output(s) == crate::server::Flushed::Closed {
                return Step::Again;
            }
            let Phase::Broadcasting {
                body,
                receivers,
                form,
            } = &mut self.conns[s.0].phase
            else {
                return Step::Again;
            };
            let mut group = Group {
                body: *body,
                receivers: std::mem::take(receivers),
                form: form.take(),
            };
            let round = self.broadcast_round(s, &mut group);
            match round {
                Round::Moved | Round::Blocked => {
                    if let Phase::Broadcasting {
                        body,
                        receivers,
                        form,
                    } = &mut self.conns[s.0].phase
                    {
                        (*body, *receivers, *form) = (group.body, group.receivers, group.form);
                    }
                    if matches!(round, Round::Blocked) {
                        return Step::Blocked;
                    }
                }
                Round::Finished => {
                    self.finish_broadcast(s, group);
                    return Step::Again;
                }
                Round::SenderGone => {
                    self.broadcast_sender_left(&group.receivers);
                    self.close(s);
                    return Step::Again;
                }
                Round::BadForm(error) => {
                    self.form_failed(s, group, error);
                    return Step::Again;
                }
            }
        }
    }

    /// One round of a broadcast: room, zero copy or decoded copies into
    /// every receiver's output, sends, and more of the body when every
    /// receiver has room for it.
    fn broadcast_round(&mut self, s: ConnId, group: &mut Group) -> Round {
        let mut room = self.group_room(group);
        #[cfg(target_os = "linux")]
        let spliced = match self.splice_round(s, group) {
            None => None,
            Some(Ok(moved)) => Some(moved),
            Some(Err(Cut)) => return Round::SenderGone,
        };
        #[cfg(not(target_os = "linux"))]
        let spliced: Option<bool> = None;
        let mut progress = match spliced {
            Some(moved) => moved,
            None => match self.copy_to_group(s, group, &mut room) {
                Ok(moved) => moved,
                Err(round) => return round,
            },
        };
        let (sent, all_sent) = self.send_to_group(group);
        progress |= sent;
        if spliced.is_none() {
            match self.read_for_group(s, group, room) {
                Ok(read) => progress |= read,
                Err(round) => return round,
            }
        }
        // Bytes staged for the receivers are not sent yet either.
        #[cfg(target_os = "linux")]
        let all_sent = all_sent && pipe_filled(self.conns.get(s.0)) == 0;
        if group.body.is_done() {
            if let Some(form) = &group.form {
                if form.part != FormPart::After {
                    return Round::BadForm(
                        form.decoder
                            .finish()
                            .err()
                            .unwrap_or(MultipartError::Unterminated),
                    );
                }
            }
            if all_sent {
                return Round::Finished;
            }
        }
        if progress {
            Round::Moved
        } else {
            Round::Blocked
        }
    }

    /// What the fullest receiver's output can take; a form's content may
    /// hand on a held delimiter prefix besides.
    fn group_room(&self, group: &Group) -> usize {
        let mut room = usize::MAX;
        for &r in &group.receivers {
            if let Some(receiver) = self.conns.get(r.0) {
                if let (Phase::Consuming { encoder, .. }, Some(output)) =
                    (&receiver.phase, receiver.output.as_ref())
                {
                    room = room.min(encoder.room(output.spare_len()));
                }
            }
        }
        if group.form.is_some() {
            room = room.saturating_sub(MAX_DELIMITER + CHUNK_OVERHEAD);
        }
        room
    }

    /// Decodes buffered sender bytes into every receiver's output (a form's
    /// through its multipart decoder), within `room`, which it uses up.
    fn copy_to_group(
        &mut self,
        s: ConnId,
        group: &mut Group,
        room: &mut usize,
    ) -> Result<bool, Round> {
        let mut progress = false;
        while *room > 0 && !group.body.is_done() {
            let Some(input) = self.conns[s.0].input.as_ref().filter(|i| !i.is_empty()) else {
                break;
            };
            let Ok(decoded) = group.body.decode(input.pending(), *room) else {
                return Err(Round::SenderGone);
            };
            let data = decoded.data.clone();
            if group.form.is_some() {
                self.form_piece(s, group, data.clone())
                    .map_err(Round::BadForm)?;
            } else {
                for &r in &group.receivers {
                    let Some((sender, receiver)) = self.conns.get2_mut(s.0, r.0) else {
                        continue;
                    };
                    let (Phase::Consuming { encoder, .. }, Some(output), Some(input)) = (
                        &receiver.phase,
                        receiver.output.as_mut(),
                        sender.input.as_ref(),
                    ) else {
                        continue;
                    };
                    let framed = encoder.encode(&input.pending()[data.clone()], output.spare());
                    output.commit(framed);
                }
                self.stats.relayed_bytes += (data.len() * group.receivers.len()) as u64;
            }
            *room -= data.len().min(*room);
            if let Some(input) = self.conns[s.0].input.as_mut() {
                input.consume(decoded.consumed);
            }
            progress |= decoded.consumed > 0;
            if decoded.consumed == 0 {
                break;
            }
        }
        Ok(progress)
    }

    /// Each receiver sends what it holds; the end is framed once the body
    /// (or the form's part) is over. Returns whether bytes went out, and
    /// whether every receiver has sent everything.
    fn send_to_group(&mut self, group: &Group) -> (bool, bool) {
        let ended = match &group.form {
            None => group.body.is_done(),
            Some(form) => form.part == FormPart::After,
        };
        let mut progress = false;
        let mut all_sent = true;
        for &r in &group.receivers {
            let Some(receiver) = self.conns.get_mut(r.0) else {
                continue;
            };
            let (Phase::Consuming { encoder, .. }, Some(output)) =
                (&mut receiver.phase, receiver.output.as_mut())
            else {
                continue;
            };
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
                    Sent::Gone => {
                        // Closed when driven, outside this loop over the group.
                        receiver.peer_closed = true;
                        self.ready.push(r);
                    }
                }
            }
            #[cfg(target_os = "linux")]
            let pipe_empty = receiver.pipe.as_ref().is_none_or(|p| p.filled == 0);
            #[cfg(not(target_os = "linux"))]
            let pipe_empty = true;
            all_sent &= output.is_empty() && encoder.is_ended() && pipe_empty;
        }
        (progress, all_sent)
    }

    /// Reads more of the body when every receiver has room for it.
    fn read_for_group(&mut self, s: ConnId, group: &Group, room: usize) -> Result<bool, Round> {
        let sender = &mut self.conns[s.0];
        let input_empty = sender.input.as_ref().is_none_or(|i| i.is_empty());
        if group.body.is_done() || !input_empty || !sender.readable || room <= CHUNK_OVERHEAD {
            return Ok(false);
        }
        match fill(
            &mut sender.stream,
            &mut sender.input,
            &mut sender.readable,
            sender.peer_closed,
            &mut self.input_pool,
        ) {
            Fill::Read => Ok(true),
            Fill::Blocked => Ok(false),
            Fill::Gone => Err(Round::SenderGone),
        }
    }

    /// Runs a piece of a form upload's content (`range` of the sender's
    /// input) through its multipart decoder: the first part's head becomes the
    /// receivers' heads, its content their bodies; the rest is dropped.
    fn form_piece(
        &mut self,
        s: ConnId,
        group: &mut Group,
        range: std::ops::Range<usize>,
    ) -> Result<(), MultipartError> {
        let Some(form) = group.form.as_mut() else {
            return Ok(());
        };
        let mut at = range.start;
        loop {
            let Some(input) = self.conns[s.0].input.as_ref() else {
                return Ok(());
            };
            let piece = &input.pending()[at..range.end];
            if piece.is_empty() {
                return Ok(());
            }
            let (used, event) = form.decoder.decode(piece)?;
            match (event, form.part) {
                (MultipartEvent::PartStart, FormPart::Before) => {
                    form.part = FormPart::In;
                    let part = PartFields {
                        content_type: form.decoder.field("content-type"),
                        disposition: form.decoder.field("content-disposition"),
                    };
                    for &r in &group.receivers {
                        if let Some((sender, receiver)) = self.conns.get2_mut(s.0, r.0) {
                            let framing = part_framing(&receiver.req);
                            let Some(output) = receiver.output.as_mut() else {
                                continue;
                            };
                            let mut w = HeadWriter::new(output.spare(), Status(200));
                            receiver_fields(&mut w, sender, Some(&part));
                            w.header("Date", self.date.as_bytes());
                            framing.header.write(&mut w);
                            receiver.req.keep_alive = framing.keep_alive;
                            reply::persistence(
                                &mut w,
                                receiver.req.keep_alive,
                                receiver.req.minor_version,
                            );
                            receiver.status = 200;
                            if let Some(n) = w.finish() {
                                output.commit(n);
                            }
                        }
                    }
                }
                (MultipartEvent::Data(data), FormPart::In) => {
                    let data = at + data.start..at + data.end;
                    for &r in &group.receivers {
                        if let Some((sender, receiver)) = self.conns.get2_mut(s.0, r.0) {
                            if let (Phase::Consuming { encoder, .. }, Some(output), Some(input)) = (
                                &receiver.phase,
                                receiver.output.as_mut(),
                                sender.input.as_ref(),
                            ) {
                                let framed =
                                    encoder.encode(&input.pending()[data.clone()], output.spare());
                                output.commit(framed);
                            }
                        }
                    }
                    self.stats.relayed_bytes += (data.len() * group.receivers.len()) as u64;
                }
                (MultipartEvent::Held(n), FormPart::In) => {
                    let mut held = [0u8; MAX_DELIMITER];
                    held[..n].copy_from_slice(form.decoder.held(n));
                    for &r in &group.receivers {
                        if let Some(receiver) = self.conns.get_mut(r.0) {
                            if let (Phase::Consuming { encoder, .. }, Some(output)) =
                                (&receiver.phase, receiver.output.as_mut())
                            {
                                let framed = encoder.encode(&held[..n], output.spare());
                                output.commit(framed);
                            }
                        }
                    }
                }
                (MultipartEvent::PartEnd, FormPart::In) => form.part = FormPart::After,
                _ => {}
            }
            at += used;
        }
    }

    /// Every receiver has the whole body: all move on.
    fn finish_broadcast(&mut self, s: ConnId, group: Group) {
        #[cfg(target_os = "linux")]
        for id in group.receivers.iter().chain([&s]) {
            if let Some(pipe) = self.conns.get_mut(id.0).and_then(|c| c.pipe.take()) {
                self.pipes.give(pipe);
            }
        }
        for r in group.receivers {
            if let Some(receiver) = self.conns.get_mut(r.0) {
                receiver.phase = Phase::Responding(After::keeping(receiver.req.keep_alive));
                self.ready.push(r);
            }
        }
        self.stats.transferred(Method::Piping);
        let now = self.now_millis();
        if let Some(sender) = self.conns.get(s.0) {
            self.relay.piping_finish(now, &sender.channel);
        }
        self.piping_end_sender(s, &[line::SENT, line::ALL_RECEIVED], true);
    }

    /// A form upload turned out malformed: receivers already streaming end
    /// short, the others are told; the sender's response ends with the reason.
    fn form_failed(&mut self, s: ConnId, group: Group, error: MultipartError) {
        let started = group
            .form
            .as_ref()
            .is_some_and(|f| f.part != FormPart::Before);
        for &r in &group.receivers {
            if started {
                self.truncate_consumer(r);
            } else if self.conns.contains(r.0) {
                let text = format!(
                    "[ERROR] The sender's upload is not valid multipart/form-data ({error}).\n"
                );
                self.piping_refuse(r, Status(502), &text);
                self.ready.push(r);
            }
        }
        let now = self.now_millis();
        if let Some(sender) = self.conns.get(s.0) {
            self.relay.piping_finish(now, &sender.channel);
        }
        let text = format!("[ERROR] The upload is not valid multipart/form-data ({error}).\n");
        self.piping_end_sender(s, &[&text], group.body.is_done());
    }

    /// A receiver of a broadcast left: the sender is told; the others go on,
    /// and when none is left the sender's response ends.
    pub(in crate::server) fn broadcast_receiver_left(&mut self, s: ConnId, r: ConnId) {
        let Some(sender) = self.conns.get_mut(s.0) else {
            return;
        };
        let Phase::Broadcasting { receivers, .. } = &mut sender.phase else {
            return;
        };
        receivers.retain(|&other| other != r);
        if receivers.is_empty() {
            let now = self.now_millis();
            self.relay.piping_finish(now, &self.conns[s.0].channel);
            self.piping_end_sender(s, &[line::ABORTED, line::ALL_ABORTED], false);
        } else {
            self.piping_progress(s, line::ABORTED);
            self.ready.push(s);
        }
    }

    /// A receiver of a broadcast that closes after its whole response went out
    /// is done, not aborted: it leaves the group without a word to the sender,
    /// and the broadcast ends when the others have theirs.
    pub(in crate::server) fn broadcast_receiver_done(&mut self, s: ConnId, r: ConnId) {
        if !self.conns.contains(r.0) {
            return;
        }
        // Nothing for it in its pipe, nor in the sender's stage.
        #[cfg(target_os = "linux")]
        let pipe_empty = self.conns[r.0].pipe.as_ref().is_none_or(|p| p.filled == 0)
            && pipe_filled(self.conns.get(s.0)) == 0;
        #[cfg(not(target_os = "linux"))]
        let pipe_empty = true;
        let receiver = &self.conns[r.0];
        let whole = matches!(&receiver.phase, Phase::Consuming { encoder, .. } if encoder.is_ended())
            && receiver.output.as_ref().is_none_or(|o| o.is_empty())
            && pipe_empty;
        let Some(Phase::Broadcasting { receivers, .. }) = self.conns.get(s.0).map(|c| &c.phase)
        else {
            return;
        };
        if !whole || !receivers.contains(&r) {
            return;
        }
        // Closed as done: `close` sees no transfer to settle.
        self.conns[r.0].phase = Phase::Responding(After::Close);
        if let Some(Phase::Broadcasting { receivers, .. }) =
            self.conns.get_mut(s.0).map(|c| &mut c.phase)
        {
            receivers.retain(|&other| other != r);
        }
        self.ready.push(s);
    }

    /// The sender of a broadcast is gone: every receiver's response ends short.
    pub(in crate::server) fn broadcast_sender_left(&mut self, receivers: &[ConnId]) {
        for &r in receivers {
            if let Some(Phase::Consuming {
                kind: Transfer::Piping,
                ..
            }) = self.conns.get(r.0).map(|c| &c.phase)
            {
                self.truncate_consumer(r);
            }
        }
    }
}

/// How a form part goes to a receiver: its length is not known before it
/// ends, so chunked (until close for HTTP/1.0).
fn part_framing(req: &crate::http::Request) -> crate::http::ResponseFraming {
    response_framing(&Exchange {
        body: BodySize::Unknown,
        head_request: false,
        status: 200,
        minor_version: req.minor_version,
        keep_alive: req.keep_alive,
    })
}

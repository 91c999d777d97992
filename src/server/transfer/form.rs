//! A piping sender's `multipart/form-data` upload (a browser form): only its
//! first part is sent. The receivers' heads wait for the part's own fields;
//! its content is their body; the rest of the upload is read and dropped.

use super::Group;
use crate::http::{
    response_framing, BodyDecoder, BodySize, Exchange, HeadWriter, MultipartError, MultipartEvent,
    Status, MAX_DELIMITER,
};
use crate::server::conn::{ConnId, Form, FormPart, Phase, Receivers, Transfer};
use crate::server::piping::{receiver_fields, PartFields};
use crate::server::reply;
use crate::server::Server;

impl Server {
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
                pass_window: super::one::PASS_FIRST,
            };
            self.ready.push(r);
        }
        let Some(conn) = self.conns.get_mut(sender.0) else {
            return;
        };
        conn.phase = Phase::Producing {
            body: BodyDecoder::new(conn.req.framing()),
            receivers: Receivers::from(receivers),
            kind: Transfer::Piping,
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
        self.form_failed(sender, &receivers, false, false, error);
    }

    /// A form upload turned out malformed while it was being sent.
    pub(super) fn form_broke(&mut self, s: ConnId, error: MultipartError, started: bool) {
        let Some(Phase::Producing {
            body, receivers, ..
        }) = self.conns.get(s.0).map(|c| &c.phase)
        else {
            return;
        };
        let body_read = body.is_done();
        let receivers = receivers.as_slice().to_vec();
        self.form_failed(s, &receivers, started, body_read, error);
    }

    /// A form upload is not valid `multipart/form-data`: receivers already
    /// streaming end short (`started`), the others are told; the sender's
    /// response ends with the reason.
    fn form_failed(
        &mut self,
        s: ConnId,
        receivers: &[ConnId],
        started: bool,
        body_read: bool,
        error: MultipartError,
    ) {
        for &r in receivers {
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
        self.piping_end_sender(s, &[&text], body_read);
    }

    /// Runs a piece of a form upload's content (`range` of the sender's
    /// input) through its multipart decoder: the first part's head becomes the
    /// receivers' heads, its content their bodies; the rest is dropped.
    pub(super) fn form_piece(
        &mut self,
        s: ConnId,
        group: &mut Group,
        range: std::ops::Range<usize>,
    ) -> Result<(), MultipartError> {
        let Group {
            form, receivers, ..
        } = group;
        let receivers = receivers.as_slice();
        let Some(form) = form.as_mut() else {
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
                    for &r in receivers {
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
                    for &r in receivers {
                        if let Some((sender, receiver)) = self.conns.get2_mut(s.0, r.0) {
                            if let (Phase::Consuming { encoder, .. }, Some(output), Some(input)) = (
                                &mut receiver.phase,
                                receiver.output.as_mut(),
                                sender.input.as_ref(),
                            ) {
                                let framed =
                                    encoder.encode(&input.pending()[data.clone()], output.spare());
                                output.commit(framed);
                            }
                        }
                    }
                    self.stats.relayed_bytes += (data.len() * receivers.len()) as u64;
                }
                (MultipartEvent::Held(n), FormPart::In) => {
                    let mut held = [0u8; MAX_DELIMITER];
                    held[..n].copy_from_slice(form.decoder.held(n));
                    for &r in receivers {
                        if let Some(receiver) = self.conns.get_mut(r.0) {
                            if let (Phase::Consuming { encoder, .. }, Some(output)) =
                                (&mut receiver.phase, receiver.output.as_mut())
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

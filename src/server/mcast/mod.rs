//! mcast: producers store numbered messages; readers each get one, streamed
//! from the shared stored copy at their own pace (even while it still uploads).

use crate::budget::Limit;
use crate::relay::Writer;
use std::rc::Rc;

pub(super) mod stream;

use super::hold::Collected;
use super::respond::Guarded;
use super::{Server, Step};
use crate::http::{
    find_param, parse_seqid, response_framing, BodyDecoder, BodySize, Exchange, Framing, Status,
};
use crate::relay::{
    AppendError, McastGet, Message, MessageState, Method, ProducerMeta, PublishError, WaiterId,
};
use crate::server::conn::{After, ConnId, Phase, Wait};
use crate::server::reply::{self, Expose, Meta};
use crate::server::stream::{send_pending, take_body, Sent, TakeError};

/// mcast's limit on one message (the store's total is the core's).
pub(super) struct McastRoom {
    /// `--mcast-max-message`.
    pub max_message: usize,
}

impl McastRoom {
    pub fn new(config: &crate::config::Config) -> McastRoom {
        McastRoom {
            max_message: config.mcast_max_message,
        }
    }
}

impl Server {
    pub(super) fn handle_mcast(&mut self, id: ConnId) -> Step {
        let req = &self.conns[id.0].req;
        match req.method.as_slice() {
            b"GET" | b"HEAD" if req.accepts_event_stream => self.open_stream(id),
            b"GET" => self.mcast_get(id),
            b"POST" | b"PUT" => self.mcast_publish(id),
            _ => self.refuse_method(
                id,
                "405 method not allowed: mcast takes GET, POST and PUT\n",
                b"GET, POST, PUT, OPTIONS",
            ),
        }
    }

    fn mcast_publish(&mut self, id: ConnId) -> Step {
        let framing = self.conns[id.0].req.framing();
        if matches!(framing, Framing::Length(n) if n > self.rooms.mcast.max_message as u64) {
            let text = format!(
                "413 message larger than {} bytes\n",
                self.rooms.mcast.max_message
            );
            self.refused_by(id, Limit::McastMaxMessage);
            return self.refuse(id, Status(413), &text);
        }
        let declared = match framing {
            Framing::Length(n) => Some(n),
            Framing::Empty => Some(0),
            Framing::Chunked => None,
        };
        if !self.relay.mcast_has_room(declared) {
            self.refused_by(id, Limit::McastTotal);
            return self.refuse(id, Status(503), "503 relay storage for messages is full\n");
        }
        self.load_secret(id);
        let client = self.client_of(id);
        let now = self.now_millis();
        let conn = &self.conns[id.0];
        self.query_filter.filter(&conn.req.query, &mut self.text);
        let meta = ProducerMeta {
            ip: conn.real_ip,
            port: conn.real_port,
            arrived_unix_ms: conn.arrived_unix_ms,
            method: conn.req.method.as_slice().into(),
            query: self.text.as_slice().into(),
            content_type: conn.req.content_type.as_slice().into(),
            content_length: declared,
        };
        let mut woken = std::mem::take(&mut self.waiters);
        woken.clear();
        let published = self.relay.mcast_publish(
            now,
            &conn.channel,
            Writer {
                secret: &self.secret,
                client,
            },
            meta,
            &mut woken,
        );
        let step = match published {
            Err(PublishError::Claim(e)) => self.refuse_claim(id, e, Guarded::Channel),
            Err(PublishError::Full) => {
                self.refused_by(id, Limit::McastTotal);
                self.refuse(id, Status(503), "503 relay storage for messages is full\n")
            }
            Ok(message) => {
                for &WaiterId(reader) in &woken {
                    self.start_reading(ConnId(reader), Rc::clone(&message));
                }
                self.continue_body(id);
                self.conns[id.0].phase = Phase::Publishing {
                    message,
                    body: BodyDecoder::new(framing),
                };
                Step::Again
            }
        };
        self.waiters = woken;
        step
    }

    /// Stores the producer's body as it arrives and wakes readers following it.
    pub(super) fn drive_publishing(&mut self, id: ConnId) -> Step {
        self.collect_body(id, Server::publish_buffered)
    }

    /// Appends the buffered body bytes to the message; at the body's end the
    /// message is complete.
    fn publish_buffered(&mut self, id: ConnId) -> Collected {
        let conn = &mut self.conns[id.0];
        let Phase::Publishing { message, body } = &mut conn.phase else {
            return Collected::Finished(Step::Again);
        };
        let message = Rc::clone(message);
        let (relay, max) = (&mut self.relay, self.rooms.mcast.max_message);
        let taken = take_body(&mut conn.input, body, |data| {
            relay.mcast_append(&message, data, max)
        });
        let progress = match taken {
            Ok(progress) => progress,
            Err(TakeError::Bad(e)) => {
                let text = format!("400 {e}\n");
                return Collected::Finished(self.fail_publishing(id, &message, Status(400), &text));
            }
            Err(TakeError::Refused(AppendError::Full)) => {
                let text = "503 relay storage for messages is full\n";
                self.refused_by(id, Limit::McastTotal);
                return Collected::Finished(self.fail_publishing(id, &message, Status(503), text));
            }
            Err(TakeError::Refused(AppendError::TooLarge)) => {
                let text = format!("413 message larger than {max} bytes\n");
                self.refused_by(id, Limit::McastMaxMessage);
                return Collected::Finished(self.fail_publishing(id, &message, Status(413), &text));
            }
        };
        if body.is_done() {
            return Collected::Finished(self.finish_publishing(id, &message));
        }
        self.wake_followers(&message);
        Collected::Taken(progress)
    }

    fn finish_publishing(&mut self, id: ConnId, message: &Rc<Message>) -> Step {
        let now = self.now_millis();
        self.relay
            .mcast_complete(now, &self.conns[id.0].channel, message);
        self.wake_followers(message);
        self.stats.messages += 1;
        let conn = &mut self.conns[id.0];
        // Taken out while the head is written: the head reads the whole
        // connection (its metadata).
        let mut output = conn.output.take();
        let mut w = reply::begin(
            &mut output,
            &mut self.output_pool,
            &mut conn.status,
            Status(200),
            self.date.as_bytes(),
            &conn.req.origin,
            Expose::Mcast,
        );
        w.header_number("HttpRelay-SeqId", message.seq);
        // The producer's own metadata.
        self.query_filter.filter(&conn.req.query, &mut self.text);
        reply::metadata(&mut w, &conn.meta(&self.text), conn.arrived_unix_ms);
        w.header_number("Content-Length", 0);
        reply::persistence(&mut w, conn.req.keep_alive, conn.req.minor_version);
        let written = w.finish();
        conn.output = output;
        let after = After::keeping(conn.req.keep_alive);
        conn.phase = Phase::Responding(after);
        if !written {
            self.refuse_oversized_head(id);
        }
        Step::Again
    }

    /// The upload broke a rule: the message is removed (its readers end
    /// truncated) and the producer gets `status`.
    fn fail_publishing(
        &mut self,
        id: ConnId,
        message: &Rc<Message>,
        status: Status,
        text: &str,
    ) -> Step {
        let now = self.now_millis();
        self.relay
            .mcast_abort(now, &self.conns[id.0].channel, message);
        self.wake_followers(message);
        let conn = &mut self.conns[id.0];
        conn.req.keep_alive = false;
        self.respond_text(id, status, text, After::Linger);
        Step::Again
    }

    pub(super) fn wake_followers(&mut self, message: &Message) {
        let mut woken = std::mem::take(&mut self.waiters);
        woken.clear();
        message.take_followers(&mut woken);
        self.ready
            .extend(woken.iter().map(|&WaiterId(key)| ConnId(key)));
        self.waiters = woken;
    }

    fn mcast_get(&mut self, id: ConnId) -> Step {
        let now = self.now_millis();
        let conn = &self.conns[id.0];
        let requested = if find_param(&conn.req.query, b"seqid", &mut self.secret) {
            Some(parse_seqid(&self.secret))
        } else {
            conn.req.cookie_seqid
        };
        match self
            .relay
            .mcast_get(now, &conn.channel, requested, WaiterId(id.0))
        {
            McastGet::Message(message) => {
                self.start_reading(id, message);
                Step::Again
            }
            McastGet::Parked => self.park(id, Wait::McastReader),
        }
    }

    /// The reader gets `message`; its head is written when it is driven.
    fn start_reading(&mut self, id: ConnId, message: Rc<Message>) {
        if let Some(conn) = self.conns.get_mut(id.0) {
            conn.phase = if matches!(conn.phase, Phase::Parked(Wait::McastStream)) {
                // A live stream: this is its next event.
                Phase::Streaming {
                    event: crate::http::sse::EventWriter::new(message.seq, None),
                    message,
                }
            } else {
                Phase::Delivering { message }
            };
            self.ready.push(id);
        }
    }

    pub(super) fn begin_reading(&mut self, id: ConnId) -> Step {
        let conn = &mut self.conns[id.0];
        let Phase::Delivering { message } = std::mem::replace(&mut conn.phase, Phase::ReadingHead)
        else {
            return Step::Again;
        };
        self.write_reader_head(id, message);
        Step::Again
    }

    /// Writes the reader's response head; the body follows from the message.
    fn write_reader_head(&mut self, id: ConnId, message: Rc<Message>) {
        let Some(conn) = self.conns.get_mut(id.0) else {
            return;
        };
        let supplied = find_param(&conn.req.query, b"seqid", &mut self.secret)
            || conn.req.cookie_seqid.is_some();
        let length = match message.state() {
            MessageState::Complete => Some(message.len() as u64),
            _ => message.meta.content_length,
        };
        // Readers only GET, and always get 200.
        let chosen = response_framing(&Exchange {
            body: length.map_or(BodySize::Unknown, BodySize::Known),
            head_request: false,
            status: 200,
            minor_version: conn.req.minor_version,
            keep_alive: conn.req.keep_alive,
        });
        conn.req.keep_alive = chosen.keep_alive;
        // Cookie path: the request path as sent, with the cookie's separators escaped.
        self.text.clear();
        self.text.extend_from_slice(b"SeqId=");
        let mut digits = [0u8; 20];
        self.text
            .extend_from_slice(crate::http::format_decimal(message.seq + 1, &mut digits));
        self.text.extend_from_slice(b"; Path=");
        for &b in &conn.req.raw_path {
            match b {
                b';' => self.text.extend_from_slice(b"%3B"),
                b',' => self.text.extend_from_slice(b"%2C"),
                _ => self.text.push(b),
            }
        }
        if conn.https {
            // Cross-site pages only get the cookie back with SameSite=None, which
            // browsers accept only on Secure cookies, so only over HTTPS.
            self.text.extend_from_slice(b"; SameSite=None; Secure");
        }
        let arrived = conn.arrived_unix_ms;
        let date = self.date.as_bytes();
        let (mut w, req) =
            conn.begin_response(&mut self.output_pool, Status(200), date, Expose::Mcast);
        let producer = &message.meta;
        let meta = Meta {
            ip: producer.ip,
            port: producer.port,
            arrived_unix_ms: producer.arrived_unix_ms,
            method: &producer.method,
            query: &producer.query,
        };
        reply::metadata(&mut w, &meta, arrived);
        if !producer.content_type.is_empty() {
            w.header("Content-Type", &producer.content_type);
        }
        w.header_number("HttpRelay-SeqId", message.seq)
            .header("Set-Cookie", &self.text);
        if supplied {
            w.header("Cache-Control", b"max-age=1200")
                .header("Vary", b"Cookie");
        }
        chosen.header.write(&mut w);
        reply::persistence(&mut w, req.keep_alive, req.minor_version);
        if w.finish() {
            conn.phase = Phase::Reading {
                message,
                offset: 0,
                encoder: chosen.encoder,
            };
        } else {
            self.refuse_oversized_head(id);
        }
        self.ready.push(id);
    }

    /// Sends the reader's message from the shared copy, following the upload.
    pub(super) fn drive_reading(&mut self, id: ConnId) -> Step {
        loop {
            let conn = &mut self.conns[id.0];
            let Phase::Reading {
                message,
                offset,
                encoder,
            } = &mut conn.phase
            else {
                return Step::Again;
            };
            let Some(output) = conn.output.as_mut() else {
                self.broken(id, "a reader without its output buffer");
                return Step::Closed;
            };
            let mut progress = false;
            let spare = output.spare();
            let room = encoder.room(spare.len());
            if *offset < message.len() && room > 0 {
                let (copied, framed) = message.with_bytes(*offset, |bytes| {
                    let data = &bytes[..bytes.len().min(room)];
                    (data.len(), encoder.encode(data, spare))
                });
                output.commit(framed);
                *offset += copied;
                self.stats.relayed_bytes += copied as u64;
                progress = true;
            }
            let mut done = false;
            if *offset == message.len() {
                match message.state() {
                    MessageState::Complete => {
                        let n = encoder.end(output.spare());
                        output.commit(n);
                        done = encoder.is_ended();
                    }
                    MessageState::Uploading => message.follow(WaiterId(id.0)),
                    MessageState::Aborted => {
                        // The upload failed: end visibly short.
                        conn.phase = Phase::Responding(After::Close);
                        conn.req.keep_alive = false;
                        return Step::Again;
                    }
                }
            }
            match send_pending(&mut conn.stream, &mut conn.writable, output) {
                Sent::Bytes(_) => progress = true,
                Sent::Blocked => {}
                Sent::Gone => {
                    self.close(id);
                    return Step::Closed;
                }
            }
            if done && output.is_empty() {
                self.stats.transferred(Method::Mcast);
                let after = After::keeping(conn.req.keep_alive);
                conn.phase = Phase::Responding(after);
                return Step::Again;
            }
            if !progress {
                return Step::Blocked;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::server::testing::{body_of, get, post, status_of, Shell};

    fn seq_of(response: &str) -> &str {
        let at = response.find("\r\nHttpRelay-SeqId: ").expect("a SeqId") + 19;
        &response[at..at + response[at..].find('\r').unwrap()]
    }

    #[test]
    fn a_message_reaches_every_waiting_reader_and_later_readers_by_seqid() {
        let mut shell = Shell::new(&[]);
        let mut readers = [shell.connect(), shell.connect(), shell.connect()];
        for reader in readers.iter_mut() {
            reader.send(&mut shell, &get("/mcast/m"));
            assert_eq!(reader.take(), b"", "waits for the next message");
        }
        let mut publisher = shell.connect();
        publisher.send(&mut shell, &post("/mcast/m", b"first"));
        assert_eq!(status_of(&publisher.text()), 200);
        for reader in readers.iter_mut() {
            let got = reader.text();
            assert_eq!(status_of(&got), 200);
            assert_eq!(seq_of(&got), "0");
            assert_eq!(body_of(&got), "first");
        }
        publisher.send(&mut shell, &post("/mcast/m", b"second"));
        let (mut late, got) = shell.ask(&get("/mcast/m?seqid=0"));
        assert_eq!((seq_of(&got), body_of(&got)), ("0", "first"));
        late.send(&mut shell, &get("/mcast/m?seqid=1"));
        let got = late.text();
        assert_eq!((seq_of(&got), body_of(&got)), ("1", "second"));
    }

    #[test]
    fn a_message_over_the_limit_is_413_and_stores_nothing() {
        let mut shell = Shell::new(&["--mcast-max-message", "4"]);
        let mut publisher = shell.connect();
        publisher.send(&mut shell, &post("/mcast/big", b"12345"));
        assert_eq!(status_of(&publisher.text()), 413);
        assert_eq!(shell.server.relay.mcast_bytes(), 0);
    }
}

//! mcast as a live stream (Server-Sent Events): `GET /mcast/{id}` with
//! `Accept: text/event-stream` gets every message of the channel from its
//! start on, one event each, as its upload completes, and stays open.
//!
//! Each event is framed from the shared stored message straight into the
//! connection's output buffer (`http::sse::EventWriter`), never copied per
//! reader. Between messages the stream waits in the channel as
//! `Parked(Wait::McastStream)` holding no buffer, like any waiter; a stream
//! following an upload gives its output buffer back too.

use crate::http::sse::{EventWriter, Skipped, KEEP_ALIVE};
use crate::http::{
    find_param, parse_seqid, response_framing, BodySize, Exchange, Request, ResponseFraming, Status,
};
use crate::relay::{MessageState, Missed, StreamNext, WaiterId};
use crate::server::conn::{After, ConnId, Phase, Timer, Wait};
use crate::server::reply::{self, Expose};
use crate::server::respond::{log_request, Flushed};
use crate::server::routes::KEEP_ALIVE_EVERY;
use crate::server::stream::{send_pending, Sent};
use crate::server::{Server, Step};

/// Output room an event needs to go on (its head, a skipped event).
const EVENT_ROOM: usize = 64;

/// A stream's body framing: chunked for HTTP/1.1, until close for HTTP/1.0.
fn stream_framing(req: &Request, head_request: bool) -> ResponseFraming {
    response_framing(&Exchange {
        body: BodySize::Unknown,
        head_request,
        status: 200,
        minor_version: req.minor_version,
        keep_alive: req.keep_alive,
    })
}

impl Server {
    /// `GET` (or `HEAD`) asking for `text/event-stream`: the stream's head,
    /// then its first message, or a wait for it.
    pub(in crate::server) fn open_stream(&mut self, id: ConnId) -> Step {
        let head_request = self.conns[id.0].req.method_is("HEAD");
        let conn = &mut self.conns[id.0];
        // Start: the event after `Last-Event-ID`, else `seqid`, else the
        // `SeqId` cookie (the next to read), else the next message published.
        // `Last-Event-ID` comes first because an `EventSource` reconnects to
        // the URL it opened, `seqid` and all: only that header says where it
        // stopped.
        let req = &conn.req;
        let from = if let Some(last) = req.last_event_id {
            Some(last.saturating_add(1))
        } else if find_param(&req.query, b"seqid", &mut self.secret) {
            Some(parse_seqid(&self.secret))
        } else {
            req.cookie_seqid
        };
        let chosen = stream_framing(req, head_request);
        conn.req.keep_alive = chosen.keep_alive;
        let date = self.date.as_bytes();
        let (mut w, req) =
            conn.begin_response(&mut self.output_pool, Status(200), date, Expose::Mcast);
        w.header("Content-Type", b"text/event-stream")
            .header("Cache-Control", b"no-cache")
            // nginx would otherwise buffer the stream.
            .header("X-Accel-Buffering", b"no");
        chosen.header.write(&mut w);
        reply::persistence(&mut w, req.keep_alive, req.minor_version);
        if !w.finish() {
            self.refuse_oversized_head(id);
            return Step::Again;
        }
        if head_request {
            let after = After::keeping(conn.req.keep_alive);
            conn.phase = Phase::Responding(after);
            return Step::Again;
        }
        // The stream reads nothing more: an input buffer with nothing in it
        // goes back now (pipelined bytes are stashed when it waits).
        self.input_pool.give_if_empty(&mut conn.input);
        self.stats.sse_streams += 1;
        self.next_event(id, from)
    }

    /// The stream goes on with the first message at or after `from` (none:
    /// the next one published), or waits for one. A server shutting down
    /// ends it instead.
    fn next_event(&mut self, id: ConnId, from: Option<u64>) -> Step {
        if self.shutdown_deadline.is_some() {
            return self.end_stream(id);
        }
        let now = self.now_millis();
        let conn = &mut self.conns[id.0];
        match self
            .relay
            .mcast_stream_next(now, &conn.channel, from, WaiterId(id.0))
        {
            StreamNext::Message { message, missed } => {
                let skipped = missed.map(|Missed { first, last }| Skipped { first, last });
                conn.phase = Phase::Streaming {
                    event: EventWriter::new(message.seq, skipped),
                    message,
                };
                Step::Again
            }
            StreamNext::Parked => self.park(id, Wait::McastStream),
        }
    }

    /// Sends the stream's current message as an event once its upload is
    /// complete; then looks for the next.
    pub(in crate::server) fn drive_streaming(&mut self, id: ConnId) -> Step {
        loop {
            let conn = &mut self.conns[id.0];
            if conn.peer_closed {
                // An `EventSource` that goes away closes its connection.
                self.close(id);
                return Step::Closed;
            }
            let Phase::Streaming { message, event } = &mut conn.phase else {
                return Step::Again;
            };
            match message.state() {
                // A failed upload never was a message: on to the next (still
                // telling the reader of those it missed before it).
                MessageState::Aborted if event.is_unstarted() => {
                    let from = event.skipped().map_or(event.id() + 1, |s| s.first);
                    return self.next_event(id, Some(from));
                }
                MessageState::Uploading if self.shutdown_deadline.is_some() => {
                    return self.end_stream(id);
                }
                MessageState::Uploading => {
                    // Sent once complete (the form of its data depends on the
                    // whole body): follow the upload without a buffer.
                    message.follow(WaiterId(id.0));
                    return match self.send_output(id) {
                        Flushed::Closed => Step::Closed,
                        Flushed::Done | Flushed::Pending => Step::Blocked,
                    };
                }
                // Complete (or aborted after its event began: its bytes stay).
                _ => {}
            }
            let mut encoder = stream_framing(&conn.req, false).encoder;
            let output = conn.output.get_or_insert_with(|| self.output_pool.take());
            let mut progress = false;
            let spare = output.spare();
            let (start, room) = (encoder.direct_start(), encoder.direct_room(spare.len()));
            if room >= EVENT_ROOM {
                let out = &mut spare[start..start + room];
                let n = message.with_bytes(0, |body| event.write(body, out));
                let framed = encoder.frame_direct(n, spare);
                output.commit(framed);
                progress = n > 0;
            }
            match send_pending(&mut conn.stream, &mut conn.writable, output) {
                Sent::Bytes(_) => progress = true,
                Sent::Blocked => {}
                Sent::Gone => {
                    self.close(id);
                    return Step::Closed;
                }
            }
            if event.is_done() {
                self.stats.sse_events += 1;
                self.stats.relayed_bytes += message.len() as u64;
                let next = event.id() + 1;
                if output.is_empty() {
                    // The event went out: the keep-alive silence starts anew.
                    conn.timer.kind = Timer::None;
                    self.output_pool.give_if_empty(&mut conn.output);
                }
                return self.next_event(id, Some(next));
            }
            if !progress {
                return Step::Blocked;
            }
        }
    }

    /// The keep-alive timer fired: a comment line goes to a stream that is
    /// between events, and the timer runs again.
    pub(in crate::server) fn keep_alive(&mut self, id: ConnId) {
        let conn = &mut self.conns[id.0];
        let between_events = match &conn.phase {
            Phase::Parked(Wait::McastStream) => true,
            Phase::Streaming { event, .. } => event.is_unstarted(),
            _ => false,
        };
        if between_events {
            let mut encoder = stream_framing(&conn.req, false).encoder;
            let output = conn.output.get_or_insert_with(|| self.output_pool.take());
            let spare = output.spare();
            if encoder.room(spare.len()) >= KEEP_ALIVE.len() {
                let n = encoder.encode(KEEP_ALIVE, spare);
                output.commit(n);
            }
            self.ready.push(id);
        }
        conn.timer.deadline = Some(self.now + KEEP_ALIVE_EVERY);
        self.schedule(id);
    }

    /// Ends a stream cleanly (the last chunk, when chunked) and closes it:
    /// the server is shutting down.
    pub(in crate::server) fn end_stream(&mut self, id: ConnId) -> Step {
        self.stats.sse_streams -= 1;
        let conn = &mut self.conns[id.0];
        let mut encoder = stream_framing(&conn.req, false).encoder;
        let output = conn.output.get_or_insert_with(|| self.output_pool.take());
        let n = encoder.end(output.spare());
        output.commit(n);
        conn.req.keep_alive = false;
        conn.phase = Phase::Responding(After::Close);
        self.ready.push(id);
        Step::Again
    }

    /// A stream's connection closes (its reader left, or stalled): it leaves
    /// the count, and the access log has its line.
    pub(in crate::server) fn stream_closing(&mut self, id: ConnId) {
        self.stats.sse_streams -= 1;
        let conn = &mut self.conns[id.0];
        if self.access_log && conn.status != 0 {
            log_request(conn);
            conn.status = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::server::testing::{post, status_of, Client, Shell};

    /// A stream request with `fields` (each ending in CRLF).
    fn stream(target: &str, fields: &str) -> Vec<u8> {
        format!("GET {target} HTTP/1.1\r\nHost: relay\r\nAccept: text/event-stream\r\n{fields}\r\n")
            .into_bytes()
    }

    /// A chunked body's content so far, and whether its last chunk came.
    fn dechunk(mut body: &[u8]) -> (String, bool) {
        let mut text = Vec::new();
        while let Some(at) = body.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(std::str::from_utf8(&body[..at]).unwrap(), 16)
                .expect("a chunk size");
            if size == 0 {
                return (String::from_utf8(text).unwrap(), true);
            }
            text.extend_from_slice(&body[at + 2..at + 2 + size]);
            body = &body[at + 2 + size + 2..];
        }
        (String::from_utf8(text).unwrap(), false)
    }

    /// A stream's head and its events so far (dechunked).
    fn opened(reader: &mut Client) -> (String, String) {
        let raw = reader.take();
        let at = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a head")
            + 4;
        let head = String::from_utf8(raw[..at].to_vec()).unwrap();
        (head, dechunk(&raw[at..]).0)
    }

    /// Events that came since the last look (each chunk complete).
    fn more(reader: &mut Client) -> String {
        dechunk(&reader.take()).0
    }

    fn publish(shell: &mut Shell, id: &str, body: &[u8]) {
        let (_, answer) = shell.ask(&post(&format!("/mcast/{id}"), body));
        assert_eq!(status_of(&answer), 200);
    }

    fn event(seq: u64, data: &str) -> String {
        let lines: Vec<String> = data.split('\n').map(|l| format!("data: {l}\n")).collect();
        format!("id: {seq}\n{}\n", lines.concat())
    }

    #[test]
    fn a_stream_gets_every_new_message_in_order_and_stays_open() {
        let mut shell = Shell::new(&[]);
        publish(&mut shell, "news", b"before");
        let mut reader = shell.connect();
        reader.send(&mut shell, &stream("/mcast/news", ""));
        let (head, events) = opened(&mut reader);
        assert_eq!(status_of(&head), 200);
        for field in [
            "\r\nContent-Type: text/event-stream\r\n",
            "\r\nCache-Control: no-cache\r\n",
            "\r\nTransfer-Encoding: chunked\r\n",
            "\r\nAccess-Control-Allow-Credentials: true\r\n",
            "\r\nHttpRelay-Version: ",
        ] {
            assert!(head.contains(field), "{field:?} in {head}");
        }
        assert_eq!(events, "", "only messages published from now on");
        publish(&mut shell, "news", b"one");
        publish(&mut shell, "news", b"two\nlines");
        assert_eq!(more(&mut reader), event(1, "one") + &event(2, "two\nlines"));
        assert!(!reader.closed());
        assert_eq!(shell.server.stats.sse_streams, 1);
        assert_eq!(shell.server.stats.sse_events, 2);
        assert!(
            shell.server.conns.iter().all(|(_, c)| c.output.is_none()),
            "an idle stream holds no output buffer"
        );
        reader.close(&mut shell);
        assert_eq!(shell.server.stats.sse_streams, 0);
        assert_eq!(shell.server.relay.waiter_count(), 0);
    }

    #[test]
    fn the_start_is_after_last_event_id_else_seqid_else_the_cookie() {
        let mut shell = Shell::new(&[]);
        for body in ["m0", "m1", "m2", "m3"] {
            publish(&mut shell, "s", body.as_bytes());
        }
        for (target, fields, first) in [
            (
                "/mcast/s?seqid=2",
                "Last-Event-ID: 0\r\nCookie: SeqId=1\r\n",
                1,
            ),
            ("/mcast/s?seqid=2", "Cookie: SeqId=1\r\n", 2),
            ("/mcast/s", "Last-Event-ID: 0\r\nCookie: SeqId=3\r\n", 1),
            ("/mcast/s", "Last-Event-ID: x\r\nCookie: SeqId=3\r\n", 3),
            ("/mcast/s", "Cookie: SeqId=2\r\n", 2),
        ] {
            let mut reader = shell.connect();
            reader.send(&mut shell, &stream(target, fields));
            let (_, events) = opened(&mut reader);
            let expected: String = (first..4).map(|n| event(n, &format!("m{n}"))).collect();
            assert_eq!(events, expected, "{target} {fields}");
        }
    }

    #[test]
    fn a_reader_behind_retention_gets_the_skipped_event_then_the_oldest_retained() {
        // Messages of 10 bytes cost 266: two are retained.
        let mut shell = Shell::new(&["--mcast-retain", "600"]);
        for n in 0..5 {
            publish(&mut shell, "r", format!("message {n}").as_bytes());
        }
        let mut reader = shell.connect();
        reader.send(&mut shell, &stream("/mcast/r?seqid=0", ""));
        let (_, events) = opened(&mut reader);
        let expected = "event: skipped\ndata: 0 2\n\n".to_owned()
            + &event(3, "message 3")
            + &event(4, "message 4");
        assert_eq!(events, expected);
    }

    #[test]
    fn bodies_that_are_not_text_without_cr_go_as_base64() {
        let mut shell = Shell::new(&[]);
        let mut reader = shell.connect();
        reader.send(&mut shell, &stream("/mcast/b", ""));
        opened(&mut reader);
        publish(&mut shell, "b", b"a\r\nb");
        publish(&mut shell, "b", b"\xff\x00\x01");
        publish(&mut shell, "b", b"");
        assert_eq!(
            more(&mut reader),
            "id: 0\nevent: base64\ndata: YQ0KYg==\n\n\
             id: 1\nevent: base64\ndata: /wAB\n\n\
             id: 2\ndata: \n\n"
        );
    }

    #[test]
    fn a_message_goes_out_once_its_upload_is_complete() {
        let mut shell = Shell::new(&[]);
        let mut reader = shell.connect();
        reader.send(&mut shell, &stream("/mcast/u", ""));
        opened(&mut reader);
        let mut producer = shell.connect();
        producer.send(
            &mut shell,
            b"POST /mcast/u HTTP/1.1\r\nHost: r\r\nContent-Length: 6\r\n\r\nabc",
        );
        assert_eq!(more(&mut reader), "", "not while uploading");
        assert!(
            shell.server.conns.iter().all(|(_, c)| c.output.is_none()),
            "a stream following an upload holds no output buffer"
        );
        producer.send(&mut shell, b"def");
        assert_eq!(more(&mut reader), event(0, "abcdef"));
    }

    #[test]
    fn a_large_message_streams_through_the_fixed_buffer_to_a_slow_reader() {
        let mut shell = Shell::new(&[]);
        let mut reader = shell.connect();
        reader.send(&mut shell, &stream("/mcast/l", ""));
        opened(&mut reader);
        let body: String = (0..400_000)
            .map(|i| (b'a' + (i % 26) as u8) as char)
            .collect();
        publish(&mut shell, "l", body.as_bytes());
        let mut raw = Vec::new();
        for _ in 0..100 {
            raw.extend(reader.take());
            shell.settle();
        }
        assert_eq!(dechunk(&raw).0, event(0, &body));
    }

    #[test]
    fn a_keep_alive_comment_after_15_s_of_silence_not_before_and_no_wait_timeout() {
        let mut shell = Shell::new(&["--wait-timeout", "5"]);
        let mut reader = shell.connect();
        reader.send(&mut shell, &stream("/mcast/k", ""));
        opened(&mut reader);
        shell.advance(Duration::from_millis(14_900));
        assert_eq!(more(&mut reader), "");
        shell.advance(Duration::from_millis(200));
        assert_eq!(more(&mut reader), ": keep-alive\n\n");
        publish(&mut shell, "k", b"x");
        assert_eq!(more(&mut reader), event(0, "x"));
        shell.advance(Duration::from_millis(14_900));
        assert_eq!(more(&mut reader), "", "silence counts from the last event");
        shell.advance(Duration::from_millis(200));
        assert_eq!(more(&mut reader), ": keep-alive\n\n");
        shell.advance(Duration::from_secs(15));
        assert_eq!(more(&mut reader), ": keep-alive\n\n");
        assert!(!reader.closed());
    }

    #[test]
    fn a_reader_that_stops_reading_is_closed_after_the_body_timeout() {
        let mut shell = Shell::new(&["--body-timeout", "8"]);
        let reader = {
            let mut reader = shell.connect();
            reader.send(&mut shell, &stream("/mcast/slow", ""));
            reader
        };
        let body = vec![b'z'; 100_000];
        for _ in 0..30 {
            publish(&mut shell, "slow", &body);
        }
        assert_eq!(shell.server.stats.sse_streams, 1);
        shell.advance(Duration::from_secs(7));
        assert_eq!(shell.server.stats.sse_streams, 1, "not yet");
        shell.advance(Duration::from_secs(4));
        assert_eq!(shell.server.stats.sse_streams, 0);
        assert_eq!(shell.open_conns(), 0);
        drop(reader);
    }

    #[test]
    fn head_gets_the_head_only_and_http_1_0_a_close_delimited_stream() {
        let mut shell = Shell::new(&[]);
        let (mut client, head) =
            shell.ask(b"HEAD /mcast/h HTTP/1.1\r\nHost: r\r\nAccept: text/event-stream\r\n\r\n");
        assert_eq!(status_of(&head), 200);
        assert!(head.ends_with("\r\n\r\n") && head.contains("text/event-stream"));
        assert!(!head.contains("Transfer-Encoding"));
        assert!(!client.closed(), "kept alive");
        let (_, other) = shell.ask(
            b"POST /mcast/h HTTP/1.1\r\nHost: r\r\nAccept: text/event-stream\r\nContent-Length: 1\r\n\r\nx",
        );
        assert_eq!(status_of(&other), 200, "a non-GET stores a message as ever");
        let mut old = shell.connect();
        old.send(
            &mut shell,
            b"GET /mcast/h HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n",
        );
        publish(&mut shell, "h", b"for 1.0");
        let raw = old.text();
        assert!(!raw.contains("chunked"), "{raw}");
        assert!(
            raw.ends_with(&format!("\r\n\r\n{}", event(1, "for 1.0"))),
            "{raw}"
        );
        assert_eq!(shell.server.stats.sse_streams, 1);
    }

    #[test]
    fn shutdown_ends_streams_with_their_last_chunk() {
        let mut shell = Shell::new(&[]);
        let mut idle = shell.connect();
        idle.send(&mut shell, &stream("/mcast/z", ""));
        let mut following = shell.connect();
        following.send(&mut shell, &stream("/mcast/z", ""));
        let mut producer = shell.connect();
        producer.send(
            &mut shell,
            b"POST /mcast/z HTTP/1.1\r\nHost: r\r\nContent-Length: 6\r\n\r\nabc",
        );
        idle.take();
        following.take();
        shell.server.begin_shutdown();
        shell.settle();
        for reader in [&mut idle, &mut following] {
            assert_eq!(reader.take(), b"0\r\n\r\n");
            assert!(reader.closed());
        }
        assert_eq!(shell.server.stats.sse_streams, 0);
    }
}

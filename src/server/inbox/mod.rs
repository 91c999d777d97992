//! inbox: a message kept until its reader acknowledges it, as pubky's
//! `http-relay` serves `/inbox/{id}`. `POST` stores (the body is read whole,
//! within `--inbox-max-message` and `--inbox-total`), `GET` reads without
//! consuming (and waits while there is nothing), `DELETE` acknowledges,
//! `/ack` tells whether it was, `/await` waits until it is. Waits end with
//! `408` after `--inbox-timeout`.
//!
//! Answers word their bodies as the reference does (`Not found`, `Request
//! timed out`, `true`/`false`), so that its clients read them unchanged.

use crate::budget::Limit;
use crate::relay::Writer;
use std::rc::Rc;

use super::respond::{body_after, Guarded, PLAIN_TEXT};
use super::{Server, Step};
use crate::http::{percent_decode, BodyDecoder, Framing, Status};
use crate::relay::{InboxAwait, InboxGet, InboxMessage, WaiterId, INBOX_MESSAGE_OVERHEAD};
use crate::server::conn::{After, ConnId, Hold, Phase, Wait};
use crate::server::reply::{self, Expose};

/// Longest inbox id, in bytes after percent-decoding (as the reference).
pub const MAX_INBOX_ID: usize = 256;

pub(super) const TIMED_OUT: &str = "Request timed out";
/// The answer when the journal has no room under `--data-max`.
const STORE_FULL: &str = "507 relay storage full: not kept\n";
const NOT_FOUND: &str = "Not found";
const BUSY: &str = "Too many concurrent requests";

/// Which inbox endpoint a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Endpoint {
    /// `/inbox/{id}`: the message.
    Message,
    /// `/inbox/{id}/ack`: whether it was acknowledged.
    Ack,
    /// `/inbox/{id}/await`: wait for the acknowledgement.
    Await,
}

impl Endpoint {
    /// The methods the endpoint takes (the `Allow` of its `405`).
    pub(super) fn allow(self) -> &'static [u8] {
        match self {
            Endpoint::Message => b"GET, HEAD, POST, DELETE, OPTIONS",
            Endpoint::Ack | Endpoint::Await => b"GET, HEAD, OPTIONS",
        }
    }
}

/// Why an inbox path was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PathError {
    /// Not an inbox endpoint (`/inbox/`, `/inbox/a/b/c`, `/inbox/a/x`).
    NoRoute,
    TooLong,
    NotUtf8,
}

/// Splits the part of the path as sent after `/inbox/` into the id segment
/// (still percent-encoded) and the endpoint.
pub(super) fn endpoint_of(raw: &[u8]) -> Result<(&[u8], Endpoint), PathError> {
    let mut segments = raw.splitn(3, |&b| b == b'/');
    let segment = segments.next().unwrap_or_default();
    let endpoint = match (segments.next(), segments.next()) {
        (None, _) => Endpoint::Message,
        (Some(b"ack"), None) => Endpoint::Ack,
        (Some(b"await"), None) => Endpoint::Await,
        _ => return Err(PathError::NoRoute),
    };
    if segment.is_empty() {
        return Err(PathError::NoRoute);
    }
    Ok((segment, endpoint))
}

/// Parses the part of the path as sent after `/inbox/`: the id segment
/// (percent-decoded into `id`) and the endpoint. Splitting the raw path
/// lets an id hold an encoded slash (`a%2Fb`), as with the reference.
pub(super) fn parse_path(raw: &[u8], id: &mut Vec<u8>) -> Result<Endpoint, PathError> {
    let (segment, endpoint) = endpoint_of(raw)?;
    id.clear();
    // The head parser has already refused malformed escapes in the path.
    percent_decode(segment, id).ok_or(PathError::NoRoute)?;
    if id.len() > MAX_INBOX_ID {
        return Err(PathError::TooLong);
    }
    if std::str::from_utf8(id).is_err() {
        return Err(PathError::NotUtf8);
    }
    Ok(endpoint)
}

/// The inbox's limits, the bytes of messages still uploading, and scratch
/// space for whom a store wakes.
pub(super) struct InboxRoom {
    /// `--inbox-max-message`.
    pub max_message: usize,
    /// `--inbox-total`.
    pub total: usize,
    /// Bytes of inbox messages still uploading (held by their connections).
    pub uploading: usize,
    pub woken: crate::relay::InboxWoken,
}

impl InboxRoom {
    pub fn new(config: &crate::config::Config) -> InboxRoom {
        InboxRoom {
            max_message: config.inbox_max_message,
            total: config.inbox_total,
            uploading: 0,
            woken: Default::default(),
        }
    }
}

impl Server {
    pub(super) fn handle_inbox(&mut self, id: ConnId) -> Step {
        let conn = &mut self.conns[id.0];
        let raw = conn
            .req
            .raw_path
            .strip_prefix(b"/inbox/")
            .unwrap_or_default();
        let endpoint = match parse_path(raw, &mut conn.channel) {
            Ok(endpoint) => endpoint,
            Err(PathError::NoRoute) => {
                return self.refuse(id, Status(404), "404 page not found\n");
            }
            Err(PathError::TooLong) => {
                return self.refuse(id, Status(400), "Inbox ID too long");
            }
            Err(PathError::NotUtf8) => {
                return self.refuse(id, Status(400), "Inbox ID is not UTF-8");
            }
        };
        let method = conn.req.method.as_slice();
        let reads = matches!(method, b"GET" | b"HEAD");
        let op: fn(&mut Server, ConnId) -> Step = match (endpoint, method) {
            (Endpoint::Message, b"POST") => return self.inbox_post(id),
            (Endpoint::Message, b"DELETE") => Server::inbox_ack,
            (Endpoint::Message, _) if reads => Server::inbox_get,
            (Endpoint::Ack, _) if reads => Server::inbox_acked,
            (Endpoint::Await, _) if reads => Server::inbox_await,
            _ => {
                let allow = std::str::from_utf8(endpoint.allow()).unwrap_or_default();
                let text = format!("405 method not allowed: this inbox path takes {allow}\n");
                return self.refuse_method(id, &text, endpoint.allow());
            }
        };
        // These carry no message: a body brought anyway is skipped if it is
        // all here, else the connection closes after the answer.
        body_after(&mut self.conns[id.0]);
        op(self, id)
    }

    /// What inbox messages hold against `--inbox-total`: those stored (and
    /// those readers still send) and those uploading.
    pub(super) fn inbox_held(&self) -> usize {
        self.relay.inbox_bytes() + self.rooms.inbox.uploading
    }

    fn inbox_post(&mut self, id: ConnId) -> Step {
        let framing = self.conns[id.0].req.framing();
        let max = self.rooms.inbox.max_message;
        if matches!(framing, Framing::Length(n) if n > max as u64) {
            self.refused_by(id, Limit::InboxMaxMessage);
            return self.refuse(id, Status(413), &super::hold::too_large(Hold::Inbox, max));
        }
        let declared = match framing {
            Framing::Length(n) => n as usize,
            _ => 0,
        };
        let content_type = self.conns[id.0].req.content_type.len();
        let wanted = declared + content_type + INBOX_MESSAGE_OVERHEAD;
        if self.inbox_held() + wanted > self.rooms.inbox.total {
            self.refused_by(id, Limit::InboxTotal);
            return self.refuse(id, Status(503), super::hold::full(Hold::Inbox));
        }
        self.load_secret(id);
        let client = self.client_of(id);
        let now = self.now_millis();
        if let Err(e) = self.relay.inbox_check(
            now,
            &self.conns[id.0].channel,
            Writer {
                secret: &self.secret,
                client,
            },
        ) {
            return self.refuse_claim(id, e, Guarded::Channel);
        }
        self.continue_body(id);
        let conn = &mut self.conns[id.0];
        conn.held.clear();
        conn.held.reserve_exact(declared);
        conn.phase = Phase::Holding {
            body: BodyDecoder::new(framing),
            hold: Hold::Inbox,
        };
        Step::Again
    }

    /// The message's body is all here: it is stored, its waiting readers get
    /// it, and those waiting for the acknowledgement of the entry it replaces
    /// are told that entry is gone.
    pub(super) fn inbox_store(&mut self, id: ConnId) -> Step {
        self.load_secret(id);
        let client = self.client_of(id);
        let now = self.now_millis();
        let conn = &mut self.conns[id.0];
        let held = std::mem::take(&mut conn.held);
        self.rooms.inbox.uploading -= held.len();
        let content_type =
            (!conn.req.content_type.is_empty()).then(|| conn.req.content_type.as_slice().into());
        let record = super::durable::INBOX_RECORD_OVERHEAD
            + (held.len() + conn.req.content_type.len()) as u64;
        if !self.journal_room(record) {
            self.stats.store_full += 1;
            // A rewrite to what is live may make room in a moment.
            let conn = &mut self.conns[id.0];
            let after = after_answer(conn.req.keep_alive, conn.req.framing());
            let extra = Some(("Retry-After", &b"1"[..]));
            let text = STORE_FULL.as_bytes();
            self.respond_body(id, Status(507), PLAIN_TEXT, text, after, extra);
            return Step::Again;
        }
        let conn = &mut self.conns[id.0];
        let mut woken = std::mem::take(&mut self.rooms.inbox.woken);
        woken.clear();
        let message = (held.into(), content_type);
        let stored = self.relay.inbox_post(
            now,
            &conn.channel,
            Writer {
                secret: &self.secret,
                client,
            },
            message,
            &mut woken,
        );
        // The body is read: the answers follow it directly.
        let step = match stored {
            Err(e) => {
                if e == crate::relay::ClaimError::NoRoom {
                    self.refused_by(id, Limit::MaxChannels);
                }
                let (status, text) = super::respond::claim_refusal(e, Guarded::Channel);
                self.answer(id, status, text);
                Step::Again
            }
            Ok(message) => {
                self.stats.transferred(crate::relay::Method::Inbox);
                for &WaiterId(reader) in &woken.readers {
                    self.send_inbox_message(ConnId(reader), Rc::clone(&message));
                }
                for &WaiterId(awaiter) in &woken.dropped {
                    self.answer_inbox_waiter(ConnId(awaiter), Status(404), NOT_FOUND);
                }
                self.answer(id, Status(200), "");
                Step::Again
            }
        };
        self.rooms.inbox.woken = woken;
        step
    }

    fn inbox_get(&mut self, id: ConnId) -> Step {
        let now = self.now_millis();
        let channel = &self.conns[id.0].channel;
        match self.relay.inbox_get(now, channel, WaiterId(id.0)) {
            InboxGet::Message(message) => {
                self.send_inbox_message(id, message);
                Step::Again
            }
            InboxGet::Parked => self.park(id, Wait::InboxReader),
            InboxGet::Busy => self.answer(id, Status(503), BUSY),
        }
    }

    fn inbox_ack(&mut self, id: ConnId) -> Step {
        let now = self.now_millis();
        let mut woken = std::mem::take(&mut self.waiters);
        woken.clear();
        let acked = self
            .relay
            .inbox_ack(now, &self.conns[id.0].channel, &mut woken);
        for &WaiterId(awaiter) in &woken {
            self.answer_inbox_waiter(ConnId(awaiter), Status(200), "");
        }
        self.waiters = woken;
        if acked {
            self.answer(id, Status(200), "")
        } else {
            self.answer(id, Status(404), NOT_FOUND)
        }
    }

    fn inbox_acked(&mut self, id: ConnId) -> Step {
        let now = self.now_millis();
        match self.relay.inbox_acked(now, &self.conns[id.0].channel) {
            Some(true) => self.answer(id, Status(200), "true"),
            Some(false) => self.answer(id, Status(200), "false"),
            None => self.answer(id, Status(404), NOT_FOUND),
        }
    }

    fn inbox_await(&mut self, id: ConnId) -> Step {
        let now = self.now_millis();
        let channel = &self.conns[id.0].channel;
        match self.relay.inbox_await(now, channel, WaiterId(id.0)) {
            InboxAwait::Acked => self.answer(id, Status(200), ""),
            InboxAwait::Parked => self.park(id, Wait::InboxAwaiter),
            InboxAwait::Unknown => self.answer(id, Status(404), NOT_FOUND),
            InboxAwait::Busy => self.answer(id, Status(503), BUSY),
        }
    }

    /// Answers an inbox request whose body is settled (read, or skipped at
    /// its arrival).
    fn answer(&mut self, id: ConnId, status: Status, text: &str) -> Step {
        let conn = &self.conns[id.0];
        let after = after_answer(conn.req.keep_alive, conn.req.framing());
        self.respond_text(id, status, text, after);
        Step::Again
    }

    /// A reader or awaiter waited past the inbox timeout (it has left the core).
    pub(super) fn inbox_wait_over(&mut self, id: ConnId) {
        self.answer_inbox_waiter(id, Status(408), TIMED_OUT);
    }

    /// Answers a request that waited on an inbox (it has left the core).
    pub(super) fn answer_inbox_waiter(&mut self, id: ConnId, status: Status, text: &str) {
        if !self.conns.contains(id.0) {
            return;
        }
        self.answer(id, status, text);
        self.ready.push(id);
    }

    /// Starts a reader's response: the head now, the body from the stored
    /// message as the socket takes it.
    fn send_inbox_message(&mut self, id: ConnId, message: Rc<InboxMessage>) {
        let Some(conn) = self.conns.get_mut(id.0) else {
            return;
        };
        let keep_alive =
            after_answer(conn.req.keep_alive, conn.req.framing()) == After::NextRequest;
        let date = self.date.as_bytes();
        let (mut w, req) =
            conn.begin_response(&mut self.output_pool, Status(200), date, Expose::Metadata);
        let content_type = message.content_type.as_deref();
        w.header(
            "Content-Type",
            content_type.unwrap_or(b"application/octet-stream"),
        );
        w.header_number("Content-Length", message.body.len() as u64);
        reply::persistence(&mut w, keep_alive, req.minor_version);
        if !w.finish() {
            self.refuse_oversized_head(id);
            return;
        }
        conn.req.keep_alive = keep_alive;
        let offset = if conn.req.method_is("HEAD") {
            message.body.len()
        } else {
            0
        };
        conn.phase = Phase::SendingMessage { message, offset };
        self.ready.push(id);
    }
}

/// What follows the answer to a request that brought no message: the next
/// request, unless it asked to close or left a body unread.
fn after_answer(keep_alive: bool, framing: Framing) -> After {
    match (keep_alive, framing.has_body()) {
        (true, _) => After::NextRequest,
        (false, true) => After::Linger,
        (false, false) => After::Close,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::relay::Method;
    use crate::server::testing::{body_of, get, post, status_of, Shell};

    fn answer(shell: &mut Shell, request: &[u8]) -> (u16, String) {
        let (_, text) = shell.ask(request);
        (status_of(&text), body_of(&text).to_string())
    }

    fn delete(target: &str) -> Vec<u8> {
        format!("DELETE {target} HTTP/1.1\r\nHost: r\r\n\r\n").into_bytes()
    }

    #[test]
    fn a_message_is_read_until_acknowledged_and_the_writer_hears_of_it() {
        let mut shell = Shell::new(&[]);
        let mut reader = shell.connect();
        reader.send(&mut shell, &get("/inbox/box"));
        assert_eq!(reader.take(), b"", "nothing yet: the reader waits");
        let typed = b"POST /inbox/box HTTP/1.1\r\nHost: r\r\nContent-Type: text/x\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(answer(&mut shell, typed), (200, String::new()));
        let got = reader.text();
        assert_eq!((status_of(&got), body_of(&got)), (200, "hi"));
        assert!(got.contains("\r\nContent-Type: text/x\r\n"), "{got}");
        for _ in 0..2 {
            assert_eq!(answer(&mut shell, &get("/inbox/box")), (200, "hi".into()));
        }
        assert_eq!(
            answer(&mut shell, &get("/inbox/box/ack")),
            (200, "false".into())
        );
        let mut writer = shell.connect();
        writer.send(&mut shell, &get("/inbox/box/await"));
        assert_eq!(answer(&mut shell, &get("/inbox/box")), (200, "hi".into()));
        assert_eq!(writer.take(), b"", "a read does not end the wait");
        assert_eq!(
            answer(&mut shell, &delete("/inbox/box")),
            (200, String::new())
        );
        assert_eq!(status_of(&writer.text()), 200, "the acknowledgement does");
        assert_eq!(
            answer(&mut shell, &get("/inbox/box/ack")),
            (200, "true".into())
        );
        assert_eq!(
            answer(&mut shell, &get("/inbox/box/await")),
            (200, String::new())
        );
        assert_eq!(
            shell.server.relay.inbox_bytes(),
            0,
            "the body went with the acknowledgement"
        );
        assert!(
            !reader.closed() && !writer.closed(),
            "keep-alive after each"
        );
    }

    #[test]
    fn an_unknown_inbox_is_404_and_a_replaced_entry_ends_the_wait_for_it() {
        let mut shell = Shell::new(&[]);
        for target in ["/inbox/none/ack", "/inbox/none/await"] {
            assert_eq!(answer(&mut shell, &get(target)), (404, "Not found".into()));
        }
        assert_eq!(
            answer(&mut shell, &delete("/inbox/none")),
            (404, "Not found".into())
        );
        assert_eq!(shell.server.relay.channel_count(), 0, "nothing remembered");
        assert_eq!(answer(&mut shell, &post("/inbox/r", b"one")).0, 200);
        let mut writer = shell.connect();
        writer.send(&mut shell, &get("/inbox/r/await"));
        assert_eq!(answer(&mut shell, &post("/inbox/r", b"two")).0, 200);
        let told = writer.text();
        assert_eq!((status_of(&told), body_of(&told)), (404, "Not found"));
        assert_eq!(answer(&mut shell, &get("/inbox/r")), (200, "two".into()));
    }

    #[test]
    fn waits_end_with_408_after_the_inbox_timeout_and_entries_after_the_ttl() {
        let mut shell = Shell::new(&["--inbox-timeout", "3", "--inbox-ttl", "10"]);
        let mut reader = shell.connect();
        reader.send(&mut shell, &get("/inbox/t"));
        shell.advance(Duration::from_millis(2_900));
        assert_eq!(reader.take(), b"", "not before the timeout");
        shell.advance(Duration::from_millis(200));
        let got = reader.text();
        assert_eq!((status_of(&got), body_of(&got)), (408, "Request timed out"));
        assert_eq!(shell.server.relay.waiter_count(), 0);
        assert!(!reader.closed(), "the connection stays for more");
        assert_eq!(answer(&mut shell, &post("/inbox/t", b"m")).0, 200);
        shell.advance(Duration::from_millis(9_000));
        assert_eq!(
            answer(&mut shell, &get("/inbox/t/ack")),
            (200, "false".into())
        );
        shell.advance(Duration::from_millis(1_100));
        assert_eq!(
            answer(&mut shell, &get("/inbox/t/ack")),
            (404, "Not found".into())
        );
        assert_eq!(
            shell.server.relay.channel_count(),
            0,
            "expired and forgotten"
        );
        assert_eq!(shell.server.relay.inbox_bytes(), 0);
    }

    #[test]
    fn ten_wait_on_one_inbox_the_eleventh_is_503_and_all_ten_get_the_message() {
        let mut shell = Shell::new(&[]);
        let mut readers: Vec<_> = (0..10).map(|_| shell.connect()).collect();
        for reader in &mut readers {
            reader.send(&mut shell, &get("/inbox/many"));
        }
        assert_eq!(
            shell.server.relay.waiters_by_method().get(Method::Inbox),
            10
        );
        assert_eq!(
            answer(&mut shell, &get("/inbox/many")),
            (503, "Too many concurrent requests".into())
        );
        assert_eq!(answer(&mut shell, &post("/inbox/many", b"all")).0, 200);
        for reader in &mut readers {
            assert_eq!(body_of(&reader.text()), "all");
        }
    }

    #[test]
    fn limits_a_message_by_size_and_all_messages_by_their_total() {
        let mut shell = Shell::new(&["--inbox-max-message", "8", "--inbox-total", "400"]);
        assert_eq!(answer(&mut shell, &post("/inbox/s", b"123456789")).0, 413);
        let chunked = b"POST /inbox/s HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n123456789\r\n0\r\n\r\n";
        assert_eq!(answer(&mut shell, chunked).0, 413);
        assert_eq!(shell.server.relay.channel_count(), 0, "nothing stored");
        assert_eq!(answer(&mut shell, &post("/inbox/a", b"12345678")).0, 200);
        assert_eq!(answer(&mut shell, &post("/inbox/b", b"12345678")).0, 200);
        let (status, text) = answer(&mut shell, &post("/inbox/c", b"12345678"));
        assert_eq!(
            (status, text.as_str()),
            (503, "503 relay storage for inbox messages is full\n")
        );
        assert_eq!(answer(&mut shell, &delete("/inbox/a")).0, 200);
        assert_eq!(
            answer(&mut shell, &post("/inbox/c", b"12345678")).0,
            200,
            "room again"
        );
        assert_eq!(shell.server.rooms.inbox.uploading, 0);
    }

    #[test]
    fn a_secret_guards_an_inbox_and_a_bad_path_is_refused() {
        let mut shell = Shell::new(&[]);
        assert_eq!(
            answer(&mut shell, &post("/inbox/g?wsecret=k", b"mine")).0,
            200
        );
        assert_eq!(
            answer(&mut shell, &post("/inbox/g?wsecret=x", b"theirs")).0,
            401
        );
        assert_eq!(answer(&mut shell, &post("/inbox/g", b"theirs")).0, 401);
        assert_eq!(answer(&mut shell, &get("/inbox/g")), (200, "mine".into()));
        assert_eq!(
            answer(&mut shell, &post("/inbox/g?wsecret=k", b"again")).0,
            200
        );
        let long = format!("/inbox/{}", "i".repeat(MAX_INBOX_ID + 1));
        assert_eq!(
            answer(&mut shell, &get(&long)),
            (400, "Inbox ID too long".into())
        );
        assert_eq!(answer(&mut shell, &get("/inbox/a/b/c")).0, 404);
        let (_, text) =
            shell.ask(b"PUT /inbox/x/ack HTTP/1.1\r\nHost: r\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(status_of(&text), 405);
        assert!(text.contains("\r\nAllow: GET, HEAD, OPTIONS\r\n"), "{text}");
    }

    #[test]
    fn pipelined_requests_after_a_message_and_a_get_with_a_body_are_each_answered() {
        let mut shell = Shell::new(&[]);
        let mut client = shell.connect();
        let mut pipelined = post("/inbox/p", b"stored");
        pipelined
            .extend_from_slice(b"GET /inbox/p HTTP/1.1\r\nHost: r\r\nContent-Length: 3\r\n\r\nxyz");
        pipelined.extend_from_slice(&get("/inbox/p/ack"));
        client.send(&mut shell, &pipelined);
        let answers = client.text();
        let bodies: Vec<&str> = answers
            .split("HTTP/1.1 ")
            .skip(1)
            .map(|one| one.split("\r\n\r\n").nth(1).unwrap_or_default())
            .collect();
        assert_eq!(bodies, ["", "stored", "false"], "{answers}");
        assert!(!client.closed());
    }

    #[test]
    fn a_reader_that_leaves_frees_its_place_and_a_head_gets_the_length_only() {
        let mut shell = Shell::new(&[]);
        let reader = shell.connect();
        let mut reader = reader;
        reader.send(&mut shell, &get("/inbox/h"));
        reader.close(&mut shell);
        assert_eq!(shell.server.relay.waiter_count(), 0);
        assert_eq!(shell.server.relay.channel_count(), 0);
        assert_eq!(answer(&mut shell, &post("/inbox/h", b"12345")).0, 200);
        let (_, text) = shell.ask(b"HEAD /inbox/h HTTP/1.1\r\nHost: r\r\n\r\n");
        assert!(text.contains("\r\nContent-Length: 5\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "no body: {text}");
    }

    fn parsed(raw: &str) -> (Result<Endpoint, PathError>, Vec<u8>) {
        let mut id = Vec::new();
        (parse_path(raw.as_bytes(), &mut id), id)
    }

    #[test]
    fn an_inbox_path_names_its_id_and_endpoint() {
        assert_eq!(parsed("box"), (Ok(Endpoint::Message), b"box".to_vec()));
        assert_eq!(parsed("box/ack"), (Ok(Endpoint::Ack), b"box".to_vec()));
        assert_eq!(parsed("box/await"), (Ok(Endpoint::Await), b"box".to_vec()));
        assert_eq!(parsed("a%2Fb"), (Ok(Endpoint::Message), b"a/b".to_vec()));
        assert_eq!(parsed("caf%C3%A9").1, "café".as_bytes());
        for no_route in ["", "/ack", "box/", "box/ack/", "box/other", "a/b/c"] {
            assert_eq!(parsed(no_route).0, Err(PathError::NoRoute), "{no_route}");
        }
    }

    #[test]
    fn an_id_is_at_most_256_bytes_of_utf8_after_decoding() {
        let longest = "i".repeat(MAX_INBOX_ID);
        assert_eq!(parsed(&longest).0, Ok(Endpoint::Message));
        assert_eq!(parsed(&format!("{longest}i")).0, Err(PathError::TooLong));
        assert_eq!(parsed(&"%41".repeat(MAX_INBOX_ID)).0, Ok(Endpoint::Message));
        assert_eq!(
            parsed(&"%41".repeat(MAX_INBOX_ID + 1)).0,
            Err(PathError::TooLong)
        );
        assert_eq!(
            parsed(&format!("{}é", "a".repeat(255))).0,
            Err(PathError::TooLong),
            "bytes, not characters"
        );
        assert_eq!(parsed("bad%ff").0, Err(PathError::NotUtf8));
    }
}

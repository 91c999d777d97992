//! Responses the relay writes itself (errors, `/health`, `/metrics`,
//! preflight), writing pending output, and what follows a response.

use crate::budget::Limit;
use std::io::{self, Read};

use super::routes::{expose_for, expose_of, preflight_allows};
use super::{unix_millis, Server, Step, LINGER_MAX_BYTES};
use crate::http::{Framing, HeadWriter, Status};
use crate::relay::ClaimError;
use crate::relay::Method;
use crate::server::conn::{After, Conn, ConnId, Phase};
use crate::server::reply;
use crate::server::stream::{send, Sent};

/// The content type of the relay's own one-line answers.
pub(super) const PLAIN_TEXT: &[u8] = b"text/plain; charset=utf-8";

/// What sending a connection's output came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Flushed {
    /// All of it is sent.
    Done,
    /// The socket is full; the rest waits for it to drain.
    Pending,
    /// The connection broke and is closed.
    Closed,
}

/// Whose write secret a refused writer presented, as its answer names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Guarded {
    Channel,
    /// A proxy server id.
    Server,
}

/// The answer to a writer whose address has its share of remembered channels.
pub(super) const CLIENT_FULL: &str = "429 your address holds its share of remembered channels\n";

/// The answer to a writer that may not use the channel.
pub(super) fn claim_refusal(e: ClaimError, guarded: Guarded) -> (Status, &'static str) {
    match (e, guarded) {
        (ClaimError::WrongSecret, Guarded::Channel) => {
            (Status(401), "401 wrong write secret for this channel\n")
        }
        (ClaimError::WrongSecret, Guarded::Server) => {
            (Status(401), "401 wrong write secret for this server\n")
        }
        (ClaimError::NoRoom, _) => (Status(503), super::NO_ROOM),
        (ClaimError::ClientFull, _) => (Status(429), CLIENT_FULL),
    }
}

impl Server {
    /// Answers a writer that may not use the channel.
    pub(super) fn refuse_claim(&mut self, id: ConnId, e: ClaimError, guarded: Guarded) -> Step {
        if e == ClaimError::NoRoom {
            self.refused_by(id, Limit::MaxChannels);
        }
        let (status, text) = claim_refusal(e, guarded);
        if e == ClaimError::ClientFull {
            let after = body_after(&mut self.conns[id.0]);
            let extra = Some(("Retry-After", &b"5"[..]));
            self.respond_body(id, status, PLAIN_TEXT, text.as_bytes(), after, extra);
            return Step::Again;
        }
        self.refuse(id, status, text)
    }

    /// Counts a request refused by `limit` and names it in its access-log line.
    pub(super) fn refused_by(&mut self, id: ConnId, limit: Limit) {
        self.stats.refused_by(limit);
        if let Some(conn) = self.conns.get_mut(id.0) {
            conn.refused_by = Some(limit);
        }
    }

    /// Answers a request the relay will not take further (errors, `/health`),
    /// skipping or refusing its unread body.
    pub(super) fn refuse(&mut self, id: ConnId, status: Status, text: &str) -> Step {
        let after = body_after(&mut self.conns[id.0]);
        self.respond_text(id, status, text, after);
        Step::Again
    }

    /// Answers a request the relay gives up on (a waiter out of time or
    /// shut down, a head that does not fit) with `answer`, then closes;
    /// `linger_if_body`: its body may still be unread, so the connection
    /// lingers after the answer rather than closing at once.
    pub(super) fn answer_and_close(
        &mut self,
        id: ConnId,
        linger_if_body: bool,
        (status, text): (Status, &str),
    ) {
        let Some(conn) = self.conns.get_mut(id.0) else {
            return;
        };
        conn.req.keep_alive = false;
        let after = if linger_if_body && conn.req.framing().has_body() {
            After::Linger
        } else {
            After::Close
        };
        self.respond_text(id, status, text, after);
        self.ready.push(id);
    }

    /// Answers `405` to a request whose method its endpoint does not take;
    /// `allow`: the methods it does take.
    pub(super) fn refuse_method(&mut self, id: ConnId, text: &str, allow: &[u8]) -> Step {
        let after = body_after(&mut self.conns[id.0]);
        let text = text.as_bytes();
        self.respond_body(
            id,
            Status(405),
            PLAIN_TEXT,
            text,
            after,
            Some(("Allow", allow)),
        );
        Step::Again
    }

    /// Sends what the connection's output holds, as far as the socket takes
    /// it; an emptied output buffer goes back to the pool.
    pub(super) fn send_output(&mut self, id: ConnId) -> Flushed {
        if self.relay.has_durable() {
            // This turn marked something durable that is not in the journal
            // yet, and an answer may acknowledge it (an inbox message, an
            // acknowledgement, a claim made by this request or a transfer
            // that paired with it): it waits for the journal.
            self.hold_until_durable(id);
        }
        let conn = &mut self.conns[id.0];
        if conn.awaiting_sync {
            // Released by the journal's commit at the end of the turn.
            return Flushed::Pending;
        }
        if flush(conn).is_err() {
            self.close(id);
            return Flushed::Closed;
        }
        if conn.output.as_ref().is_some_and(|o| !o.is_empty()) {
            return Flushed::Pending;
        }
        self.output_pool.give_if_empty(&mut conn.output);
        Flushed::Done
    }

    pub(super) fn drive_response(&mut self, id: ConnId, after: After) -> Step {
        match self.send_output(id) {
            Flushed::Done => {}
            Flushed::Pending => return Step::Blocked,
            Flushed::Closed => return Step::Closed,
        }
        let conn = &mut self.conns[id.0];
        if self.access_log && conn.status != 0 {
            log_request(conn);
            conn.status = 0;
            conn.refused_by = None;
        }
        match after {
            After::NextRequest => {
                conn.trim_fields();
                self.await_head(id);
                Step::Again
            }
            After::Close => {
                // The response is whole: over TLS, say so (`close_notify`),
                // else a client reading to the end takes the close for a
                // truncation. (A connection closed mid-response does not.)
                conn.stream.close_notify();
                self.close(id);
                Step::Closed
            }
            After::Linger => {
                conn.stream.shutdown_write();
                conn.phase = Phase::Lingering;
                if let Some(input) = conn.input.take() {
                    self.input_pool.give(input);
                }
                Step::Again
            }
        }
    }

    pub(super) fn linger(&mut self, id: ConnId) -> Step {
        let conn = &mut self.conns[id.0];
        let mut scratch = [0u8; 4096];
        let mut discarded = 0;
        while conn.readable && discarded < LINGER_MAX_BYTES {
            match conn.stream.read(&mut scratch) {
                Ok(0) => break,
                Ok(n) => discarded += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.readable = false;
                    return Step::Blocked;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if !conn.readable {
            return Step::Blocked;
        }
        self.close(id);
        Step::Closed
    }

    /// Queues a complete response with a short text body (no body for `HEAD`)
    /// and moves the connection to [`Phase::Responding`].
    pub(super) fn respond_text(&mut self, id: ConnId, status: Status, text: &str, after: After) {
        self.respond_body(id, status, PLAIN_TEXT, text.as_bytes(), after, None);
    }

    /// Queues a complete response with a short body (no body for `HEAD`) and
    /// moves the connection to [`Phase::Responding`]; `extra`: one more field
    /// (a `405`'s `Allow`, a `429`'s `Retry-After`).
    pub(super) fn respond_body(
        &mut self,
        id: ConnId,
        status: Status,
        content_type: &[u8],
        body: &[u8],
        after: After,
        extra: Option<(&str, &[u8])>,
    ) {
        // Answered: no longer waiting for a head (if it was).
        self.head_done(id);
        let Some(conn) = self.conns.get_mut(id.0) else {
            return;
        };
        if status.0 >= 400 {
            self.stats.reject(status.0);
        }
        let after = match after {
            After::NextRequest if !conn.req.keep_alive => After::Close,
            other => other,
        };
        let keep_alive = after == After::NextRequest;
        let expose = expose_for(&conn.req.path);
        let date = self.date.as_bytes();
        let (mut w, req) = conn.begin_response(&mut self.output_pool, status, date, expose);
        if !body.is_empty() {
            w.header("Content-Type", content_type);
        }
        if let Some((name, value)) = extra {
            w.header(name, value);
        }
        w.header_number("Content-Length", body.len() as u64);
        reply::persistence(&mut w, keep_alive, req.minor_version);
        let body = if req.method_is("HEAD") { b"" } else { body };
        if !w.finish_with_body(body) {
            // Only a huge reflected Origin can overflow; answer without it.
            conn.req.origin.clear();
            const TEXT: &[u8] = b"431 Origin too large to reflect\n";
            if let Some(output) = conn.output.as_mut() {
                let mut w = HeadWriter::new(output.spare(), Status(431));
                w.header("Content-Type", b"text/plain; charset=utf-8")
                    .header_number("Content-Length", TEXT.len() as u64)
                    .header("Connection", b"close");
                let n = w.finish_with_body(TEXT).unwrap_or(0);
                output.commit(n);
            }
            conn.phase = Phase::Responding(After::Linger);
            return;
        }
        conn.phase = Phase::Responding(after);
    }

    /// A response head did not fit in the output buffer (it reflects values
    /// from up to two request heads, and the `HttpRelay-Query` re-encoding can
    /// triple a query): the request gets `500` instead, and the connection closes.
    pub(super) fn refuse_oversized_head(&mut self, id: ConnId) {
        self.answer_and_close(id, true, (Status(500), "500 response head too large\n"));
    }

    pub(super) fn respond_metrics(&mut self, id: ConnId) -> Step {
        let gauges = self.gauges();
        let mut text = std::mem::take(&mut self.text);
        self.stats.render(&gauges, &mut text);
        let after = body_after(&mut self.conns[id.0]);
        self.respond_body(
            id,
            Status(200),
            b"text/plain; version=0.0.4; charset=utf-8",
            &text,
            after,
            None,
        );
        self.text = text;
        Step::Again
    }

    /// Answers a CORS preflight for a path of `method`.
    pub(super) fn respond_preflight(&mut self, id: ConnId, method: Method) {
        let conn = &mut self.conns[id.0];
        let after = body_after(conn);
        let keep_alive = after == After::NextRequest;
        let date = self.date.as_bytes();
        let (mut w, req) =
            conn.begin_response(&mut self.output_pool, Status(200), date, expose_of(method));
        let allow_headers = preflight_allows(method);
        w.header("Access-Control-Allow-Methods", reply::ALLOW_METHODS)
            .header("Access-Control-Allow-Headers", allow_headers)
            .header("Access-Control-Max-Age", b"86400");
        w.header_number("Content-Length", 0);
        reply::persistence(&mut w, keep_alive, req.minor_version);
        // Only a huge reflected Origin could overflow: the answer is then
        // left out, and the client's preflight fails as it would anyway.
        w.finish();
        conn.phase = Phase::Responding(after);
    }
}

/// Writes pending output until it is empty or the socket would block.
pub(super) fn flush(conn: &mut Conn) -> io::Result<()> {
    let Some(output) = conn.output.as_mut() else {
        return Ok(());
    };
    while !output.is_empty() && conn.writable {
        match send(&mut conn.stream, &mut conn.writable, output.pending()) {
            Sent::Bytes(n) => output.consume(n),
            Sent::Blocked => {}
            Sent::Gone => return Err(io::ErrorKind::BrokenPipe.into()),
        }
    }
    Ok(())
}

/// What follows a response to a request whose body the handler does not read:
/// a small body already buffered is skipped and the connection stays usable;
/// otherwise it closes (lingering, so the response survives).
pub(super) fn body_after(conn: &mut Conn) -> After {
    let skipped = match conn.req.framing() {
        Framing::Empty | Framing::Length(0) => true,
        Framing::Length(n) => match conn.input.as_mut() {
            Some(input) if input.len() as u64 >= n => {
                input.consume(n as usize);
                true
            }
            _ => false,
        },
        Framing::Chunked => false,
    };
    match (skipped, conn.req.keep_alive) {
        (true, true) => After::NextRequest,
        (true, false) => After::Close,
        (false, _) => {
            conn.req.keep_alive = false;
            After::Linger
        }
    }
}

/// One access-log line: time, client, method, path (never the query: it may
/// carry a write secret), status, bytes sent, duration.
pub(super) fn log_request(conn: &Conn) {
    let now_ms = unix_millis();
    let mut time = [0u8; 20];
    crate::http::format_rfc3339(now_ms / 1000, &mut time);
    let client = match conn.peer {
        Some(peer) => peer.to_string(),
        None => String::from("unix"),
    };
    let limit = conn.refused_by.map_or("", |l| l.flag());
    eprintln!(
        "{} {client} {} {} {} {} {}ms{}{limit}",
        String::from_utf8_lossy(&time),
        String::from_utf8_lossy(&conn.req.method),
        String::from_utf8_lossy(&conn.req.raw_path),
        conn.status,
        conn.stream.written,
        now_ms.saturating_sub(conn.arrived_unix_ms),
        if limit.is_empty() { "" } else { " limit=" },
    );
}

#[cfg(test)]
mod tests {
    use crate::server::testing::{body_of, get, post, status_of, Shell};
    use crate::server::LINGER;

    #[test]
    fn an_error_before_an_unread_body_shuts_the_sending_side_and_lingers_then_closes() {
        let mut shell = Shell::new(&[]);
        let (mut client, answer) =
            shell.ask(b"POST /nowhere HTTP/1.1\r\nHost: r\r\nContent-Length: 100000\r\n\r\nabc");
        assert_eq!(status_of(&answer), 404);
        assert_eq!(body_of(&answer), "404 page not found\n");
        assert!(answer.contains("\r\nConnection: close\r\n"));
        assert!(
            client.closed(),
            "the response ends with the sending side shut"
        );
        assert_eq!(shell.open_conns(), 1, "still reading what the client sends");
        client.send(&mut shell, &[b'x'; 50_000]);
        assert_eq!(shell.open_conns(), 1, "the rest is read and dropped");
        shell.advance(LINGER);
        assert_eq!(shell.open_conns(), 0, "closed when the linger is over");
    }

    #[test]
    fn lingering_ends_as_soon_as_the_client_closes() {
        let mut shell = Shell::new(&[]);
        let (client, answer) =
            shell.ask(b"POST /nowhere HTTP/1.1\r\nHost: r\r\nContent-Length: 100000\r\n\r\nabc");
        assert_eq!(status_of(&answer), 404);
        client.close(&mut shell);
        assert_eq!(shell.open_conns(), 0);
    }

    #[test]
    fn a_small_body_already_received_is_skipped_and_the_connection_kept() {
        let mut shell = Shell::new(&[]);
        let (mut client, answer) = shell.ask(&post("/nowhere", b"abc"));
        assert_eq!(status_of(&answer), 404);
        assert!(!answer.contains("Connection: close"));
        client.send(&mut shell, &get("/health"));
        assert_eq!(status_of(&client.text()), 200);
        assert!(!client.closed());
    }

    #[test]
    fn connection_close_from_the_client_closes_after_the_response() {
        let mut shell = Shell::new(&[]);
        let (mut client, answer) =
            shell.ask(b"GET /health HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n");
        assert_eq!(status_of(&answer), 200);
        assert!(answer.contains("\r\nConnection: close\r\n"));
        assert!(client.closed());
        assert_eq!(shell.open_conns(), 0);
    }

    #[test]
    fn pipelined_requests_are_answered_in_order_and_http_1_0_closes() {
        let mut shell = Shell::new(&[]);
        let (mut client, got) =
            shell.ask(b"HEAD /health HTTP/1.1\r\nHost: r\r\n\r\nGET /health HTTP/1.0\r\n\r\n");
        let (head_response, get_response) = got.split_at(got.rfind("HTTP/1.1 ").unwrap());
        assert_eq!(status_of(head_response), 200);
        assert!(head_response.contains("\r\nContent-Length: 5\r\n"));
        assert_eq!(body_of(head_response), "", "HEAD: the head only");
        assert!(!head_response.contains("Connection: close"));
        assert_eq!(status_of(get_response), 200);
        assert!(get_response.contains("\r\nConnection: close\r\n"));
        assert_eq!(body_of(get_response), crate::server::reply::VERSION);
        assert!(client.closed(), "HTTP/1.0 without keep-alive: closed after");
        assert_eq!(shell.open_conns(), 0);
    }
}

//! Piping Server transfers (with `--piping`): a sender's body (`POST`/`PUT`)
//! goes to the `n` receivers (`GET`) of the same path. The sender's response
//! starts at once and streams progress lines as the transfer goes; the
//! receivers get the body with the sender's content headers.

use super::respond::body_after;
use super::{Server, Step};
use crate::http::{find_param, HeadWriter, MultipartDecoder, Status};
use crate::relay::{PipingArrival, PipingError, PipingRole, WaiterId};
use crate::server::conn::{After, Conn, ConnId, Form, FormPart, Phase, Receivers, Transfer, Wait};
use crate::server::reply;

mod pages;
use pages::{help_page, nonce, noscript_page};

/// Paths the reference server keeps for itself (no transfer there).
const RESERVED: [&[u8]; 6] = [
    b"/",
    b"/noscript",
    b"/version",
    b"/help",
    b"/favicon.ico",
    b"/robots.txt",
];
/// Most receivers of one transfer (each round of a transfer looks at every
/// receiver once).
const MAX_RECEIVERS: u64 = 64;
/// The methods a piping path answers, for `Allow` and preflights.
const METHODS: &[u8] = b"GET, HEAD, POST, PUT, OPTIONS";

/// Progress lines of the sender's response.
pub(super) mod line {
    pub const CONNECTED: &str = "[INFO] A receiver was connected.\n";
    pub const SENT: &str = "[INFO] Sent successfully!\n";
    pub const ALL_RECEIVED: &str = "[INFO] All receiver(s) was/were received successfully.\n";
    pub const ABORTED: &str = "[INFO] A receiver aborted.\n";
    pub const ALL_ABORTED: &str = "[INFO] All receiver(s) was/were aborted halfway.\n";
}

impl Server {
    /// A request on a path the relay's own routes do not take.
    pub(super) fn handle_piping(&mut self, id: ConnId) -> Step {
        let conn = &mut self.conns[id.0];
        normalize_path(&conn.req.raw_path, &mut conn.channel);
        let reserved = RESERVED.contains(&conn.channel.as_slice());
        let method = conn.req.method.clone();
        match method.as_slice() {
            b"GET" | b"HEAD" if reserved => self.piping_reserved(id),
            b"POST" | b"PUT" if reserved => {
                let path = String::from_utf8_lossy(&self.conns[id.0].channel);
                let text = format!(
                    "[ERROR] Cannot send to the reserved path '{path}'. (e.g. '/mypath123')\n"
                );
                self.piping_refuse(id, Status(400), &text)
            }
            b"POST" | b"PUT" if field(&self.conns[id.0], "content-range").is_some() => {
                let text = format!(
                    "[ERROR] Content-Range is not supported for now in {}\n",
                    String::from_utf8_lossy(&method)
                );
                self.piping_refuse(id, Status(400), &text)
            }
            b"POST" | b"PUT" => self.piping_arrive(id, PipingRole::Sender),
            b"GET" => self.piping_arrive(id, PipingRole::Receiver),
            b"OPTIONS" => self.piping_preflight(id),
            _ => {
                let text = format!(
                    "[ERROR] Unsupported method: {}.\n",
                    String::from_utf8_lossy(&method)
                );
                self.piping_respond(id, Status(405), None, &text, &[("Allow", METHODS)])
            }
        }
    }

    /// A sender or a receiver arrives: refused, waiting, or the last one.
    fn piping_arrive(&mut self, id: ConnId, role: PipingRole) -> Step {
        let conn = &self.conns[id.0];
        if role == PipingRole::Receiver && field(conn, "service-worker") == Some(b"script") {
            let text = "[ERROR] Service Worker registration is rejected.\n";
            return self.piping_refuse(id, Status(400), text);
        }
        let n = match receivers_asked(&conn.req.query, &mut self.secret) {
            Ok(n) => n,
            Err(NotCount::NotANumber) => {
                let text = match role {
                    PipingRole::Sender => "[ERROR] Invalid \"n\" query parameter\n",
                    PipingRole::Receiver => "[ERROR] Invalid query parameter \"n\"\n",
                };
                return self.piping_refuse(id, Status(400), text);
            }
            Err(NotCount::NotPositive(n)) => {
                let text = format!("[ERROR] n should > 0, but n = {n}.\n");
                return self.piping_refuse(id, Status(400), &text);
            }
        };
        if n > MAX_RECEIVERS {
            let text = format!("[ERROR] n should be at most {MAX_RECEIVERS}, but n = {n}.\n");
            return self.piping_refuse(id, Status(400), &text);
        }
        if role == PipingRole::Sender {
            self.continue_body(id);
        }
        let now = self.now_millis();
        let mut receivers = std::mem::take(&mut self.waiters);
        receivers.clear();
        let conn = &self.conns[id.0];
        let arrival =
            self.relay
                .piping_arrive(now, &conn.channel, role, n, WaiterId(id.0), &mut receivers);
        let step = match arrival {
            Err(e) => {
                let text = refusal(e, &String::from_utf8_lossy(&conn.channel));
                self.piping_refuse(id, Status(400), &text)
            }
            Ok(PipingArrival::Waiting {
                receivers: waiting,
                sender,
            }) => match role {
                PipingRole::Sender => {
                    self.piping_sender_head(id, n);
                    if waiting > 0 {
                        let text =
                            format!("[INFO] {waiting} receiver(s) has/have been connected.\n");
                        self.piping_progress(id, &text);
                    }
                    self.park(id, Wait::PipingSender)
                }
                PipingRole::Receiver => {
                    if let Some(WaiterId(sender)) = sender {
                        self.piping_progress(ConnId(sender), line::CONNECTED);
                        self.ready.push(ConnId(sender));
                    }
                    self.park(id, Wait::PipingReceiver)
                }
            },
            Ok(PipingArrival::Established { sender }) => {
                self.piping_established(id, role, n, ConnId(sender.0), &receivers);
                Step::Again
            }
        };
        self.waiters = receivers;
        step
    }

    /// The last of a transfer's parties arrived: the sender and receivers
    /// are told, and the body starts towards the receivers.
    fn piping_established(
        &mut self,
        id: ConnId,
        role: PipingRole,
        n: u64,
        sender: ConnId,
        receivers: &[WaiterId],
    ) {
        match role {
            PipingRole::Sender => {
                self.piping_sender_head(id, n);
                let text = format!(
                    "[INFO] {} receiver(s) has/have been connected.\n",
                    receivers.len()
                );
                self.piping_progress(id, &text);
            }
            PipingRole::Receiver => self.piping_progress(sender, line::CONNECTED),
        }
        let text = format!("[INFO] Start sending to {} receiver(s)!\n", receivers.len());
        self.piping_progress(sender, &text);
        let group: Vec<ConnId> = receivers.iter().map(|&WaiterId(r)| ConnId(r)).collect();
        // A browser form: its first part is the content.
        let content_type = field(&self.conns[sender.0], "content-type").unwrap_or_default();
        match MultipartDecoder::for_content_type(content_type) {
            Some(Ok(decoder)) => {
                // A part head costs what a request head may.
                let decoder = decoder.limit_head(self.max_head);
                let part = FormPart::Before;
                self.start_form(sender, group, Form { decoder, part });
            }
            Some(Err(e)) => self.refuse_form(sender, group, e),
            // One receiver or several, each with the piping fields.
            None => self.start_transfer(sender, Receivers::from(group), Transfer::Piping),
        }
    }

    /// The sender's response head and its first progress line.
    fn piping_sender_head(&mut self, id: ConnId, n: u64) {
        let conn = &mut self.conns[id.0];
        conn.status = 200;
        let output = conn.output.get_or_insert_with(|| self.output_pool.take());
        let mut w = HeadWriter::new(output.spare(), Status(200));
        w.header("Content-Type", b"text/plain")
            .header("Access-Control-Allow-Origin", b"*")
            .header("Date", self.date.as_bytes());
        // HTTP/1.0 has no chunks: the lines then run until the connection closes.
        if conn.req.minor_version == 0 {
            conn.req.keep_alive = false;
        } else {
            w.header("Transfer-Encoding", b"chunked");
        }
        reply::persistence(&mut w, conn.req.keep_alive, conn.req.minor_version);
        if let Some(len) = w.finish() {
            output.commit(len);
        }
        let text = format!("[INFO] Waiting for {n} receiver(s)...\n");
        self.piping_progress(id, &text);
    }

    /// Appends a progress line to a sender's response (dropped if the sender
    /// lets 64 KiB of them pile up unread).
    pub(super) fn piping_progress(&mut self, id: ConnId, text: &str) {
        let Some(conn) = self.conns.get_mut(id.0) else {
            return;
        };
        let output = conn.output.get_or_insert_with(|| self.output_pool.take());
        push_progress(output, conn.req.minor_version, text.as_bytes());
    }

    /// Ends a sender's response with `lines` and moves it on: to its next
    /// request when its body was read whole, else lingering.
    pub(super) fn piping_end_sender(&mut self, id: ConnId, lines: &[&str], body_read: bool) {
        for text in lines {
            self.piping_progress(id, text);
        }
        let Some(conn) = self.conns.get_mut(id.0) else {
            return;
        };
        let output = conn.output.get_or_insert_with(|| self.output_pool.take());
        if conn.req.minor_version >= 1 {
            output.push(b"0\r\n\r\n");
        }
        let after = match (body_read, conn.req.keep_alive) {
            (false, _) => {
                conn.req.keep_alive = false;
                After::Linger
            }
            (true, true) => After::NextRequest,
            (true, false) => After::Close,
        };
        conn.phase = Phase::Responding(after);
        self.ready.push(id);
    }

    /// The sender's whole body reached its one receiver.
    pub(super) fn piping_transfer_done(&mut self, sender: ConnId) {
        self.stats.transferred(crate::relay::Method::Piping);
        let now = self.now_millis();
        self.relay.piping_finish(now, &self.conns[sender.0].channel);
        self.piping_end_sender(sender, &[line::SENT, line::ALL_RECEIVED], true);
    }

    /// A receiver left mid-body: the sender is told; the others go on, and
    /// when none is left the sender's response ends.
    pub(super) fn piping_receiver_gone(&mut self, sender: ConnId, receiver: ConnId) {
        let Some(Phase::Producing { receivers, .. }) =
            self.conns.get_mut(sender.0).map(|c| &mut c.phase)
        else {
            return;
        };
        receivers.remove(receiver);
        if receivers.is_empty() {
            let now = self.now_millis();
            self.relay.piping_finish(now, &self.conns[sender.0].channel);
            self.piping_end_sender(sender, &[line::ABORTED, line::ALL_ABORTED], false);
        } else {
            self.piping_progress(sender, line::ABORTED);
            self.ready.push(sender);
        }
    }

    /// A sender's chunked framing broke: its response has begun and can only
    /// end; closing it cuts the receivers short and frees the path.
    pub(super) fn piping_sender_broke(&mut self, sender: ConnId) {
        self.close(sender);
    }

    /// A sender waited for its receivers past the wait timeout: its response
    /// has begun, and ends with the news.
    pub(super) fn piping_sender_wait_over(&mut self, sender: ConnId) {
        let lines = ["[ERROR] No receiver came within the wait timeout.\n"];
        self.piping_end_sender(sender, &lines, false);
    }

    /// The relay shuts down while a sender waits: its response ends with the news.
    pub(super) fn piping_sender_shut(&mut self, sender: ConnId) {
        let lines = ["[ERROR] The server is shutting down.\n"];
        self.piping_end_sender(sender, &lines, false);
    }

    /// The reference server's error form: status, a one-line text body.
    pub(super) fn piping_refuse(&mut self, id: ConnId, status: Status, text: &str) -> Step {
        self.piping_respond(id, status, Some(b"text/plain"), text, &[])
    }

    /// A complete response of the piping routes, CORS open to every origin.
    fn piping_respond(
        &mut self,
        id: ConnId,
        status: Status,
        content_type: Option<&[u8]>,
        body: &str,
        extra: &[(&str, &[u8])],
    ) -> Step {
        self.head_done(id);
        let conn = &mut self.conns[id.0];
        let after = body_after(conn);
        conn.status = status.0;
        if status.0 >= 400 {
            self.stats.reject(status.0);
        }
        let output = conn.output.get_or_insert_with(|| self.output_pool.take());
        let mut w = HeadWriter::new(output.spare(), status);
        // The reference server's answers for a browser's own requests (its
        // pages, `/favicon.ico`, `/robots.txt`) carry no CORS field.
        let bare = content_type.is_some_and(|t| t.starts_with(b"text/html"))
            || (matches!(status.0, 204 | 404) && body.is_empty());
        if status.0 != 204 {
            w.header_number("Content-Length", body.len() as u64);
        }
        if let Some(content_type) = content_type {
            w.header("Content-Type", content_type);
        }
        if !bare {
            w.header("Access-Control-Allow-Origin", b"*");
        }
        for (name, value) in extra {
            w.header(name, value);
        }
        w.header("Date", self.date.as_bytes());
        let keep_alive = after == After::NextRequest;
        reply::persistence(&mut w, keep_alive, conn.req.minor_version);
        let body = if conn.req.method_is("HEAD") { "" } else { body };
        if let Some(len) = w.finish_with_body(body.as_bytes()) {
            output.commit(len);
        }
        conn.phase = Phase::Responding(after);
        Step::Again
    }

    fn piping_preflight(&mut self, id: ConnId) -> Step {
        let private =
            field(&self.conns[id.0], "access-control-request-private-network") == Some(b"true");
        let mut extra: Vec<(&str, &[u8])> = vec![
            ("Access-Control-Allow-Methods", METHODS),
            (
                "Access-Control-Allow-Headers",
                b"Content-Type, Content-Disposition, X-Piping",
            ),
        ];
        if private {
            extra.push(("Access-Control-Allow-Private-Network", b"true"));
        }
        extra.push((
            "Access-Control-Expose-Headers",
            b"Access-Control-Allow-Headers",
        ));
        extra.push(("Access-Control-Max-Age", b"86400"));
        self.piping_respond(id, Status(200), None, "", &extra)
    }

    /// `GET`/`HEAD` of a reserved path.
    fn piping_reserved(&mut self, id: ConnId) -> Step {
        let conn = &self.conns[id.0];
        match conn.channel.as_slice() {
            b"/version" => {
                let text = format!("{}\n", reply::VERSION);
                self.piping_respond(id, Status(200), Some(b"text/plain"), &text, &[])
            }
            b"/help" => {
                let text = help_page(conn);
                self.piping_respond(id, Status(200), Some(b"text/plain"), &text, &[])
            }
            b"/" => {
                let page = pages::INDEX;
                self.piping_respond(
                    id,
                    Status(200),
                    Some(b"text/html; charset=utf-8"),
                    page,
                    &[],
                )
            }
            b"/noscript" => {
                let nonce = nonce();
                let page = noscript_page(&conn.req.query, &nonce, &mut self.secret);
                let policy = format!("default-src 'none'; style-src 'nonce-{nonce}'");
                let extra: [(&str, &[u8]); 1] = [("Content-Security-Policy", policy.as_bytes())];
                self.piping_respond(
                    id,
                    Status(200),
                    Some(b"text/html; charset=utf-8"),
                    &page,
                    &extra,
                )
            }
            b"/favicon.ico" => self.piping_respond(id, Status(204), None, "", &[]),
            b"/robots.txt" => self.piping_respond(id, Status(404), None, "", &[]),
            _ => {
                let text = "404 page not found\n";
                self.piping_respond(id, Status(404), Some(b"text/plain"), text, &[])
            }
        }
    }
}

/// Appends `text` as one progress line: a chunk over HTTP/1.1, plain over
/// HTTP/1.0. Returns false when it did not fit.
pub(super) fn push_progress(output: &mut crate::buf::Buf, minor_version: u8, text: &[u8]) -> bool {
    if minor_version == 0 {
        return output.push(text);
    }
    let size = format!("{:x}\r\n", text.len());
    if output.spare_len() < size.len() + text.len() + 2 {
        return false;
    }
    output.push(size.as_bytes()) && output.push(text) && output.push(b"\r\n")
}

/// The reference server's answer to a party the path cannot take.
fn refusal(e: PipingError, path: &str) -> String {
    match e {
        PipingError::Established => {
            format!("[ERROR] Connection on '{path}' has been established already.\n")
        }
        PipingError::AnotherSender => {
            format!("[ERROR] Another sender has been connected on '{path}'.\n")
        }
        PipingError::Mismatch { expected, got } => {
            format!("[ERROR] The number of receivers should be {expected} but {got}.\n")
        }
        PipingError::ReachedLimits => {
            "[ERROR] The number of receivers has reached limits.\n".to_owned()
        }
    }
}

/// Why the `n` query parameter is not a receiver count.
#[derive(Debug, PartialEq, Eq)]
enum NotCount {
    NotANumber,
    NotPositive(i64),
}

/// The number of receivers asked for: the first `n` parameter read as
/// JavaScript's `parseInt(value, 10)` reads it (leading blanks, a sign, then
/// digits up to the first non-digit); 1 without one.
fn receivers_asked(query: &[u8], scratch: &mut Vec<u8>) -> Result<u64, NotCount> {
    if !first_param(query, b"n", scratch) {
        return Ok(1);
    }
    let text = scratch.trim_ascii_start();
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, text),
    };
    let digits = &digits[..digits.iter().take_while(|b| b.is_ascii_digit()).count()];
    if digits.is_empty() {
        return Err(NotCount::NotANumber);
    }
    // Beyond u64 every value is far more receivers than connections.
    let value = digits.iter().fold(0u64, |v, &d| {
        v.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    match (negative, value) {
        (_, 0) => Err(NotCount::NotPositive(0)),
        (true, v) => Err(NotCount::NotPositive(-(v.min(i64::MAX as u64) as i64))),
        (false, v) => Ok(v),
    }
}

/// The first parameter `name` (case-sensitive, as URLSearchParams), decoded.
fn first_param(query: &[u8], name: &[u8], out: &mut Vec<u8>) -> bool {
    for part in query.split(|&b| b == b'&') {
        let key = part.split(|&b| b == b'=').next().unwrap_or_default();
        if key == name {
            return find_param(part, name, out);
        }
    }
    false
}

/// The value of the request's field `name`, from its head as received.
fn field<'a>(conn: &'a Conn, name: &str) -> Option<&'a [u8]> {
    let mut fields = [httparse::EMPTY_HEADER; crate::http::MAX_HEADER_FIELDS];
    let mut req = httparse::Request::new(&mut fields);
    req.parse(&conn.head_copy).ok()?;
    let value = req
        .headers
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(name))?
        .value;
    let start = value.as_ptr() as usize - conn.head_copy.as_ptr() as usize;
    Some(&conn.head_copy[start..start + value.len()])
}

/// The request target's path as a piping path: not percent-decoded, dot
/// segments resolved (RFC 3986 §5.2.4), as the reference server reads it.
fn normalize_path(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    for segment in raw.split(|&b| b == b'/').skip(1) {
        match segment {
            b"." => {}
            b".." => {
                let keep = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
                out.truncate(keep);
            }
            _ => {
                out.push(b'/');
                out.extend_from_slice(segment);
            }
        }
    }
    // A path ending in a dot segment ends with a slash.
    if out.is_empty() || raw.ends_with(b"/.") || raw.ends_with(b"/..") {
        out.push(b'/');
    }
}

/// The fields of a form upload's first part, which its receivers get instead
/// of the sender's own.
pub(super) struct PartFields<'a> {
    pub content_type: Option<&'a [u8]>,
    pub disposition: Option<&'a [u8]>,
}

/// What a receiver's head has before its framing: the reference server's
/// fields, none of the relay's own.
pub(super) fn receiver_head_fields(w: &mut HeadWriter, sender: &Conn, date: &[u8]) {
    receiver_fields(w, sender, None);
    w.header("Date", date);
}

/// The sender fields a receiver gets, from the sender's head as received (or
/// from `part`, for a form upload): `Content-Type` (an HTML type made plain
/// text, so that the relay never serves a page of someone else's),
/// `Content-Disposition`, every `X-Piping`.
pub(super) fn receiver_fields(w: &mut HeadWriter, sender: &Conn, part: Option<&PartFields>) {
    let mut fields = [httparse::EMPTY_HEADER; crate::http::MAX_HEADER_FIELDS];
    let mut req = httparse::Request::new(&mut fields);
    if req.parse(&sender.head_copy).is_err() {
        return;
    }
    let own = |name: &str| {
        req.headers
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.value)
    };
    let (content_type, disposition) = match part {
        Some(part) => (part.content_type, part.disposition),
        None => (own("content-type"), own("content-disposition")),
    };
    if let Some(value) = content_type {
        let split = value.iter().position(|&b| b == b';').unwrap_or(value.len());
        let (media, params) = value.split_at(split);
        if media.trim_ascii().eq_ignore_ascii_case(b"text/html") {
            let mut plain = b"text/plain".to_vec();
            plain.extend_from_slice(params);
            w.header("Content-Type", &plain);
        } else {
            w.header("Content-Type", value);
        }
    }
    if let Some(value) = disposition {
        w.header("Content-Disposition", value);
    }
    let mut x_piping = false;
    for f in req
        .headers
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("x-piping"))
    {
        w.header("X-Piping", f.value);
        x_piping = true;
    }
    w.header("Access-Control-Allow-Origin", b"*");
    if x_piping {
        w.header("Access-Control-Expose-Headers", b"X-Piping");
    }
    w.header("X-Robots-Tag", b"none");
}

#[cfg(test)]
mod tests;

//! Piping Server transfers (with `--piping`): a sender's body (`POST`/`PUT`)
//! goes to the `n` receivers (`GET`) of the same path. The sender's response
//! starts at once and streams progress lines as the transfer goes; the
//! receivers get the body with the sender's content headers.

use super::respond::body_after;
use super::{Server, Step};
use crate::conn::{After, Conn, ConnId, Form, FormPart, Phase, Transfer, Wait};
use crate::http::{find_param, HeadWriter, MultipartDecoder, Status};
use crate::relay::{PipingArrival, PipingError, PipingRole, WaiterId};
use crate::reply;

/// Paths the reference server keeps for itself (no transfer there).
const RESERVED: [&[u8]; 6] = [
    b"/",
    b"/noscript",
    b"/version",
    b"/help",
    b"/favicon.ico",
    b"/robots.txt",
];
/// Most receivers of one transfer (each round of a broadcast looks at every
/// receiver once).
pub(super) const MAX_RECEIVERS: u64 = 64;
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
                let path = String::from_utf8_lossy(&conn.channel).into_owned();
                let text = match e {
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
                };
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
                let sender = ConnId(sender.0);
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
                    None => {
                        // One receiver: a transfer like a link's (zero copy
                        // where it applies), with the piping fields; several:
                        // a broadcast.
                        for &receiver in &group {
                            self.start_transfer(sender, receiver, Transfer::Piping);
                        }
                        if group.len() > 1 {
                            self.start_broadcast(sender, group);
                        }
                    }
                }
                Step::Again
            }
        };
        self.waiters = receivers;
        step
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
                let page = include_str!("pages/index.html");
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

/// The form page for browsers without JavaScript: choose a path and a mode
/// (a file or a text) with a `GET` form, then send with a `multipart/form-data`
/// form whose first part is what the receivers get.
fn noscript_page(query: &[u8], nonce: &str, scratch: &mut Vec<u8>) -> String {
    let path = match find_param(query, b"path", scratch) {
        true => escape_html(&String::from_utf8_lossy(scratch)),
        false => String::new(),
    };
    let text_mode = find_param(query, b"mode", scratch) && scratch == b"text";
    let field = if text_mode {
        r#"<label>Text <textarea name="input_text"></textarea></label>"#
    } else {
        r#"<label>File <input type="file" name="input_file"{disabled}></label>"#
    };
    let (action, disabled) = match path.is_empty() {
        true => (String::new(), " disabled"),
        false => (format!(r#" action="{path}""#), ""),
    };
    include_str!("pages/noscript.html")
        .replace("{field}", field)
        .replace("{nonce}", nonce)
        .replace("{path}", &path)
        .replace("{action}", &action)
        .replace("{disabled}", disabled)
        .replace("{file_checked}", if text_mode { "" } else { " checked" })
        .replace("{text_checked}", if text_mode { " checked" } else { "" })
}

/// Text made safe inside an HTML attribute or element.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Braces too: the page's placeholders must not come from a query.
            '{' => out.push_str("&#123;"),
            '}' => out.push_str("&#125;"),
            c => out.push(c),
        }
    }
    out
}

/// A fresh nonce for a page's style: 16 random bytes, base64.
fn nonce() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = [0u8; 18];
    super::listen::fill_random(&mut bytes);
    bytes
        .chunks(3)
        .flat_map(|c| {
            let n = u32::from(c[0]) << 16 | u32::from(c[1]) << 8 | u32::from(c[2]);
            (0..4).map(move |i| ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char)
        })
        .collect()
}

/// The usage page, with curl lines for this relay as the client reached it.
fn help_page(conn: &Conn) -> String {
    let scheme = if conn.https { "https" } else { "http" };
    let host = match conn.req.host.as_slice() {
        b"" => "hostname".into(),
        host => String::from_utf8_lossy(host),
    };
    let url = format!("{scheme}://{host}");
    format!(
        "httprelay {version}: Piping Server transfers\n\
         \n\
         Receive:\n    curl {url}/mypath\n\
         \n\
         Send a file:\n    curl -T myfile {url}/mypath\n\
         Send text:\n    echo 'hello!' | curl -T - {url}/mypath\n\
         Send a directory:\n    tar zcf - ./mydir | curl -T - {url}/mypath\n\
         \n\
         Several receivers: add ?n=3 to the sender's and every receiver's URL.\n",
        version = reply::VERSION
    )
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
mod tests {
    use super::*;

    #[test]
    fn n_is_read_as_parse_int_reads_it() {
        let mut scratch = Vec::new();
        let cases: [(&[u8], Result<u64, NotCount>); 12] = [
            (b"", Ok(1)),
            (b"x=2", Ok(1)),
            (b"n=3", Ok(3)),
            (b"n=1.5", Ok(1)),
            (b"n=2abc", Ok(2)),
            (b"n=+2", Ok(2)),
            (b"n=%32", Ok(2)),
            (b"n=2&n=1", Ok(2)),
            (b"n=0x10", Err(NotCount::NotPositive(0))),
            (b"n=-1", Err(NotCount::NotPositive(-1))),
            (b"n=", Err(NotCount::NotANumber)),
            (b"n=abc", Err(NotCount::NotANumber)),
        ];
        for (query, expected) in cases {
            let got = receivers_asked(query, &mut scratch);
            assert_eq!(got, expected, "{}", String::from_utf8_lossy(query));
        }
    }

    #[test]
    fn paths_keep_escapes_and_lose_dot_segments() {
        let mut out = Vec::new();
        for (raw, expected) in [
            (&b"/p1/"[..], &b"/p1/"[..]),
            (b"/x/../p6", b"/p6"),
            (b"/p7/./q", b"/p7/q"),
            (b"/%70%35", b"/%70%35"),
            (b"/", b"/"),
            (b"/a/..", b"/"),
            (b"/a/b/.", b"/a/b/"),
            (b"/../..", b"/"),
        ] {
            normalize_path(raw, &mut out);
            assert_eq!(out, expected, "{}", String::from_utf8_lossy(raw));
        }
    }

    // ---- the piping routes in a whole server (server::testing) ----------------

    use crate::server::testing::{body_of, status_of, Client, Shell};

    fn piping() -> Shell {
        Shell::new(&["--piping"])
    }

    fn send(path: &str, body: &str) -> Vec<u8> {
        format!(
            "POST {path} HTTP/1.1\r\nHost: r\r\nContent-Type: text/html; charset=utf-8\r\n\
             X-Piping: a\r\nX-Piping: b\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn receive(path: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nHost: r\r\n\r\n").into_bytes()
    }

    /// The progress lines a sender has received so far (chunk framing removed).
    fn lines(sender: &mut Client) -> String {
        let text = sender.text();
        let body = match text.starts_with("HTTP/") {
            true => text.split_once("\r\n\r\n").map_or("", |(_, b)| b),
            false => text.as_str(),
        };
        body.split("\r\n")
            .filter(|part| part.starts_with('['))
            .collect()
    }

    #[test]
    fn a_sender_first_hears_of_each_step_and_its_receiver_gets_its_fields() {
        let mut shell = piping();
        let (mut sender, head) = shell.ask(&send("/a/../p", "<b>hi</b>"));
        assert_eq!(status_of(&head), 200);
        assert!(
            head.contains("\r\nTransfer-Encoding: chunked\r\n"),
            "{head}"
        );
        assert!(
            head.ends_with("24\r\n[INFO] Waiting for 1 receiver(s)...\n\r\n"),
            "{head}"
        );
        let (_receiver, got) = shell.ask(&receive("/p?x=1"));
        assert_eq!(status_of(&got), 200);
        for field in [
            "Content-Type: text/plain; charset=utf-8",
            "Content-Length: 9",
            "X-Piping: a",
            "X-Piping: b",
            "Access-Control-Allow-Origin: *",
            "Access-Control-Expose-Headers: X-Piping",
            "X-Robots-Tag: none",
        ] {
            assert!(
                got.contains(&format!("\r\n{field}\r\n")),
                "{field} in {got}"
            );
        }
        assert!(!got.contains("HttpRelay"), "none of the relay's own fields");
        assert_eq!(body_of(&got), "<b>hi</b>");
        assert_eq!(
            lines(&mut sender),
            "[INFO] A receiver was connected.\n[INFO] Start sending to 1 receiver(s)!\n\
             [INFO] Sent successfully!\n[INFO] All receiver(s) was/were received successfully.\n"
        );
        assert_eq!(
            shell.server.relay.channel_count(),
            0,
            "the path is free again"
        );
    }

    #[test]
    fn receivers_first_then_the_sender_hears_how_many_wait() {
        let mut shell = piping();
        let mut receivers = [shell.connect(), shell.connect()];
        for receiver in receivers.iter_mut() {
            receiver.send(&mut shell, &receive("/two?n=2"));
        }
        let (mut sender, head) = shell.ask(&send("/two?n=2", "both"));
        // The body came with the head: the whole transfer is over at once.
        assert!(head.contains(
            "[INFO] Waiting for 2 receiver(s)...\n\r\n2e\r\n[INFO] 2 receiver(s) has/have been connected.\n"
        ));
        for receiver in receivers.iter_mut() {
            assert_eq!(body_of(&receiver.text()), "both");
        }
        assert!(
            head.ends_with("[INFO] All receiver(s) was/were received successfully.\n\r\n0\r\n\r\n")
        );
        assert!(!sender.closed());
    }

    #[test]
    fn refusals_are_one_error_line_as_the_reference_words_them() {
        let mut shell = piping();
        let (_waiting, _) = shell.ask(&receive("/r?n=2"));
        for (request, status, text) in [
            (send("/r?n=3", "x"), 400, "[ERROR] The number of receivers should be 2 but 3.\n"),
            (receive("/r"), 400, "[ERROR] The number of receivers should be 2 but 1.\n"),
            (receive("/r?n=abc"), 400, "[ERROR] Invalid query parameter \"n\"\n"),
            (send("/r?n=abc", "x"), 400, "[ERROR] Invalid \"n\" query parameter\n"),
            (receive("/r?n=0"), 400, "[ERROR] n should > 0, but n = 0.\n"),
            (receive("/r?n=65"), 400, "[ERROR] n should be at most 64, but n = 65.\n"),
            (send("/help", "x"), 400, "[ERROR] Cannot send to the reserved path '/help'. (e.g. '/mypath123')\n"),
            (
                b"GET /r HTTP/1.1\r\nHost: r\r\nService-Worker: script\r\n\r\n".to_vec(),
                400,
                "[ERROR] Service Worker registration is rejected.\n",
            ),
            (
                b"PUT /r HTTP/1.1\r\nHost: r\r\nContent-Range: bytes 0-0/1\r\nContent-Length: 1\r\n\r\nx".to_vec(),
                400,
                "[ERROR] Content-Range is not supported for now in PUT\n",
            ),
            (b"DELETE /r HTTP/1.1\r\nHost: r\r\n\r\n".to_vec(), 405, "[ERROR] Unsupported method: DELETE.\n"),
        ] {
            let (_client, answer) = shell.ask(&request);
            assert!(!answer.is_empty(), "{}", String::from_utf8_lossy(&request));
            assert_eq!((status_of(&answer), body_of(&answer)), (status, text), "{answer}");
        }
        // A body still on its way keeps the transfer under way.
        let (_sender, _) = shell.ask(b"POST /s HTTP/1.1\r\nHost: r\r\nContent-Length: 5\r\n\r\nx");
        let (_again, answer) = shell.ask(&send("/s", "y"));
        assert_eq!(
            body_of(&answer),
            "[ERROR] Another sender has been connected on '/s'.\n"
        );
        let (_receiver, _) = shell.ask(&receive("/s"));
        let (_late, answer) = shell.ask(&receive("/s"));
        assert_eq!(
            body_of(&answer),
            "[ERROR] Connection on '/s' has been established already.\n"
        );
        assert_eq!(
            shell.server.relay.waiter_count(),
            1,
            "only the first receiver of /r waits"
        );
    }

    #[test]
    fn a_receiver_that_leaves_a_broadcast_is_dropped_and_the_others_get_everything() {
        let mut shell = piping();
        let mut receivers = [shell.connect(), shell.connect(), shell.connect()];
        for receiver in receivers.iter_mut() {
            receiver.send(&mut shell, &receive("/b?n=3"));
        }
        let mut sender = shell.connect();
        sender.send(
            &mut shell,
            b"PUT /b?n=3 HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        );
        let [first, mut second, mut third] = receivers;
        first.close(&mut shell);
        sender.send(&mut shell, b"2\r\nde\r\n0\r\n\r\n");
        for receiver in [&mut second, &mut third] {
            let got = receiver.text();
            assert!(
                got.ends_with("\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
                "{got}"
            );
        }
        let said = lines(&mut sender);
        assert_eq!(
            said.matches("[INFO] A receiver aborted.\n").count(),
            1,
            "{said}"
        );
        assert!(said.ends_with("[INFO] All receiver(s) was/were received successfully.\n"));
        assert_eq!(shell.server.relay.channel_count(), 0);
    }

    #[test]
    fn the_last_receiver_leaving_ends_the_senders_response() {
        let mut shell = piping();
        let (mut sender, _) = shell
            .ask(b"PUT /l HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
        let (receiver, _) = shell.ask(&receive("/l"));
        receiver.close(&mut shell);
        assert!(lines(&mut sender).ends_with(
            "[INFO] A receiver aborted.\n[INFO] All receiver(s) was/were aborted halfway.\n"
        ));
        assert!(
            sender.closed(),
            "the sender's body is unread: it lingers, sending side shut"
        );
        assert_eq!(shell.server.relay.channel_count(), 0);
    }

    #[test]
    fn a_waiting_sender_gets_a_last_line_at_the_wait_timeout_and_at_shutdown() {
        let mut shell = Shell::new(&["--piping", "--wait-timeout", "5"]);
        let (mut sender, _) = shell.ask(&send("/w", "x"));
        shell.advance(std::time::Duration::from_secs(6));
        assert_eq!(
            lines(&mut sender),
            "[ERROR] No receiver came within the wait timeout.\n"
        );
        assert!(sender.closed());
        assert_eq!(shell.server.relay.waiter_count(), 0);
        let (mut other, _) = shell.ask(&send("/w2", "x"));
        shell.server.begin_shutdown();
        shell.settle();
        assert_eq!(lines(&mut other), "[ERROR] The server is shutting down.\n");
    }

    #[test]
    fn an_http_1_0_sender_gets_plain_lines_until_the_connection_closes() {
        let mut shell = piping();
        let (mut sender, head) = shell.ask(b"POST /o HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi");
        assert!(!head.contains("Transfer-Encoding"), "{head}");
        assert!(
            head.ends_with("\r\n\r\n[INFO] Waiting for 1 receiver(s)...\n"),
            "{head}"
        );
        let (_receiver, got) = shell.ask(&receive("/o"));
        assert_eq!(body_of(&got), "hi");
        assert!(sender
            .text()
            .ends_with("[INFO] All receiver(s) was/were received successfully.\n"));
        assert!(sender.closed());
    }

    #[test]
    fn reserved_paths_and_the_preflight() {
        let mut shell = piping();
        let (_c, version) = shell.ask(&receive("/version"));
        assert_eq!(body_of(&version), format!("{}\n", reply::VERSION));
        let (_c, help) = shell.ask(b"GET /help HTTP/1.1\r\nHost: relay.example:8080\r\n\r\n");
        assert!(body_of(&help).contains("curl -T myfile http://relay.example:8080/mypath\n"));
        let (_c, head) = shell.ask(b"HEAD /help HTTP/1.1\r\nHost: r\r\n\r\n");
        assert_eq!(body_of(&head), "", "HEAD: the head only");
        let (_c, favicon) = shell.ask(&receive("/favicon.ico"));
        assert_eq!(status_of(&favicon), 204);
        assert!(!favicon.contains("Content-Length"));
        let (_c, preflight) = shell.ask(
            b"OPTIONS /x HTTP/1.1\r\nHost: r\r\nAccess-Control-Request-Private-Network: true\r\n\r\n",
        );
        assert!(preflight.contains("\r\nAccess-Control-Allow-Private-Network: true\r\n"));
        assert!(preflight.contains(
            "\r\nAccess-Control-Allow-Headers: Content-Type, Content-Disposition, X-Piping\r\n"
        ));
        let (_c, own) = shell.ask(&receive("/health"));
        assert_eq!(
            body_of(&own),
            reply::VERSION,
            "the relay's own routes keep their meaning"
        );
    }

    #[test]
    fn without_the_flag_other_paths_stay_404() {
        let mut shell = Shell::new(&[]);
        let (_c, answer) = shell.ask(&send("/p", "x"));
        assert_eq!(status_of(&answer), 404);
    }

    /// The content of a chunked body.
    fn dechunk(mut body: &str) -> String {
        let mut content = String::new();
        while let Some((size, rest)) = body.split_once("\r\n") {
            let size = usize::from_str_radix(size, 16).expect("a chunk size");
            if size == 0 || rest.len() < size {
                break;
            }
            content.push_str(&rest[..size]);
            body = rest[size..].strip_prefix("\r\n").unwrap_or_default();
        }
        content
    }

    fn form_sender(path: &str, body_len: usize) -> Vec<u8> {
        format!(
            "POST {path} HTTP/1.1\r\nHost: r\r\nX-Piping: f\r\n\
             Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {body_len}\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn a_form_uploads_first_part_goes_to_every_receiver_with_its_own_fields() {
        let body: &[u8] = b"--XyZ\r\nContent-Disposition: form-data; name=\"input_file\"; filename=\"a.html\"\r\n\
            Content-Type: text/html\r\n\r\nline\r\n--Xy\r\nmore\r\n--XyZ\r\n\
            Content-Disposition: form-data; name=\"second\"\r\n\r\ndropped\r\n--XyZ--\r\n";
        let mut shell = piping();
        let mut receivers = [shell.connect(), shell.connect()];
        for receiver in receivers.iter_mut() {
            receiver.send(&mut shell, &receive("/f?n=2"));
        }
        let (mut sender, _) = shell.ask(&form_sender("/f?n=2", body.len()));
        // Cut so that delimiters straddle the pieces.
        for piece in body.chunks(7) {
            sender.send(&mut shell, piece);
        }
        for receiver in receivers.iter_mut() {
            let got = receiver.text();
            assert_eq!(status_of(&got), 200);
            for field in [
                "Content-Type: text/plain",
                "Content-Disposition: form-data; name=\"input_file\"; filename=\"a.html\"",
                "X-Piping: f",
                "Transfer-Encoding: chunked",
            ] {
                assert!(
                    got.contains(&format!("\r\n{field}\r\n")),
                    "{field} in {got}"
                );
            }
            assert_eq!(dechunk(body_of(&got)), "line\r\n--Xy\r\nmore", "{got}");
            assert!(got.ends_with("\r\n0\r\n\r\n"));
        }
        assert!(lines(&mut sender)
            .ends_with("[INFO] All receiver(s) was/were received successfully.\n"));
        assert_eq!(shell.server.relay.channel_count(), 0);
    }

    #[test]
    fn a_form_that_never_closes_its_part_cuts_the_receivers_short_and_tells_the_sender() {
        let body: &[u8] = b"--XyZ\r\nContent-Disposition: form-data; name=\"t\"\r\n\r\npartial";
        let mut shell = piping();
        let (mut receiver, _) = shell.ask(&receive("/u"));
        let mut request = form_sender("/u", body.len());
        request.extend_from_slice(body);
        let (_sender, said) = shell.ask(&request);
        let got = receiver.text();
        assert!(
            got.ends_with("\r\n\r\n7\r\npartial\r\n"),
            "no last chunk: {got}"
        );
        assert!(receiver.closed());
        assert!(dechunk(body_of(&said)).ends_with(
            "[ERROR] The upload is not valid multipart/form-data (multipart body ended before its last boundary).\n"
        ));
        assert_eq!(shell.server.relay.channel_count(), 0);
    }

    #[test]
    fn the_pages_send_to_a_path_and_the_form_page_allows_no_script() {
        let mut shell = piping();
        let (_c, index) = shell.ask(&receive("/"));
        assert_eq!(status_of(&index), 200);
        assert!(index.contains("\r\nContent-Type: text/html; charset=utf-8\r\n"));
        assert!(body_of(&index).contains("xhr.open('POST', base + '/' + path)"));
        let (_c, page) = shell.ask(&receive("/noscript?path=%22%3E%3Cx%7Bnonce%7D&mode=text"));
        let policy = page
            .split("\r\nContent-Security-Policy: ")
            .nth(1)
            .and_then(|rest| rest.split("\r\n").next())
            .expect("a policy");
        let nonce = policy
            .strip_prefix("default-src 'none'; style-src 'nonce-")
            .and_then(|n| n.strip_suffix('\''))
            .expect("a style nonce");
        assert_eq!(nonce.len(), 24);
        let body = body_of(&page);
        assert!(body.contains(&format!("<style nonce=\"{nonce}\">")));
        assert!(!body.contains("<script"));
        assert!(
            body.contains(r#"action="&quot;&gt;&lt;x&#123;nonce&#125;""#),
            "the path is escaped, placeholders included: {body}"
        );
        assert!(body.contains(r#"<textarea name="input_text">"#));
        let (_c, again) = shell.ask(&receive("/noscript"));
        assert!(!again.contains(nonce), "a fresh nonce per page");
        assert!(body_of(&again).contains(r#"<input type="file" name="input_file" disabled>"#));
    }
}

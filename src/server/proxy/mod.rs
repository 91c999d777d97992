//! proxy: `SERVE /proxy/{serverId}` long-polls for jobs; any other request on
//! the id is a client whose request (head and body) streams into a waiting
//! `SERVE` response, and whose response streams from the `SERVE` request that
//! brings the result (`HttpRelay-Proxy-JobId`).

use super::respond::Guarded;
use super::{Server, Step};
use crate::http::{trim, BodyDecoder, Framing, HeadWriter, Status};
use crate::relay::Writer;
use crate::relay::{JobId, ProxyDispatch, ResultError, WaiterId};
use crate::server::conn::{Conn, ConnId, Hold, Phase, Receivers, Transfer, Wait};
use crate::server::reply::{self, Expose, Replaced};

/// Client fields not forwarded to the server: they describe this hop's
/// connection and framing, which the relay sets itself.
const HOP_FIELDS: [&str; 10] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "expect",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

impl Server {
    pub(super) fn handle_proxy(&mut self, id: ConnId) -> Step {
        if self.conns[id.0].req.method_is("SERVE") {
            self.proxy_serve(id)
        } else {
            self.proxy_client(id)
        }
    }

    fn proxy_client(&mut self, id: ConnId) -> Step {
        let now = self.now_millis();
        let conn = &mut self.conns[id.0];
        let (job, dispatch) = self.relay.proxy_request(now, &conn.channel, WaiterId(id.0));
        self.continue_body(id);
        match dispatch {
            ProxyDispatch::Dispatched {
                counterpart: WaiterId(server),
                ..
            } => {
                let server = Receivers::One(ConnId(server));
                self.start_transfer(id, server, Transfer::ProxyJob(job));
                Step::Again
            }
            ProxyDispatch::Parked => self.park(id, Wait::ProxyClient(job)),
        }
    }

    /// A `SERVE` request: deliver its result (if it names a job), then wait for
    /// the next job.
    fn proxy_serve(&mut self, id: ConnId) -> Step {
        self.load_secret(id);
        let Some(job) = job_id(&self.conns[id.0].head_copy) else {
            let framing = self.conns[id.0].req.framing();
            if framing.has_body() {
                // A body with nothing to answer: read as it arrives and dropped
                // (as the original does), then the request waits for a job.
                self.continue_body(id);
                self.conns[id.0].phase = Phase::Holding {
                    body: BodyDecoder::new(framing),
                    hold: Hold::Discard,
                };
                return Step::Again;
            }
            return self.proxy_wait_for_job(id);
        };
        let client = self.client_of(id);
        let now = self.now_millis();
        let conn = &self.conns[id.0];
        match self.relay.proxy_result(
            now,
            &conn.channel,
            Writer {
                secret: &self.secret,
                client,
            },
            &job,
        ) {
            Err(ResultError::Claim(e)) => self.refuse_claim(id, e, Guarded::Server),
            Err(ResultError::UnknownJob) => {
                self.refuse(id, Status(406), "406 unknown or already answered job\n")
            }
            Ok(WaiterId(client)) => {
                self.continue_body(id);
                self.start_transfer(id, Receivers::One(ConnId(client)), Transfer::ProxyResult);
                Step::Again
            }
        }
    }

    /// A `SERVE` without a job id has read and dropped its body: it waits for a job.
    pub(super) fn proxy_body_dropped(&mut self, id: ConnId) -> Step {
        // Nothing of the request is left unread, so a refusal from here on
        // (`401`, `503`) leaves the connection usable.
        self.conns[id.0].req.framing = Some(Framing::Empty);
        self.proxy_wait_for_job(id)
    }

    /// The `SERVE` request `id` takes the next job, or waits for one.
    pub(super) fn proxy_wait_for_job(&mut self, id: ConnId) -> Step {
        self.load_secret(id);
        let client = self.client_of(id);
        let now = self.now_millis();
        let conn = &self.conns[id.0];
        match self.relay.proxy_serve(
            now,
            &conn.channel,
            WaiterId(id.0),
            Writer {
                secret: &self.secret,
                client,
            },
        ) {
            Err(e) => self.refuse_claim(id, e, Guarded::Server),
            Ok(ProxyDispatch::Dispatched {
                counterpart: WaiterId(client),
                job,
            }) => {
                self.start_transfer(ConnId(client), Receivers::One(id), Transfer::ProxyJob(job));
                Step::Again
            }
            Ok(ProxyDispatch::Parked) => self.park(id, Wait::ProxyServer),
        }
    }

    /// The client's request reached its server: the client waits for the result.
    pub(super) fn proxy_job_delivered(&mut self, client: ConnId, job: JobId) {
        let now = self.now_millis();
        let Some(conn) = self.conns.get_mut(client.0) else {
            return;
        };
        self.relay.proxy_delivered(now, &conn.channel, &job);
        conn.phase = Phase::Parked(Wait::ProxyClient(job));
        conn.stashed = self.input_pool.stash(&mut conn.input);
        conn.trim_fields();
    }

    /// The result reached the client: the `SERVE` request waits for the next job.
    pub(super) fn proxy_result_delivered(&mut self, server: ConnId) {
        self.stats.transferred(crate::relay::Method::Proxy);
        self.proxy_wait_for_job(server);
    }

    /// The client's job can no longer be answered.
    pub(super) fn proxy_forget_job(&mut self, client: ConnId, job: JobId) {
        let now = self.now_millis();
        if let Some(conn) = self.conns.get(client.0) {
            self.relay.proxy_client_leave(now, &conn.channel, &job);
        }
    }
}

/// The job a `SERVE` request's (first) `HttpRelay-Proxy-JobId` names. An
/// empty value names none, like an absent field. A value that is not 8
/// characters cannot name a job; it still counts as an attempt, so it maps to
/// an id no job has.
fn job_id(head: &[u8]) -> Option<JobId> {
    with_fields(head, |fields| {
        let value = fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case("httprelay-proxy-jobid"))
            .map(|f| trim(f.value))
            .filter(|v| !v.is_empty())?;
        let mut job = [b'!'; 8];
        if value.len() == 8 {
            job.copy_from_slice(value);
        }
        Some(job)
    })
}

/// Calls `f` with the header fields of a complete request head (none if it
/// does not parse; a head the relay accepted always does).
fn with_fields<R>(head: &[u8], f: impl FnOnce(&[httparse::Header]) -> R) -> R {
    let mut fields = [httparse::EMPTY_HEADER; crate::http::MAX_HEADER_FIELDS];
    let mut req = httparse::Request::new(&mut fields);
    let complete = matches!(req.parse(head), Ok(httparse::Status::Complete(_)));
    f(if complete { req.headers } else { &[] })
}

/// Calls `f` for every header field of a complete request head.
fn for_each_field(head: &[u8], mut f: impl FnMut(&str, &[u8])) {
    with_fields(head, |fields| {
        for field in fields {
            f(field.name, trim(field.value));
        }
    });
}

/// What a `SERVE` response carrying a job has before its framing: the
/// relay's common fields (every one exposed), then the job.
pub(super) fn job_head_fields(
    w: &mut HeadWriter,
    client: &Conn,
    server: &Conn,
    date: &[u8],
    job: &JobId,
) {
    reply::common(w, date, &server.req.origin, Expose::All);
    job_fields(w, client, job);
}

/// What a client's response carrying a result has before its framing: the
/// relay's common fields except those the result replaces, then the
/// result's own.
pub(super) fn result_head_fields(w: &mut HeadWriter, server: &Conn, client: &Conn, date: &[u8]) {
    let replaced = result_replaces(&server.head_copy);
    reply::common_except(w, date, &client.req.origin, Expose::All, replaced);
    // The relay reflects the client's Origin: caches must keep responses for
    // different origins apart whatever Vary the result brings.
    let vary_origin = !client.req.origin.is_empty() && !replaced.has(Replaced::ALLOW_ORIGIN);
    result_fields(w, server, vary_origin);
}

/// The job description a `SERVE` response carries: the client's fields, then
/// the `HttpRelay-Proxy-*` fields.
pub(super) fn job_fields(w: &mut HeadWriter, client: &Conn, job: &JobId) {
    for_each_field(&client.head_copy, |name, value| {
        if forwardable(name) {
            w.header(name, value);
        }
    });
    let req = &client.req;
    // The path as sent: `/proxy/{serverId}` then the part the server sees.
    let raw = req.raw_path.strip_prefix(b"/proxy/").unwrap_or_default();
    let (raw_server_id, rest) = match raw.iter().position(|&b| b == b'/') {
        Some(at) => raw.split_at(at),
        None => (raw, &b""[..]),
    };
    let path: &[u8] = if rest.is_empty() { b"/" } else { rest };
    let forwarded = |value: &[u8]| client.trusted && !value.is_empty();
    let scheme: &[u8] = if forwarded(&req.forwarded_proto) {
        &req.forwarded_proto
    } else {
        b"http"
    };
    let host_field: &[u8] = if forwarded(&req.forwarded_host) {
        &req.forwarded_host
    } else {
        &req.host
    };
    let (host, host_port) = split_host_port(host_field);
    let default_port: &[u8] = if scheme.eq_ignore_ascii_case(b"https") {
        b"443"
    } else {
        b"80"
    };
    let port: &[u8] = if forwarded(&req.forwarded_port) {
        &req.forwarded_port
    } else {
        host_port.unwrap_or(default_port)
    };
    w.header("HttpRelay-Proxy-ServerId", raw_server_id)
        .header("HttpRelay-Proxy-JobId", job);
    let (colon, url_port): (&[u8], &[u8]) = if port == default_port {
        (b"", b"")
    } else {
        (b":", port)
    };
    let question: &[u8] = if req.query.is_empty() { b"" } else { b"?" };
    w.header_parts(
        "HttpRelay-Proxy-Url",
        &[
            scheme,
            b"://",
            host,
            colon,
            url_port,
            &req.raw_path,
            question,
            &req.query,
        ],
    );
    w.header("HttpRelay-Proxy-Method", &req.method)
        .header("HttpRelay-Proxy-Scheme", scheme)
        .header("HttpRelay-Proxy-Host", host)
        .header("HttpRelay-Proxy-Port", port)
        .header("HttpRelay-Proxy-Path", path)
        .header("HttpRelay-Proxy-Query", &req.query);
}

/// Whether a client's field goes into the job description. Not: the fields of
/// the client's own hop, and fields the relay sets on the `SERVE` response
/// itself, which a client could otherwise duplicate to confuse the page (two
/// `Access-Control-Allow-Origin` values make the browser refuse the response;
/// a second `HttpRelay-Proxy-JobId` would name another job).
fn forwardable(name: &str) -> bool {
    let lower_starts = |prefix: &str| {
        name.len() >= prefix.len()
            && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    };
    !(HOP_FIELDS.iter().any(|hop| name.eq_ignore_ascii_case(hop))
        || lower_starts("access-control-")
        || lower_starts("httprelay-")
        || ["vary", "date", "set-cookie"]
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f)))
}

/// `host[:port]` (or `[v6]:port`) into host and port.
fn split_host_port(value: &[u8]) -> (&[u8], Option<&[u8]>) {
    let port_at = value.iter().rposition(|&b| b == b':');
    let closing = value.iter().rposition(|&b| b == b']');
    match port_at {
        Some(at) if closing.is_none_or(|c| c < at) => (&value[..at], Some(&value[at + 1..])),
        _ => (value, None),
    }
}

/// The client's status: `HttpRelay-Proxy-Status` when it is a usable final
/// status, else 200. (1xx cannot end a response, so they count as invalid.)
pub(super) fn result_status(head: &[u8]) -> Status {
    let mut status = Status(200);
    for_each_field(head, |name, value| {
        if name.eq_ignore_ascii_case("httprelay-proxy-status") {
            let parsed = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u16>().ok());
            if let Some(code) = parsed.filter(|c| (200..=999).contains(c)) {
                status = Status(code);
            }
        }
    });
    status
}

/// The relay's own fields that the client's response takes from the `SERVE`
/// request bringing the result instead (see [`result_fields`]).
pub(super) fn result_replaces(head: &[u8]) -> Replaced {
    with_fields(head, |fields| {
        let mut replaced = Replaced::NONE;
        for field in fields.iter().filter(|f| is_listed(fields, f.name)) {
            if let Listed::Replacing(flag) = listed_as(field.name) {
                replaced.insert(flag);
            }
        }
        replaced
    })
}

/// The client's response fields from the `SERVE` request that brings the
/// result: `Content-Type` and each field named in `HttpRelay-Proxy-Headers`,
/// in the order the request carries them, each name once however often it is
/// named. A field the relay writes itself ([`Replaced`]) goes on one line (the
/// request's lines joined, RFC 9110 §5.3), in place of the relay's own.
/// `vary_origin`: a `Vary` the result replaces must still name `Origin` (the
/// relay reflects the client's Origin in `Access-Control-Allow-Origin`).
pub(super) fn result_fields(w: &mut HeadWriter, server: &Conn, vary_origin: bool) {
    if !server.req.content_type.is_empty() {
        w.header("Content-Type", &server.req.content_type);
    }
    with_fields(&server.head_copy, |fields| {
        for (at, field) in fields.iter().enumerate() {
            if !is_listed(fields, field.name) {
                continue;
            }
            match listed_as(field.name) {
                Listed::Ignored => {}
                Listed::Passed => {
                    w.header(field.name, trim(field.value));
                }
                Listed::Replacing(_) => {
                    // One line, at the first of the name's lines.
                    let same = |f: &httparse::Header| f.name.eq_ignore_ascii_case(field.name);
                    if fields[..at].iter().any(same) {
                        continue;
                    }
                    let values = fields[at..]
                        .iter()
                        .filter(|f| same(f))
                        .map(|f| trim(f.value))
                        .filter(|v| !v.is_empty());
                    let mut parts: Vec<&[u8]> = Vec::new();
                    for value in values {
                        if !parts.is_empty() {
                            parts.push(b", ");
                        }
                        parts.push(value);
                    }
                    let names_origin = parts.iter().any(|part| {
                        part.split(|&b| b == b',')
                            .map(trim)
                            .any(|t| t.eq_ignore_ascii_case(b"origin") || t == b"*")
                    });
                    if vary_origin && Replaced::of(field.name.as_bytes()) == Replaced::VARY {
                        if parts.is_empty() {
                            parts.push(b"Origin");
                        } else if !names_origin {
                            parts.push(b", Origin");
                        }
                    }
                    w.header_parts(field.name, &parts);
                }
            }
        }
    });
}

/// Whether a result's `HttpRelay-Proxy-Headers` (any of its lines) names `name`.
fn is_listed(fields: &[httparse::Header], name: &str) -> bool {
    fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("httprelay-proxy-headers"))
        .flat_map(|f| f.value.split(|&b| b == b','))
        .any(|listed| trim(listed).eq_ignore_ascii_case(name.as_bytes()))
}

/// What naming a field in `HttpRelay-Proxy-Headers` does to the client's response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listed {
    /// Nothing: the fields of this hop and its framing stay the relay's,
    /// `Content-Type` is taken anyway, and `HttpRelay-Version` names this relay.
    Ignored,
    /// The result's value replaces the relay's own.
    Replacing(Replaced),
    /// Each of the result's lines is passed on.
    Passed,
}

fn listed_as(name: &str) -> Listed {
    let is = |field: &str| name.eq_ignore_ascii_case(field);
    if HOP_FIELDS.iter().any(|hop| is(hop)) || is("content-type") || is("httprelay-version") {
        return Listed::Ignored;
    }
    match Replaced::of(name.as_bytes()) {
        Replaced::NONE => Listed::Passed,
        flag => Listed::Replacing(flag),
    }
}

#[cfg(test)]
mod tests {
    use crate::server::testing::{body_of, get, status_of, Shell};

    fn field<'a>(response: &'a str, name: &str) -> &'a str {
        let at = response.find(&format!("\r\n{name}: ")).expect(name) + name.len() + 4;
        &response[at..at + response[at..].find('\r').unwrap()]
    }

    #[test]
    fn a_job_goes_to_a_serve_and_its_result_back_to_the_client() {
        let mut shell = Shell::new(&[]);
        let (mut server, mut client) = (shell.connect(), shell.connect());
        server.send(&mut shell, b"SERVE /proxy/p HTTP/1.1\r\nHost: r\r\n\r\n");
        client.send(&mut shell, &get("/proxy/p/some/path?q=1"));
        let job = server.text();
        assert_eq!(status_of(&job), 200);
        assert_eq!(
            field(&job, "HttpRelay-Proxy-Url"),
            "http://relay/proxy/p/some/path?q=1"
        );
        let id = field(&job, "HttpRelay-Proxy-JobId").to_owned();
        let result = format!(
            "SERVE /proxy/p HTTP/1.1\r\nHost: r\r\nHttpRelay-Proxy-JobId: {id}\r\n\
             HttpRelay-Proxy-Status: 201\r\nContent-Length: 6\r\n\r\nresult"
        );
        server.send(&mut shell, result.as_bytes());
        let answer = client.text();
        assert_eq!((status_of(&answer), body_of(&answer)), (201, "result"));
        assert_eq!(server.take(), b"", "the SERVE waits for the next job");
    }

    #[test]
    fn a_serve_without_a_job_id_drops_its_body_and_waits_for_a_job() {
        let mut shell = Shell::new(&[]);
        let (mut server, mut client) = (shell.connect(), shell.connect());
        server.send(
            &mut shell,
            b"SERVE /proxy/p HTTP/1.1\r\nHost: r\r\nHttpRelay-Proxy-JobId: \r\nContent-Length: 5\r\n\r\nstale",
        );
        assert_eq!(server.take(), b"");
        client.send(&mut shell, &get("/proxy/p/x"));
        let job = server.text();
        assert_eq!(status_of(&job), 200);
        assert_eq!(field(&job, "HttpRelay-Proxy-Path"), "/x");
        assert_eq!(body_of(&job), "", "the dropped body is not the job's");
    }
}

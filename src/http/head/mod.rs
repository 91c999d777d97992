//! Request heads: httparse does the tokenizing; this module decides framing,
//! persistence and the few fields the relay needs, and refuses ambiguous shapes.

/// How the request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Neither `Content-Length` nor `Transfer-Encoding`: no body.
    Empty,
    Length(u64),
    Chunked,
}

impl Framing {
    pub fn has_body(self) -> bool {
        !matches!(self, Framing::Empty | Framing::Length(0))
    }
}

/// The request-target form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `/path?query` (or absolute-form reduced to it).
    Path,
    /// `*` (only meaningful for `OPTIONS`).
    Asterisk,
}

/// A parsed request head. Owned and reused by its connection: parsing clears and
/// refills the buffers, so a warm connection parses without allocating.
#[derive(Default, Debug)]
pub struct Request {
    /// Method, upper-cased (methods are compared case-insensitively).
    pub method: Vec<u8>,
    /// Percent-decoded path.
    pub path: Vec<u8>,
    /// Raw query, without the `?`.
    pub query: Vec<u8>,
    pub target: Option<Target>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
    pub framing: Option<Framing>,
    /// The client sent `Expect: 100-continue`.
    pub expect_continue: bool,
    /// `Origin` value, empty when absent.
    pub origin: Vec<u8>,
    /// `Content-Type` value, empty when absent.
    pub content_type: Vec<u8>,
    /// `HttpRelay-WSecret` value, empty when absent.
    pub wsecret_header: Vec<u8>,
    /// The path as sent (not decoded), for values echoed into headers.
    pub raw_path: Vec<u8>,
    /// `Host` value, empty when absent.
    pub host: Vec<u8>,
    /// The `SeqId` cookie: `Some(0)` when present but not a number.
    pub cookie_seqid: Option<u64>,
    /// `Accept` names `text/event-stream`: the client asks for a live stream.
    pub accepts_event_stream: bool,
    /// `Last-Event-ID`, when it is a number (an `EventSource` reconnecting
    /// names the last event it received).
    pub last_event_id: Option<u64>,
    /// Forwarding fields, honoured only from a trusted proxy (empty when absent).
    pub x_real_ip: Vec<u8>,
    pub x_real_port: Vec<u8>,
    pub forwarded_proto: Vec<u8>,
    pub forwarded_host: Vec<u8>,
    pub forwarded_port: Vec<u8>,
}

impl Request {
    /// Gives back field capacity a larger earlier request left behind, so that
    /// a waiting or idle connection holds what its current request needs.
    pub fn trim_capacity(&mut self) {
        for field in [
            &mut self.method,
            &mut self.path,
            &mut self.query,
            &mut self.origin,
            &mut self.content_type,
            &mut self.wsecret_header,
            &mut self.raw_path,
            &mut self.host,
            &mut self.x_real_ip,
            &mut self.x_real_port,
            &mut self.forwarded_proto,
            &mut self.forwarded_host,
            &mut self.forwarded_port,
        ] {
            trim_capacity(field);
        }
    }

    pub fn framing(&self) -> Framing {
        self.framing.unwrap_or(Framing::Empty)
    }

    pub fn method_is(&self, name: &str) -> bool {
        self.method == name.as_bytes()
    }

    /// Forgets what the previous request on this connection said in the
    /// fields this one may leave out.
    fn clear_fields(&mut self) {
        self.expect_continue = false;
        self.cookie_seqid = None;
        self.accepts_event_stream = false;
        self.last_event_id = None;
        for field in [
            &mut self.origin,
            &mut self.content_type,
            &mut self.wsecret_header,
            &mut self.host,
            &mut self.x_real_ip,
            &mut self.x_real_port,
            &mut self.forwarded_proto,
            &mut self.forwarded_host,
            &mut self.forwarded_port,
        ] {
            field.clear();
        }
    }
}

/// Why a request head was refused. Each maps to one status and one line of text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x syntax (httparse's reason).
    Syntax(&'static str),
    /// The head exceeds the size limit.
    TooLarge,
    /// More header fields than the limit.
    TooManyFields,
    BadTarget,
    BadPercentEncoding,
    MissingHost,
    DuplicateHost,
    BadContentLength,
    ConflictingContentLength,
    /// Both `Content-Length` and `Transfer-Encoding` (a request-smuggling shape).
    LengthAndTransferEncoding,
    /// `Transfer-Encoding` in an HTTP/1.0 request.
    TransferEncodingInHttp10,
    UnsupportedTransferEncoding,
    UnsupportedExpectation,
}

impl HeadError {
    pub fn status(self) -> u16 {
        match self {
            HeadError::TooLarge | HeadError::TooManyFields => 431,
            HeadError::UnsupportedTransferEncoding => 501,
            HeadError::UnsupportedExpectation => 417,
            _ => 400,
        }
    }
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::Syntax(why) => write!(f, "malformed request: {why}"),
            HeadError::TooLarge => f.write_str("request head too large"),
            HeadError::TooManyFields => f.write_str("too many header fields"),
            HeadError::BadTarget => f.write_str("malformed request target"),
            HeadError::BadPercentEncoding => f.write_str("malformed percent-encoding in path"),
            HeadError::MissingHost => f.write_str("missing Host header"),
            HeadError::DuplicateHost => f.write_str("more than one Host header"),
            HeadError::BadContentLength => f.write_str("malformed Content-Length"),
            HeadError::ConflictingContentLength => {
                f.write_str("conflicting Content-Length headers")
            }
            HeadError::LengthAndTransferEncoding => {
                f.write_str("both Content-Length and Transfer-Encoding")
            }
            HeadError::TransferEncodingInHttp10 => f.write_str("Transfer-Encoding in HTTP/1.0"),
            HeadError::UnsupportedTransferEncoding => {
                f.write_str("unsupported Transfer-Encoding (only chunked)")
            }
            HeadError::UnsupportedExpectation => f.write_str("unsupported Expect value"),
        }
    }
}

/// Most header fields a request may carry.
pub const MAX_HEADER_FIELDS: usize = 100;

/// Shrinks `v` when its capacity is well beyond its length. Requests of one
/// size never trigger it, so the warm path does not reallocate.
pub fn trim_capacity(v: &mut Vec<u8>) {
    if v.capacity() > 2 * v.len() + 64 {
        v.shrink_to(v.len());
    }
}

/// Parses a request head from the start of `buf` into `req`.
///
/// `Ok(None)`: the head is incomplete (and still within `max_head` bytes).
/// `Ok(Some(n))`: the head is the first `n` bytes of `buf`.
pub fn parse_request(
    buf: &[u8],
    max_head: usize,
    req: &mut Request,
) -> Result<Option<usize>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADER_FIELDS];
    let mut parsed = httparse::Request::new(&mut fields);
    let Some(head_len) = tokenize(&mut parsed, buf, max_head)? else {
        return Ok(None);
    };
    // A complete parse always fills method, path and version.
    let method = parsed.method.unwrap_or_default();
    let target = parsed.path.unwrap_or_default();
    req.minor_version = parsed.version.unwrap_or(1);

    req.method.clear();
    req.method
        .extend(method.bytes().map(|b| b.to_ascii_uppercase()));
    parse_target(target.as_bytes(), req)?;

    req.clear_fields();
    let mut control = ControlFields::default();
    for field in parsed.headers.iter() {
        read_field(field.name, trim(field.value), req, &mut control)?;
    }
    control.check_host(req.minor_version)?;
    req.framing = Some(control.framing(req.minor_version)?);
    req.keep_alive = control.keep_alive(req.minor_version);
    Ok(Some(head_len))
}

/// Runs httparse over `buf`, holding it to `max_head` bytes. `Ok(Some(n))`:
/// the head is complete, `n` bytes long; `Ok(None)`: more is needed.
fn tokenize<'b>(
    parsed: &mut httparse::Request<'_, 'b>,
    buf: &'b [u8],
    max_head: usize,
) -> Result<Option<usize>, HeadError> {
    match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > max_head => Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(n)) => Ok(Some(n)),
        Ok(httparse::Status::Partial) if buf.len() >= max_head => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyFields),
        Err(e) => Err(HeadError::Syntax(syntax_reason(e))),
    }
}

/// The fields that decide where the request ends and whether the connection
/// persists. Any of them may repeat, in any order, so they are gathered over
/// the whole head before deciding.
#[derive(Default)]
struct ControlFields {
    hosts: u32,
    content_length: Option<u64>,
    transfer_encoding: bool,
    /// `Connection` tokens seen.
    close: bool,
    keep_alive: bool,
}

impl ControlFields {
    /// A `Content-Length`: a repeat must say the same.
    fn content_length(&mut self, value: &[u8]) -> Result<(), HeadError> {
        let n = parse_content_length(value)?;
        if self.content_length.is_some_and(|seen| seen != n) {
            return Err(HeadError::ConflictingContentLength);
        }
        self.content_length = Some(n);
        Ok(())
    }

    /// A `Transfer-Encoding`: only `chunked`, and only once.
    fn transfer_encoding(&mut self, value: &[u8]) -> Result<(), HeadError> {
        if self.transfer_encoding || !value.eq_ignore_ascii_case(b"chunked") {
            return Err(HeadError::UnsupportedTransferEncoding);
        }
        self.transfer_encoding = true;
        Ok(())
    }

    /// A `Connection`: a comma-separated list of tokens.
    fn connection(&mut self, value: &[u8]) {
        for token in value.split(|&b| b == b',').map(trim) {
            self.close |= token.eq_ignore_ascii_case(b"close");
            self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }

    /// One `Host` at most, and one at least from HTTP/1.1 on.
    fn check_host(&self, minor_version: u8) -> Result<(), HeadError> {
        if self.hosts > 1 {
            return Err(HeadError::DuplicateHost);
        }
        if self.hosts == 0 && minor_version >= 1 {
            return Err(HeadError::MissingHost);
        }
        Ok(())
    }

    /// How the body is delimited. Both a length and chunking would let the
    /// relay and another hop disagree on where the request ends (smuggling).
    fn framing(&self, minor_version: u8) -> Result<Framing, HeadError> {
        match (self.content_length, self.transfer_encoding) {
            (Some(_), true) => Err(HeadError::LengthAndTransferEncoding),
            (None, true) if minor_version == 0 => Err(HeadError::TransferEncodingInHttp10),
            (None, true) => Ok(Framing::Chunked),
            (Some(n), false) => Ok(Framing::Length(n)),
            (None, false) => Ok(Framing::Empty),
        }
    }

    /// Whether the connection may carry another request: HTTP/1.1 persists
    /// unless told `close`, HTTP/1.0 only when told `keep-alive`.
    fn keep_alive(&self, minor_version: u8) -> bool {
        if minor_version >= 1 {
            !self.close
        } else {
            self.keep_alive && !self.close
        }
    }
}

/// Takes in one header field (`value` trimmed): those deciding framing and
/// persistence into `control`, those the relay uses into `req`.
#[inline]
fn read_field(
    name: &str,
    value: &[u8],
    req: &mut Request,
    control: &mut ControlFields,
) -> Result<(), HeadError> {
    if name.eq_ignore_ascii_case("host") {
        control.hosts += 1;
        set(&mut req.host, value);
    } else if name.eq_ignore_ascii_case("content-length") {
        control.content_length(value)?;
    } else if name.eq_ignore_ascii_case("transfer-encoding") {
        control.transfer_encoding(value)?;
    } else if name.eq_ignore_ascii_case("connection") {
        control.connection(value);
    } else if name.eq_ignore_ascii_case("expect") {
        if !value.eq_ignore_ascii_case(b"100-continue") {
            return Err(HeadError::UnsupportedExpectation);
        }
        // HTTP/1.0 clients cannot understand an interim response.
        req.expect_continue = req.minor_version >= 1;
    } else {
        read_relay_field(name, value, req);
    }
    Ok(())
}

/// Takes in a field the relay's routes use, if `name` is one; the rest are
/// ignored.
#[inline]
fn read_relay_field(name: &str, value: &[u8], req: &mut Request) {
    if name.eq_ignore_ascii_case("origin") {
        set(&mut req.origin, value);
    } else if name.eq_ignore_ascii_case("content-type") {
        set(&mut req.content_type, value);
    } else if name.eq_ignore_ascii_case("httprelay-wsecret") {
        set(&mut req.wsecret_header, value);
    } else if name.eq_ignore_ascii_case("cookie") {
        req.cookie_seqid = req.cookie_seqid.or_else(|| cookie_seqid(value));
    } else if name.eq_ignore_ascii_case("accept") {
        req.accepts_event_stream |= names_event_stream(value);
    } else if name.eq_ignore_ascii_case("last-event-id") {
        req.last_event_id = event_id(value);
    } else if name.eq_ignore_ascii_case("x-real-ip") {
        set(&mut req.x_real_ip, value);
    } else if name.eq_ignore_ascii_case("x-real-port") {
        set(&mut req.x_real_port, value);
    } else if name.eq_ignore_ascii_case("x-forwarded-proto") {
        set(&mut req.forwarded_proto, value);
    } else if name.eq_ignore_ascii_case("x-forwarded-host") {
        set(&mut req.forwarded_host, value);
    } else if name.eq_ignore_ascii_case("x-forwarded-port") {
        set(&mut req.forwarded_port, value);
    }
}

fn syntax_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine | httparse::Error::Status => "invalid line ending",
        httparse::Error::Token => "invalid method or target",
        httparse::Error::Version => "unsupported HTTP version",
        httparse::Error::TooManyHeaders => "too many header fields",
    }
}

/// The `SeqId` cookie among `name=value; name=value` pairs (names are
/// case-sensitive). A value that is not a number counts as 0, as in the original.
fn cookie_seqid(header: &[u8]) -> Option<u64> {
    header.split(|&b| b == b';').map(trim).find_map(|pair| {
        let value = pair.strip_prefix(b"SeqId=")?;
        Some(parse_seqid(value))
    })
}

/// Whether an `Accept` value lists `text/event-stream` (parameters and
/// weights aside; a weight of 0 is read as a wish all the same).
fn names_event_stream(value: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|range| {
        let media = range.split(|&b| b == b';').next().unwrap_or_default();
        trim(media).eq_ignore_ascii_case(b"text/event-stream")
    })
}

/// A `Last-Event-ID` the relay wrote: decimal digits only. Anything else
/// (an id from another server, garbage) counts as absent.
fn event_id(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A sequence number as clients send it; anything unparsable is 0.
pub fn parse_seqid(value: &[u8]) -> u64 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn parse_target(target: &[u8], req: &mut Request) -> Result<(), HeadError> {
    req.path.clear();
    req.query.clear();
    req.raw_path.clear();
    if target == b"*" {
        req.target = Some(Target::Asterisk);
        return Ok(());
    }
    let origin_form = if target.starts_with(b"/") {
        target
    } else {
        // absolute-form (RFC 9112 §3.2.2): a server must accept it; keep the path.
        let rest = strip_prefix_ignore_case(target, b"http://")
            .or_else(|| strip_prefix_ignore_case(target, b"https://"))
            .ok_or(HeadError::BadTarget)?;
        match rest.iter().position(|&b| b == b'/' || b == b'?') {
            Some(at) => &rest[at..],
            None => b"/",
        }
    };
    let (path, query) = match origin_form.iter().position(|&b| b == b'?') {
        Some(at) => (&origin_form[..at], &origin_form[at + 1..]),
        None => (origin_form, &b""[..]),
    };
    if path.is_empty() {
        req.path.push(b'/');
        req.raw_path.push(b'/');
    }
    req.raw_path.extend_from_slice(path);
    percent_decode(path, &mut req.path).ok_or(HeadError::BadPercentEncoding)?;
    req.query.extend_from_slice(query);
    req.target = Some(Target::Path);
    Ok(())
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// Appends the percent-decoding of `s` to `out`; `None` on a malformed escape.
pub(crate) fn percent_decode(s: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hi = hex_value(*s.get(i + 1)?)?;
            let lo = hex_value(*s.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(())
}

pub(crate) fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn parse_content_length(value: &[u8]) -> Result<u64, HeadError> {
    // Digits only: no sign, no list ("5, 5"), at most 19 digits so it fits in u64.
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::BadContentLength);
    }
    Ok(value.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// `s` without leading and trailing spaces and tabs (optional whitespace).
pub(crate) fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &s[start..end]
}

fn set(field: &mut Vec<u8>, value: &[u8]) {
    field.clear();
    field.extend_from_slice(value);
}

#[cfg(test)]
mod tests;

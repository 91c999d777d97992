//! The header blocks relay responses are made of: the common CORS and version
//! fields, a counterpart's metadata, and persistence.

use std::io::Write as _;
use std::net::IpAddr;

use crate::buf::{Buf, BufPool, Commit};
use crate::http::{HeadWriter, Status};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

const EXPOSE_HEADERS: &[u8] = b"Content-Length, X-Real-IP, X-Real-Port, HttpRelay-Version, \
HttpRelay-Time, HttpRelay-Your-Time, HttpRelay-Method, HttpRelay-Query";
const EXPOSE_MCAST_HEADERS: &[u8] = b"HttpRelay-SeqId, Content-Length, X-Real-IP, X-Real-Port, \
HttpRelay-Version, HttpRelay-Time, HttpRelay-Your-Time, HttpRelay-Method, HttpRelay-Query";

/// Which response headers a page may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expose {
    /// link, sync and everything else: the metadata headers.
    Metadata,
    /// mcast: `HttpRelay-SeqId` first, then the metadata headers.
    Mcast,
    /// proxy: every header (`*`).
    All,
}

pub const ALLOW_METHODS: &[u8] = b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, SERVE";

/// Request headers a browser may send cross-origin: `Content-Type` (as the
/// original) plus the relay's own, so pages can send secrets and proxy results.
pub const ALLOW_HEADERS: &[u8] = b"Content-Type, HttpRelay-WSecret, HttpRelay-Proxy-JobId, \
HttpRelay-Proxy-Headers, HttpRelay-Proxy-Status";

/// What one side of a pairing learns about the other.
pub struct Meta<'a> {
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
    pub arrived_unix_ms: u64,
    pub method: &'a [u8],
    /// Filtered query; empty means the header is left out.
    pub query: &'a [u8],
}

/// Fields of [`common`] that a response carries with another party's value
/// instead (a proxy result names them in `HttpRelay-Proxy-Headers`):
/// [`common_except`] leaves them out, so that each appears once.
/// `HttpRelay-Version` is not among them: it names the relay that answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replaced(u8);

impl Replaced {
    pub const NONE: Replaced = Replaced(0);
    pub const DATE: Replaced = Replaced(1);
    pub const ALLOW_ORIGIN: Replaced = Replaced(1 << 1);
    pub const VARY: Replaced = Replaced(1 << 2);
    pub const EXPOSE_HEADERS: Replaced = Replaced(1 << 3);
    pub const ALLOW_CREDENTIALS: Replaced = Replaced(1 << 4);

    const NAMES: [(&'static str, Replaced); 5] = [
        ("date", Replaced::DATE),
        ("access-control-allow-origin", Replaced::ALLOW_ORIGIN),
        ("vary", Replaced::VARY),
        ("access-control-expose-headers", Replaced::EXPOSE_HEADERS),
        (
            "access-control-allow-credentials",
            Replaced::ALLOW_CREDENTIALS,
        ),
    ];

    /// The replaceable field called `name` (any case); `NONE` for any other.
    pub fn of(name: &[u8]) -> Replaced {
        Replaced::NAMES
            .iter()
            .find(|(field, _)| name.eq_ignore_ascii_case(field.as_bytes()))
            .map_or(Replaced::NONE, |&(_, flag)| flag)
    }

    /// Whether `field` is among them.
    pub fn has(self, field: Replaced) -> bool {
        self.0 & field.0 != 0
    }

    pub fn insert(&mut self, field: Replaced) {
        self.0 |= field.0;
    }
}

/// A relay response head being written into a connection's output buffer
/// (see [`begin`]); finishing it commits it, or nothing when it did not fit.
pub struct Head<'b> {
    w: HeadWriter<'b>,
    commit: Commit<'b>,
}

impl<'b> std::ops::Deref for Head<'b> {
    type Target = HeadWriter<'b>;
    fn deref(&self) -> &HeadWriter<'b> {
        &self.w
    }
}

impl<'b> std::ops::DerefMut for Head<'b> {
    fn deref_mut(&mut self) -> &mut HeadWriter<'b> {
        &mut self.w
    }
}

impl Head<'_> {
    /// Ends the head; whether it fit (and went into the output).
    pub fn finish(self) -> bool {
        self.finish_with_body(b"")
    }

    /// Ends the head and appends `body`; whether both fit.
    pub fn finish_with_body(self, body: &[u8]) -> bool {
        match self.w.finish_with_body(body) {
            Some(n) => {
                self.commit.commit(n);
                true
            }
            None => false,
        }
    }
}

/// Begins the response to a connection's request: `status` is recorded in
/// `recorded` (for the access log), the connection's `output` buffer is taken
/// from `pool` when it holds none, and the status line goes in with the
/// fields every relay response carries ([`common`]).
pub fn begin<'b>(
    output: &'b mut Option<Buf>,
    pool: &mut BufPool,
    recorded: &mut u16,
    status: Status,
    date: &[u8],
    origin: &[u8],
    expose: Expose,
) -> Head<'b> {
    *recorded = status.0;
    let (spare, commit) = output.get_or_insert_with(|| pool.take()).split_spare();
    let mut w = HeadWriter::new(spare, status);
    common(&mut w, date, origin, expose);
    Head { w, commit }
}

/// Begins a response head in `spare`: its status line, then [`common`].
pub fn head<'b>(
    spare: &'b mut [u8],
    status: Status,
    date: &[u8],
    origin: &[u8],
    expose: Expose,
) -> HeadWriter<'b> {
    let mut w = HeadWriter::new(spare, status);
    common(&mut w, date, origin, expose);
    w
}

/// `Date`, `HttpRelay-Version` and the CORS fields every response carries.
pub fn common(w: &mut HeadWriter, date: &[u8], origin: &[u8], expose: Expose) {
    common_except(w, date, origin, expose, Replaced::NONE);
}

/// [`common`] without the fields in `replaced`, which the caller writes itself.
pub fn common_except(
    w: &mut HeadWriter,
    date: &[u8],
    origin: &[u8],
    expose: Expose,
    replaced: Replaced,
) {
    let keep = |field: Replaced| !replaced.has(field);
    if keep(Replaced::DATE) {
        w.header("Date", date);
    }
    w.header("HttpRelay-Version", VERSION.as_bytes());
    let allow_origin: &[u8] = if origin.is_empty() { b"*" } else { origin };
    if keep(Replaced::ALLOW_ORIGIN) {
        w.header("Access-Control-Allow-Origin", allow_origin);
    }
    if !origin.is_empty() && keep(Replaced::VARY) {
        w.header("Vary", b"Origin");
    }
    let exposed = match expose {
        Expose::Metadata => EXPOSE_HEADERS,
        Expose::Mcast => EXPOSE_MCAST_HEADERS,
        Expose::All => b"*",
    };
    if keep(Replaced::EXPOSE_HEADERS) {
        w.header("Access-Control-Expose-Headers", exposed);
    }
    if expose == Expose::Mcast && keep(Replaced::ALLOW_CREDENTIALS) {
        // Pages follow mcast with `credentials: 'include'` (the SeqId cookie);
        // every mcast response, errors included, must allow that to be readable.
        w.header("Access-Control-Allow-Credentials", b"true");
    }
}

/// The counterpart's metadata (`X-Real-IP`, times, method, query).
pub fn metadata(w: &mut HeadWriter, other: &Meta, your_time_unix_ms: u64) {
    if let Some(ip) = other.ip {
        let mut text = [0u8; 64];
        let mut cursor = &mut text[..];
        // An IPv4 client of a dual-stack socket shows as its IPv4 address.
        let _ = write!(cursor, "{}", ip.to_canonical());
        let len = 64 - cursor.len();
        w.header("X-Real-IP", &text[..len]);
    }
    if let Some(port) = other.port {
        w.header_number("X-Real-Port", u64::from(port));
    }
    w.header_number("HttpRelay-Time", other.arrived_unix_ms)
        .header_number("HttpRelay-Your-Time", your_time_unix_ms)
        .header("HttpRelay-Method", other.method);
    if !other.query.is_empty() {
        w.header("HttpRelay-Query", other.query);
    }
}

/// `Connection` when it differs from the version's default.
pub fn persistence(w: &mut HeadWriter, keep_alive: bool, minor_version: u8) {
    match (keep_alive, minor_version) {
        (false, _) => {
            w.header("Connection", b"close");
        }
        (true, 0) => {
            w.header("Connection", b"keep-alive");
        }
        (true, _) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Status;

    fn head(origin: &[u8], expose: Expose, replaced: Replaced) -> String {
        let mut out = [0u8; 1024];
        let mut w = HeadWriter::new(&mut out, Status(200));
        common_except(&mut w, b"DATE", origin, expose, replaced);
        let n = w.finish().expect("fits");
        String::from_utf8(out[..n].to_vec()).expect("ascii")
    }

    #[test]
    fn replaced_fields_are_left_out_and_the_version_never() {
        let mut all = Replaced::NONE;
        for name in [
            "Date",
            "ACCESS-CONTROL-ALLOW-ORIGIN",
            "vary",
            "Access-Control-Expose-Headers",
            "Access-Control-Allow-Credentials",
        ] {
            let field = Replaced::of(name.as_bytes());
            assert_ne!(field, Replaced::NONE, "{name}");
            all.insert(field);
        }
        assert_eq!(Replaced::of(b"HttpRelay-Version"), Replaced::NONE);
        assert_eq!(Replaced::of(b"Content-Length"), Replaced::NONE);
        assert_eq!(
            head(b"https://a.example", Expose::Mcast, all),
            format!("HTTP/1.1 200 OK\r\nHttpRelay-Version: {VERSION}\r\n\r\n")
        );
        assert_eq!(
            head(b"https://a.example", Expose::All, Replaced::VARY),
            format!(
                "HTTP/1.1 200 OK\r\nDate: DATE\r\nHttpRelay-Version: {VERSION}\r\n\
                 Access-Control-Allow-Origin: https://a.example\r\n\
                 Access-Control-Expose-Headers: *\r\n\r\n"
            )
        );
        assert_eq!(
            head(b"", Expose::All, Replaced::NONE),
            format!(
                "HTTP/1.1 200 OK\r\nDate: DATE\r\nHttpRelay-Version: {VERSION}\r\n\
                 Access-Control-Allow-Origin: *\r\nAccess-Control-Expose-Headers: *\r\n\r\n"
            )
        );
    }
}

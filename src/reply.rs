//! The header blocks relay responses are made of: the common CORS and version
//! fields, a counterpart's metadata, and persistence.

use std::io::Write as _;
use std::net::IpAddr;

use crate::http::HeadWriter;

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

/// `Date`, `HttpRelay-Version` and the CORS fields every response carries.
pub fn common(w: &mut HeadWriter, date: &[u8], origin: &[u8], expose: Expose) {
    w.header("Date", date)
        .header("HttpRelay-Version", VERSION.as_bytes());
    if origin.is_empty() {
        w.header("Access-Control-Allow-Origin", b"*");
    } else {
        w.header("Access-Control-Allow-Origin", origin)
            .header("Vary", b"Origin");
    }
    let exposed = match expose {
        Expose::Metadata => EXPOSE_HEADERS,
        Expose::Mcast => EXPOSE_MCAST_HEADERS,
        Expose::All => b"*",
    };
    w.header("Access-Control-Expose-Headers", exposed);
    if expose == Expose::Mcast {
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

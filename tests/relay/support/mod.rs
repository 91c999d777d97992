//! Test support: the relay binary this crate builds ([`Relay`]), and what the
//! suites share on top of the testkit's launcher and blocking HTTP/1.1 client.

mod link;
mod reference;
mod relay;
pub mod tls;
mod tools;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use httprelay_testkit::{
    body_for, chunked, free_port, haproxy_binary, req, req_host, Addr, Body, Conn, End, Haproxy,
    Head, Response, RssSampler,
};
pub use link::{link_exchange, Background};
pub use reference::Comparison;
pub use relay::{binary, bounded_rss_kib, Relay};
pub use tools::{loud, unavailable};

/// How long a request is given to reach the relay and be parked there.
pub const PARK: Duration = Duration::from_millis(150);

/// Milliseconds since the Unix epoch, as the relay's `HttpRelay-*Time` headers use.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// One sample of the relay's `/metrics` (`name` with its labels), scraped now.
pub fn metric(relay: &Relay, name: &str) -> u64 {
    let mut conn = relay.connect();
    let text = conn.exchange(&req("GET", "/metrics", &[], b"")).text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .parse()
        .expect("a number")
}

/// Sends `request` and checks that no response arrives while it is parked.
pub fn send_waiting(conn: &mut Conn, request: &[u8], what: &str) {
    conn.send(request);
    assert!(
        conn.is_silent_for(PARK),
        "{what} must wait, but the relay answered at once"
    );
}

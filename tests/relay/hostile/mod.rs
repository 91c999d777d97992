//! Hostile and malformed input, limits and timeouts. Every test keeps an unrelated
//! link transfer streaming on other connections (`Background`) from before the hostile
//! action until after it, and checks that its bytes arrived intact.

mod body;
mod conn;
mod head;
mod limits;
mod slow;

use std::time::Duration;

use super::support::{send_waiting, Conn, Relay, Response};
use super::{get, post, VERSION};

/// Asserts `r` is an error with `status` and a one-line body starting with the code.
fn assert_error(r: &Response, status: u16, what: &str) {
    assert_eq!(r.status(), status, "{what}: {:?}", r.head);
    let text = String::from_utf8_lossy(r.body()).into_owned();
    let line = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    assert!(
        !line.contains('\n') && !line.contains('\r'),
        "{what}: error body must be one line, got {text:?}"
    );
    assert!(
        line.starts_with(&status.to_string()),
        "{what}: error body must start with {status}, got {text:?}"
    );
}

/// Sends `raw` on a fresh connection and returns the connection and the response.
fn raw_exchange(relay: &Relay, raw: &[u8]) -> (Conn, Response) {
    let mut conn = relay.connect();
    conn.send(raw);
    let r = conn.read_response();
    (conn, r)
}

/// Sends `raw` on a fresh connection: expects `400` with a one-line body, then close.
fn assert_bad_request(relay: &Relay, raw: &[u8], what: &str) {
    let (mut conn, r) = raw_exchange(relay, raw);
    assert_error(&r, 400, what);
    assert!(
        conn.is_closed_by_peer(),
        "{what}: the connection must close after 400"
    );
}

/// A health check on a fresh connection.
fn assert_healthy(relay: &Relay, what: &str) {
    let (_, r) = raw_exchange(relay, &get("/health"));
    assert_eq!(r.status(), 200, "{what}: /health");
    assert_eq!(r.text(), VERSION, "{what}: /health");
}

/// A complete link transfer of `body` on `path`, consumer first.
fn link_transfer(relay: &Relay, path: &str, body: &[u8]) -> Response {
    let mut consumer = relay.connect();
    send_waiting(&mut consumer, &get(path), "a link consumer");
    let mut producer = relay.connect();
    producer.send(&post(path, body));
    let got = consumer.read_response();
    assert_eq!(got.status(), 200, "consumer of {path}: {:?}", got.head);
    assert_eq!(got.body(), body, "consumer of {path}");
    assert_eq!(producer.read_response().status(), 200, "producer of {path}");
    got
}

/// Each bad request on `path` gets `400` and a closed connection, and none of
/// them reaches the link consumer waiting there; afterwards the channel still
/// carries a transfer.
fn refused_before_reaching_a_consumer(relay: &Relay, path: &str, bad: &[(Vec<u8>, String)]) {
    let mut consumer = relay.connect();
    send_waiting(&mut consumer, &get(path), "a link consumer");
    for (raw, what) in bad {
        assert_bad_request(relay, raw, what);
    }
    assert!(
        consumer.is_silent_for(Duration::from_millis(300)),
        "a rejected request reached the consumer waiting on {path}"
    );
    let mut producer = relay.connect();
    producer.send(&post(path, b"legit"));
    assert_eq!(consumer.read_response().body(), b"legit", "{path} after");
    assert_eq!(producer.read_response().status(), 200, "{path} after");
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(31))
        .collect()
}

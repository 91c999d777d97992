//! Listeners and shutdown: a Unix socket listener, and SIGTERM answering the
//! parked waiters before a clean exit.

use std::time::Duration;

use super::support::{req, unix_ms, Addr, Relay};
use super::{get, post, send_parked};

// 15
#[test]
fn unix_socket_listener_relays_a_link() {
    let dir = std::env::temp_dir().join(format!(
        "httprelay-test-{}-{}",
        std::process::id(),
        unix_ms()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("relay.sock");
    // A stale socket file from an earlier run is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("stale socket"));
    assert!(path.exists());

    let relay = Relay::start_unix(&path);
    match relay.addr() {
        Addr::Unix(p) => assert_eq!(p, &path),
        other => panic!("expected a Unix socket address, got {other:?}"),
    }
    let mut consumer = relay.connect();
    send_parked(&mut consumer, &get("/link/unix"));
    let mut producer = relay.connect();
    producer.send(&req(
        "POST",
        "/link/unix",
        &[("Content-Type", "text/plain")],
        b"over a unix socket",
    ));
    let got = consumer.read_response();
    assert_eq!(got.status(), 200);
    assert_eq!(got.body(), b"over a unix socket");
    assert_eq!(got.header("Content-Type"), Some("text/plain"));
    assert_eq!(producer.read_response().status(), 200);

    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}

// 16
#[test]
fn sigterm_answers_waiters_503_and_exits_0() {
    let mut relay = Relay::start();
    let mut consumer = relay.connect();
    send_parked(&mut consumer, &get("/link/term-c"));
    let mut producer = relay.connect();
    send_parked(&mut producer, &post("/link/term-p", b"never read"));

    relay.terminate();
    let c = consumer.read_head();
    assert_eq!(c.status, 503, "parked consumer: {c:?}");
    let p = producer.read_head();
    assert_eq!(p.status, 503, "parked producer: {p:?}");

    let status = relay.wait_exit(Duration::from_secs(10)).unwrap_or_else(|| {
        panic!(
            "relay still running 10 s after SIGTERM:\n{}",
            relay.output()
        )
    });
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}

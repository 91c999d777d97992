//! Connections: thousands of pipelined requests, a half-closed client, peers
//! over a Unix socket.

use std::thread;
use std::time::Duration;

use super::{assert_bad_request, assert_healthy, link_transfer, pattern};
use crate::support::{req, send_waiting, unix_ms, Background, Relay};
use crate::{get, park, post, VERSION};

#[test]
fn pipelined_5000_health_requests_are_answered_in_order() {
    let relay = Relay::start();
    let bg = Background::start(&relay, "pipeline");
    const N: usize = 5000;
    // Mostly GET /health; every 10th a 404, every 13th a HEAD, every 17th a POST with
    // a body, so that the order of the answers is checked.
    let kind = |i: usize| -> (&'static str, u16) {
        if i % 10 == 9 {
            ("404", 404)
        } else if i % 13 == 0 {
            ("HEAD", 200)
        } else if i % 17 == 0 {
            ("POST", 200)
        } else {
            ("GET", 200)
        }
    };
    let mut all = Vec::new();
    for i in 0..N {
        let one = match kind(i).0 {
            "404" => get(&format!("/nope-{i}")),
            "HEAD" => req("HEAD", "/health", &[], b""),
            "POST" => post("/health", format!("body {i}").as_bytes()),
            _ => get("/health"),
        };
        all.extend_from_slice(&one);
    }
    let mut conn = relay.connect();
    let mut writer = conn.writer();
    let sender = thread::spawn(move || writer.send(&all));
    for i in 0..N {
        let (k, status) = kind(i);
        let r = if k == "HEAD" {
            conn.read_head_response()
        } else {
            conn.read_response()
        };
        assert_eq!(r.status(), status, "response {i} ({k}): {:?}", r.head);
        match k {
            "HEAD" => assert_eq!(r.body(), b"", "response {i}"),
            "404" => assert_eq!(r.text().trim_end(), "404 page not found", "response {i}"),
            _ => assert_eq!(r.text(), VERSION, "response {i}"),
        }
    }
    sender.join().expect("pipelining writer");
    assert!(
        conn.is_silent_for(Duration::from_millis(200)),
        "more responses than requests"
    );
    bg.finish();
}

#[test]
fn half_closed_client_still_gets_its_response() {
    let relay = Relay::start();
    let bg = Background::start(&relay, "half-close");
    let mut conn = relay.connect();
    conn.send(&get("/health"));
    conn.shutdown_write();
    let r = conn.read_response();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text(), VERSION);

    // Two pipelined requests, then the half-close: both are answered.
    let mut conn = relay.connect();
    let mut two = get("/health");
    two.extend_from_slice(&post("/health", b"x"));
    conn.send(&two);
    conn.shutdown_write();
    for i in 0..2 {
        let r = conn.read_response();
        assert_eq!(r.status(), 200, "pipelined request {i}");
        assert_eq!(r.text(), VERSION);
    }
    bg.finish();
}

#[test]
fn unix_socket_peers() {
    let dir = std::env::temp_dir().join(format!(
        "httprelay-hostile-{}-{}",
        std::process::id(),
        unix_ms()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("relay.sock");
    let relay = Relay::start_unix(&path);
    let bg = Background::start(&relay, "unix");

    assert_healthy(&relay, "over a Unix socket");
    let body = pattern(300_000, 5);
    link_transfer(&relay, "/link/unix", &body);
    // A malformed request over a Unix socket: 400 and close.
    assert_bad_request(&relay, b"nonsense\r\n\r\n", "garbage over a Unix socket");
    // A producer that disappears mid-body truncates its consumer.
    let mut consumer = relay.connect();
    send_waiting(&mut consumer, &get("/link/unix-die"), "a link consumer");
    let mut producer = relay.connect();
    producer.send(&req(
        "POST",
        "/link/unix-die",
        &[("Content-Length", "10000")],
        &body[..1000],
    ));
    park();
    drop(producer);
    let head = consumer.read_head();
    assert_eq!(head.status, 200);
    assert!(
        !consumer.read_body(&head, false).is_complete(),
        "consumer of a vanished Unix-socket producer must see a truncated body"
    );
    bg.finish();
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}

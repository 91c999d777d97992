//! HTTP/1.1 beside the channels: health, unknown paths and methods, pipelining,
//! HTTP/1.0 clients and a malformed request line.

use super::support::{req, Relay};
use super::{get, park, post, send_parked, VERSION};

// 14
#[test]
fn health_answers_any_method() {
    let relay = Relay::start();
    let mut conn = relay.connect();
    let r = conn.exchange(&get("/health"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.text(), VERSION);

    let r = conn.exchange(&post("/health", b"some body"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.text(), VERSION);

    conn.send(&req("HEAD", "/health", &[], b""));
    let r = conn.read_head_response();
    assert_eq!(r.status(), 200);
    // No body bytes follow a HEAD response: the next response parses cleanly.
    let r = conn.exchange(&get("/health"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.text(), VERSION);
}

// 18
#[test]
fn unknown_paths_404_and_wrong_methods_405() {
    let relay = Relay::start();
    let mut conn = relay.connect();
    for path in ["/nope", "/Link/x", "/healthz", "/"] {
        let r = conn.exchange(&get(path));
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(
            r.text().trim_end_matches('\n'),
            "404 page not found",
            "{path}"
        );
    }
    let mut conn = relay.connect();
    for method in ["DELETE", "PATCH"] {
        let r = conn.exchange(&req(method, "/link/x", &[], b""));
        assert_eq!(r.status(), 405, "{method} /link/x");
    }
}

// 9
#[test]
fn pipelined_requests_are_answered_in_order() {
    let relay = Relay::start();

    // Two health checks in one write.
    let mut conn = relay.connect();
    let mut two = get("/health");
    two.extend_from_slice(&req("POST", "/health", &[], b"ignored"));
    conn.send(&two);
    for _ in 0..2 {
        let r = conn.read_response();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text(), VERSION);
    }

    // Two uploads pipelined on one producer connection reach two consumers in order.
    let mut producer = relay.connect();
    let mut uploads = post("/link/pipe", b"first upload");
    uploads.extend_from_slice(&post("/link/pipe", b"second upload"));
    producer.send(&uploads);
    park();
    let mut c1 = relay.connect();
    let got = c1.exchange(&get("/link/pipe"));
    assert_eq!(got.body(), b"first upload");
    let mut c2 = relay.connect();
    let got = c2.exchange(&get("/link/pipe"));
    assert_eq!(got.body(), b"second upload");
    for _ in 0..2 {
        let done = producer.read_response();
        assert_eq!(done.status(), 200);
        assert_eq!(done.body(), b"");
    }

    // Two downloads pipelined on one consumer connection.
    let mut consumer = relay.connect();
    let mut downloads = get("/link/pipe2");
    downloads.extend_from_slice(&get("/link/pipe2"));
    consumer.send(&downloads);
    park();
    for body in [&b"one"[..], b"two"] {
        let mut p = relay.connect();
        p.send(&post("/link/pipe2", body));
        assert_eq!(consumer.read_response().body(), body);
        assert_eq!(p.read_response().status(), 200);
    }
}

// 19
#[test]
fn http_1_0_consumer_and_malformed_request_line() {
    let relay = Relay::start();

    // HTTP/1.0 consumer of a Content-Length upload: response, then close.
    let mut producer = relay.connect();
    send_parked(&mut producer, &post("/link/old", b"for an old client"));
    let mut consumer = relay.connect();
    consumer.send(b"GET /link/old HTTP/1.0\r\n\r\n");
    let got = consumer.read_response();
    assert_eq!(got.status(), 200);
    assert_eq!(got.body(), b"for an old client");
    assert!(
        consumer.is_closed_by_peer(),
        "HTTP/1.0: connection must close"
    );
    assert_eq!(producer.read_response().status(), 200);

    // HTTP/1.0 consumer of a chunked upload: never a chunked response.
    let mut producer = relay.connect();
    send_parked(
        &mut producer,
        &req(
            "POST",
            "/link/old",
            &[("Transfer-Encoding", "chunked")],
            b"4\r\nold \r\n6\r\nclient\r\n0\r\n\r\n",
        ),
    );
    let mut consumer = relay.connect();
    consumer.send(b"GET /link/old HTTP/1.0\r\n\r\n");
    let got = consumer.read_response();
    assert_eq!(got.status(), 200);
    assert!(
        !got.head.is_chunked(),
        "chunked sent to HTTP/1.0: {:?}",
        got.head
    );
    assert_eq!(got.body(), b"old client");
    assert!(
        consumer.is_closed_by_peer(),
        "HTTP/1.0: connection must close"
    );
    assert_eq!(producer.read_response().status(), 200);

    // Malformed request line: 400, then close.
    let mut conn = relay.connect();
    conn.send(b"this is not http\r\n\r\n");
    let r = conn.read_response();
    assert_eq!(r.status(), 400);
    assert!(conn.is_closed_by_peer(), "connection must close after 400");
}

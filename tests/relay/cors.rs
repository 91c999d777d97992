//! CORS: the headers on relayed responses and the answer to a preflight.

use super::support::{req, Relay};
use super::{post, send_parked, EXPOSE};

const ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, SERVE";

// 13
#[test]
fn cors_headers_and_preflight() {
    let relay = Relay::start();
    let origin = "https://app.example";
    let mut consumer = relay.connect();
    send_parked(
        &mut consumer,
        &req("GET", "/link/cors", &[("Origin", origin)], b""),
    );
    let mut producer = relay.connect();
    producer.send(&post("/link/cors", b"c"));
    let got = consumer.read_response();
    let done = producer.read_response();
    assert_eq!(got.body(), b"c");

    // With Origin: reflected, plus Vary: Origin.
    assert_eq!(got.header("Access-Control-Allow-Origin"), Some(origin));
    assert!(
        got.head.header_has_token("Vary", "Origin"),
        "Vary: Origin missing: {:?}",
        got.head
    );
    // Without Origin: `*`.
    assert_eq!(done.header("Access-Control-Allow-Origin"), Some("*"));
    for r in [&got, &done] {
        assert_eq!(r.header("Access-Control-Expose-Headers"), Some(EXPOSE));
    }

    // Preflight.
    let mut conn = relay.connect();
    let pre = conn.exchange(&req(
        "OPTIONS",
        "/link/x",
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "content-type, httprelay-wsecret",
            ),
        ],
        b"",
    ));
    assert_eq!(pre.status(), 200);
    assert_eq!(pre.body(), b"");
    assert_eq!(
        pre.header("Access-Control-Allow-Methods"),
        Some(ALLOW_METHODS)
    );
    for h in ["Content-Type", "HttpRelay-WSecret"] {
        assert!(
            pre.head.header_has_token("Access-Control-Allow-Headers", h),
            "preflight must allow {h}: {:?}",
            pre.head
        );
    }
    assert_eq!(pre.header("Access-Control-Allow-Origin"), Some(origin));

    // Preflight without Origin still answers, and does not pair with anything.
    let pre = conn.exchange(&req("OPTIONS", "/link/x", &[], b""));
    assert_eq!(pre.status(), 200);
    assert_eq!(pre.body(), b"");
    assert_eq!(pre.header("Access-Control-Allow-Origin"), Some("*"));
}

//! Request heads: line endings, folded fields, method tokens, targets in every
//! form, percent-encoded ids.

use std::time::Duration;

use super::{
    assert_bad_request, assert_healthy, link_transfer, refused_before_reaching_a_consumer,
};
use crate::support::{req, send_waiting, Background, Relay};
use crate::{get, post, VERSION};

#[test]
fn obs_fold_is_400() {
    let relay = Relay::start();
    let bg = Background::start(&relay, "obs-fold");
    let cases: [(&str, &[u8]); 3] = [
        (
            "obs-fold with spaces",
            b"GET /health HTTP/1.1\r\nHost: relay.test\r\nX-Folded: first\r\n  continued\r\n\r\n",
        ),
        (
            "obs-fold with a tab",
            b"GET /health HTTP/1.1\r\nHost: relay.test\r\nX-Folded: first\r\n\tcontinued\r\n\r\n",
        ),
        (
            "a first header line starting with a space",
            b"GET /health HTTP/1.1\r\n Host: relay.test\r\n\r\n",
        ),
    ];
    for (what, raw) in cases {
        assert_bad_request(&relay, raw, what);
    }
    assert_healthy(&relay, "after obs-fold");
    bg.finish();
}

#[test]
fn bare_lf_line_endings_are_accepted() {
    let relay = Relay::start();
    let bg = Background::start(&relay, "bare-lf");
    let mut conn = relay.connect();
    let r = conn.exchange(b"GET /health HTTP/1.1\nHost: relay.test\n\n");
    assert_eq!(r.status(), 200, "bare LF /health: {:?}", r.head);
    assert_eq!(r.text(), VERSION);
    // Mixed line endings, and the connection stays usable.
    let r = conn.exchange(b"GET /health HTTP/1.1\r\nHost: relay.test\nX-A: b\r\n\n");
    assert_eq!(r.status(), 200, "mixed line endings: {:?}", r.head);

    // A link transfer with bare-LF heads on both sides.
    let mut consumer = relay.connect();
    send_waiting(
        &mut consumer,
        b"GET /link/lf HTTP/1.1\nHost: relay.test\n\n",
        "a bare-LF consumer",
    );
    let mut producer = relay.connect();
    producer.send(
        b"POST /link/lf HTTP/1.1\nHost: relay.test\nContent-Type: text/plain\nContent-Length: 7\n\nbare lf",
    );
    let got = consumer.read_response();
    assert_eq!(got.status(), 200);
    assert_eq!(got.body(), b"bare lf");
    assert_eq!(got.header("Content-Type"), Some("text/plain"));
    assert_eq!(producer.read_response().status(), 200);
    bg.finish();
}

#[test]
fn invalid_method_tokens_are_400() {
    let relay = Relay::start();
    let bg = Background::start(&relay, "method");
    let lines: [&[u8]; 7] = [
        b"G@T /link/method HTTP/1.1\r\n",
        b"PO(ST /link/method HTTP/1.1\r\n",
        b"POST\x01 /link/method HTTP/1.1\r\n",
        b"P\xc3\x96ST /link/method HTTP/1.1\r\n",
        b" /link/method HTTP/1.1\r\n",
        b"PO\"ST /link/method HTTP/1.1\r\n",
        b"POST[] /link/method HTTP/1.1\r\n",
    ];
    let bad: Vec<(Vec<u8>, String)> = lines
        .iter()
        .map(|line| {
            let mut raw = line.to_vec();
            raw.extend_from_slice(b"Host: relay.test\r\nContent-Length: 3\r\n\r\nbad");
            (
                raw,
                format!("request line {:?}", String::from_utf8_lossy(line)),
            )
        })
        .collect();
    refused_before_reaching_a_consumer(&relay, "/link/method", &bad);
    bg.finish();
}

#[test]
fn invalid_targets_are_400() {
    let relay = Relay::start();
    let bg = Background::start(&relay, "target");
    for target in ["health", "link/x", "?x=1", "*", "health/", "%2Fhealth"] {
        assert_bad_request(
            &relay,
            &req("GET", target, &[], b""),
            &format!("GET {target}"),
        );
    }
    assert_healthy(&relay, "after invalid targets");
    bg.finish();
}

#[test]
fn absolute_form_targets_work_like_their_path_and_asterisk() {
    let relay = Relay::start();
    let bg = Background::start(&relay, "absolute");
    let mut conn = relay.connect();
    let r = conn.exchange(&get("http://relay.test/health"));
    assert_eq!(r.status(), 200, "absolute-form /health: {:?}", r.head);
    assert_eq!(r.text(), VERSION);
    let r = conn.exchange(&get("http://relay.test:8080/nope"));
    assert_eq!(r.status(), 404, "absolute-form /nope: {:?}", r.head);

    // Absolute-form on one side, origin-form on the other: same channel, same query.
    let mut consumer = relay.connect();
    send_waiting(
        &mut consumer,
        &get("http://other.example:81/link/abs?who=consumer"),
        "an absolute-form consumer",
    );
    let mut producer = relay.connect();
    producer.send(&post("/link/abs?who=producer", b"absolute"));
    let got = consumer.read_response();
    assert_eq!(got.status(), 200);
    assert_eq!(got.body(), b"absolute");
    assert_eq!(got.header("HttpRelay-Query"), Some("who=producer"));
    let done = producer.read_response();
    assert_eq!(done.status(), 200);
    assert_eq!(done.header("HttpRelay-Query"), Some("who=consumer"));

    // Producer in absolute form, consumer in origin form.
    let mut producer = relay.connect();
    send_waiting(
        &mut producer,
        &post("http://relay.test/link/abs2", b"reverse"),
        "an absolute-form producer",
    );
    let mut consumer = relay.connect();
    assert_eq!(consumer.exchange(&get("/link/abs2")).body(), b"reverse");
    assert_eq!(producer.read_response().status(), 200);

    // OPTIONS * is answered; GET * is not a valid request.
    let mut conn = relay.connect();
    let r = conn.exchange(&req("OPTIONS", "*", &[], b""));
    assert_eq!(r.status(), 200, "OPTIONS *: {:?}", r.head);
    let r = conn.exchange(&get("/health"));
    assert_eq!(r.status(), 200, "keep-alive after OPTIONS *");
    assert_bad_request(&relay, &req("GET", "*", &[], b""), "GET *");
    assert_bad_request(&relay, &req("POST", "*", &[], b"x"), "POST *");
    bg.finish();
}

#[test]
fn percent_encoding_in_ids() {
    let relay = Relay::start();
    let bg = Background::start(&relay, "percent");

    // Invalid escapes.
    for target in [
        "/link/%zz",
        "/link/a%zzb",
        "/mcast/%zz",
        "/sync/x%zz",
        "/link/%z1",
    ] {
        assert_bad_request(
            &relay,
            &req("GET", target, &[], b""),
            &format!("GET {target}"),
        );
    }

    // `%FF` is a valid, non-UTF-8 id; its hex digits are case-insensitive, and it is
    // not the same id as `%FE`.
    let mut other = relay.connect();
    send_waiting(&mut other, &get("/link/%FE"), "a consumer of %FE");
    let mut producer = relay.connect();
    send_waiting(
        &mut producer,
        &post("/link/%FF", b"non-utf-8 id"),
        "a producer on %FF",
    );
    let mut consumer = relay.connect();
    let got = consumer.exchange(&get("/link/%FF"));
    assert_eq!(got.status(), 200);
    assert_eq!(got.body(), b"non-utf-8 id");
    assert_eq!(producer.read_response().status(), 200);
    link_transfer(&relay, "/link/%ff", b"lower-case hex");
    let mut producer = relay.connect();
    send_waiting(&mut producer, &post("/link/%ff", b"x"), "a producer on %ff");
    let mut consumer = relay.connect();
    assert_eq!(consumer.exchange(&get("/link/%FF")).body(), b"x");
    assert_eq!(producer.read_response().status(), 200);
    assert!(
        other.is_silent_for(Duration::from_millis(200)),
        "the %FE consumer was paired with a %FF producer"
    );
    let mut producer = relay.connect();
    producer.send(&post("/link/%FE", b"fe"));
    assert_eq!(other.read_response().body(), b"fe");
    assert_eq!(producer.read_response().status(), 200);

    // `%2F` separates segments: `/link/a%2Fb` uses id `b`.
    let mut producer = relay.connect();
    send_waiting(
        &mut producer,
        &post("/link/a%2Fb", b"slash"),
        "a producer on a%2Fb",
    );
    let mut consumer = relay.connect();
    let got = consumer.exchange(&get("/link/b"));
    assert_eq!(got.status(), 200);
    assert_eq!(got.body(), b"slash", "/link/a%2Fb and /link/b share id b");
    assert_eq!(producer.read_response().status(), 200);
    let mut consumer = relay.connect();
    send_waiting(&mut consumer, &get("/link/x%2fy"), "a consumer on x%2fy");
    let mut producer = relay.connect();
    producer.send(&post("/link/other/y", b"lower %2f"));
    assert_eq!(consumer.read_response().body(), b"lower %2f");
    assert_eq!(producer.read_response().status(), 200);
    bg.finish();
}

//! Size limits: the head (431) and what mcast and sync may hold in all (503).

use super::{assert_error, assert_healthy, pattern, raw_exchange};
use crate::support::{req, send_waiting, Background, Relay};
use crate::{get, post};

#[test]
fn head_over_16_kib_is_431() {
    let relay = Relay::start();
    let bg = Background::start(&relay, "big-head");

    // Just under the limit: fine.
    let near = "a".repeat(15_000);
    let mut conn = relay.connect();
    let r = conn.exchange(&req("GET", "/health", &[("X-Near", &near)], b""));
    assert_eq!(r.status(), 200, "a 15 KB head: {:?}", r.head);

    // One huge field, many large fields, a huge target.
    let huge = "b".repeat(17_000);
    let kb = "c".repeat(1000);
    let many: Vec<(String, &str)> = (0..20).map(|i| (format!("X-F{i}"), kb.as_str())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let cases = [
        (
            "one 17,000-byte field",
            req("GET", "/health", &[("X-Huge", &huge)], b""),
        ),
        (
            "twenty 1,000-byte fields",
            req("GET", "/health", &many, b""),
        ),
        (
            "a 17,000-byte target",
            req("POST", &format!("/link/{huge}"), &[], b"x"),
        ),
    ];
    for (what, raw) in &cases {
        let (_, r) = raw_exchange(&relay, raw);
        assert_error(&r, 431, what);
    }

    assert_healthy(&relay, "after 431s");
    bg.finish();
}

#[test]
fn more_than_100_header_fields_is_431() {
    let relay = Relay::start();
    let bg = Background::start(&relay, "fields");
    let with_fields = |n: usize| {
        // `req` adds Host: the request has `n` fields in all.
        let names: Vec<String> = (1..n).map(|i| format!("X-Field-{i}")).collect();
        let headers: Vec<(&str, &str)> = names.iter().map(|s| (s.as_str(), "v")).collect();
        req("GET", "/health", &headers, b"")
    };
    let (_, r) = raw_exchange(&relay, &with_fields(100));
    assert_eq!(r.status(), 200, "100 header fields: {:?}", r.head);
    let (_, r) = raw_exchange(&relay, &with_fields(101));
    assert_error(&r, 431, "101 header fields");
    let (_, r) = raw_exchange(&relay, &with_fields(1000));
    assert_error(&r, 431, "1000 header fields");
    assert_healthy(&relay, "after too many fields");
    bg.finish();
}

#[test]
fn mcast_total_is_503() {
    let relay = Relay::start_flags(&["--mcast-total", "100000"]);
    let bg = Background::start(&relay, "mcast-total");
    let first = pattern(60_000, 1);
    let mut producer = relay.connect();
    let r = producer.exchange(&post("/mcast/total-a", &first));
    assert_eq!(r.status(), 200, "first message: {:?}", r.head);

    let (_, r) = raw_exchange(&relay, &post("/mcast/total-b", &pattern(60_000, 2)));
    assert_error(&r, 503, "a message beyond --mcast-total");
    // Within the total: accepted.
    let small = pattern(20_000, 3);
    let (_, r) = raw_exchange(&relay, &post("/mcast/total-c", &small));
    assert_eq!(r.status(), 200, "a message within the total: {:?}", r.head);

    // Data already held stays.
    let mut reader = relay.connect();
    let got = reader.exchange(&get("/mcast/total-a?seqid=0"));
    assert_eq!(got.status(), 200);
    assert!(got.body() == &first[..], "held mcast message changed");
    let got = reader.exchange(&get("/mcast/total-c?seqid=0"));
    assert!(got.body() == &small[..], "held mcast message changed");
    bg.finish();
}

#[test]
fn sync_total_is_503() {
    let relay = Relay::start_flags(&["--sync-total", "100000"]);
    let bg = Background::start(&relay, "sync-total");
    let held = pattern(60_000, 4);
    let mut first = relay.connect();
    send_waiting(
        &mut first,
        &post("/sync/total-a", &held),
        "a sync peer holding 60,000 bytes",
    );

    let (_, r) = raw_exchange(&relay, &post("/sync/total-b", &pattern(60_000, 5)));
    assert_error(&r, 503, "a sync body beyond --sync-total");

    // The held body is delivered intact.
    let mut second = relay.connect();
    let got = second.exchange(&get("/sync/total-a"));
    assert_eq!(got.status(), 200);
    assert!(got.body() == &held[..], "held sync body changed");
    assert_eq!(first.read_response().status(), 200);

    // Once delivered, it no longer counts.
    let again = pattern(60_000, 6);
    let mut first = relay.connect();
    send_waiting(
        &mut first,
        &post("/sync/total-b", &again),
        "a sync peer after the total was released",
    );
    let mut second = relay.connect();
    assert!(second.exchange(&get("/sync/total-b")).body() == &again[..]);
    assert_eq!(first.read_response().status(), 200);
    bg.finish();
}

//! mcast: one producer, many readers, retained numbered messages (PROTOCOL.md, mcast).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use super::support::{chunked, req, send_waiting, Body, Conn, End, Relay, Response, PARK};
use super::{get, park, post, EXPOSE, VERSION};

/// Stores `body` on `path` and returns the sequence number the relay gave it.
fn write(relay: &Relay, path: &str, body: &[u8]) -> u64 {
    let mut producer = relay.connect();
    let done = producer.exchange(&post(path, body));
    assert_eq!(done.status(), 200, "mcast write to {path}: {:?}", done.head);
    seq_of(&done)
}

/// Reads one message with a plain GET of `target`.
fn read(relay: &Relay, target: &str) -> Response {
    read_with(relay, target, &[])
}

fn read_with(relay: &Relay, target: &str, headers: &[(&str, &str)]) -> Response {
    let mut reader = relay.connect();
    let got = reader.exchange(&req("GET", target, headers, b""));
    assert_eq!(got.status(), 200, "GET {target}: {:?}", got.head);
    got
}

fn seq_of(r: &Response) -> u64 {
    let v = r
        .header("HttpRelay-SeqId")
        .unwrap_or_else(|| panic!("missing HttpRelay-SeqId: {:?}", r.head));
    v.parse()
        .unwrap_or_else(|_| panic!("HttpRelay-SeqId is not a number: {v:?}"))
}

/// Asserts a reader response carries message `seq` with `body`.
fn assert_message(r: &Response, seq: u64, body: &[u8], what: &str) {
    assert_eq!(r.status(), 200, "{what}: {:?}", r.head);
    assert_eq!(
        String::from_utf8_lossy(r.body()),
        String::from_utf8_lossy(body),
        "{what}: body"
    );
    assert_eq!(seq_of(r), seq, "{what}: HttpRelay-SeqId");
}

/// The `SeqId` value of the response's `Set-Cookie`, and its attributes.
fn cookie(r: &Response) -> (u64, Vec<String>) {
    let all = r.head.header_all("Set-Cookie");
    let line = all
        .iter()
        .find(|v| v.trim_start().starts_with("SeqId="))
        .unwrap_or_else(|| panic!("no SeqId cookie: {:?}", r.head));
    let mut parts = line.split(';').map(|p| p.trim().to_string());
    let first = parts.next().unwrap_or_default();
    let value = first["SeqId=".len()..]
        .parse()
        .unwrap_or_else(|_| panic!("SeqId cookie value is not a number: {line:?}"));
    (value, parts.collect())
}

fn has_attr(attrs: &[String], attr: &str) -> bool {
    attrs.iter().any(|a| a.eq_ignore_ascii_case(attr))
}

fn assert_cache_headers(r: &Response, supplied: bool, what: &str) {
    if supplied {
        assert_eq!(
            r.header("Cache-Control"),
            Some("max-age=1200"),
            "{what}: a supplied seqid makes the response cacheable: {:?}",
            r.head
        );
        assert!(
            r.head.header_has_token("Vary", "Cookie"),
            "{what}: Vary must list Cookie: {:?}",
            r.head
        );
    } else {
        assert_eq!(
            r.header("Cache-Control"),
            None,
            "{what}: no seqid, no Cache-Control: {:?}",
            r.head
        );
        assert!(
            !r.head.header_has_token("Vary", "Cookie"),
            "{what}: no seqid, no Vary: Cookie: {:?}",
            r.head
        );
    }
}

#[test]
fn mcast_get_without_seqid_on_empty_channel_waits_for_next_message() {
    let relay = Relay::start();
    let mut reader = relay.connect();
    send_waiting(
        &mut reader,
        &get("/mcast/empty"),
        "a reader of an empty channel",
    );
    assert_eq!(write(&relay, "/mcast/empty", b"first"), 0);
    let got = reader.read_response();
    assert_message(&got, 0, b"first", "parked reader");
    assert_cache_headers(&got, false, "parked reader");
}

#[test]
fn mcast_get_without_seqid_returns_newest_at_once() {
    let relay = Relay::start();
    for (i, body) in [&b"m0"[..], b"m1", b"m2"].iter().enumerate() {
        assert_eq!(write(&relay, "/mcast/newest", body), i as u64);
    }
    let got = read(&relay, "/mcast/newest");
    assert_message(&got, 2, b"m2", "GET without seqid");
    assert_eq!(cookie(&got).0, 3);
    assert_cache_headers(&got, false, "GET without seqid");
}

#[test]
fn mcast_seqid_beyond_next_waits_for_the_next_message() {
    let relay = Relay::start();
    write(&relay, "/mcast/future", b"m0");
    write(&relay, "/mcast/future", b"m1");
    // The next number to be written is 2; 7 is beyond it.
    let mut reader = relay.connect();
    send_waiting(
        &mut reader,
        &get("/mcast/future?seqid=7"),
        "a reader asking for a seqid beyond the next",
    );
    assert_eq!(write(&relay, "/mcast/future", b"m2"), 2);
    let got = reader.read_response();
    assert_message(&got, 2, b"m2", "seqid=7");
    assert_eq!(cookie(&got).0, 3);
}

#[test]
fn mcast_seqid_older_than_oldest_retained_gets_the_oldest() {
    // 400-byte messages (each also counts its metadata and 256 bytes of
    // bookkeeping), at most 1600 bytes held: two messages stay.
    let relay = Relay::start_flags(&["--mcast-retain", "1600"]);
    let bodies: Vec<Vec<u8>> = (0..3).map(|i| vec![b'a' + i; 400]).collect();
    for (i, body) in bodies.iter().enumerate() {
        assert_eq!(write(&relay, "/mcast/old", body), i as u64);
    }
    let got = read(&relay, "/mcast/old?seqid=0");
    assert_message(&got, 1, &bodies[1], "seqid=0 after message 0 was dropped");
    assert_eq!(cookie(&got).0, 2);
}

#[test]
fn mcast_exact_seqid_returns_that_message() {
    let relay = Relay::start();
    for body in [&b"m0"[..], b"m1", b"m2"] {
        write(&relay, "/mcast/exact", body);
    }
    for (seq, body) in [(1, &b"m1"[..]), (0, b"m0"), (2, b"m2")] {
        let got = read(&relay, &format!("/mcast/exact?seqid={seq}"));
        assert_message(&got, seq, body, &format!("seqid={seq}"));
        assert_eq!(cookie(&got).0, seq + 1);
    }
}

#[test]
fn mcast_seqid_not_yet_written_waits_for_it() {
    let relay = Relay::start();
    write(&relay, "/mcast/next", b"m0");
    let mut reader = relay.connect();
    send_waiting(
        &mut reader,
        &get("/mcast/next?seqid=1"),
        "a reader of the next message",
    );
    assert_eq!(write(&relay, "/mcast/next", b"m1"), 1);
    let got = reader.read_response();
    assert_message(&got, 1, b"m1", "seqid=1");
    assert_eq!(cookie(&got).0, 2);
    assert_cache_headers(&got, true, "seqid=1");
}

#[test]
fn mcast_seqid_from_cookie() {
    let relay = Relay::start();
    for body in [&b"m0"[..], b"m1", b"m2"] {
        write(&relay, "/mcast/ck", body);
    }
    let got = read_with(&relay, "/mcast/ck", &[("Cookie", "SeqId=1")]);
    assert_message(&got, 1, b"m1", "Cookie: SeqId=1");
    assert_eq!(cookie(&got).0, 2);
    assert_cache_headers(&got, true, "Cookie: SeqId=1");

    // Among other cookies.
    let got = read_with(
        &relay,
        "/mcast/ck",
        &[("Cookie", "theme=dark; SeqId=0; other=x")],
    );
    assert_message(&got, 0, b"m0", "SeqId among other cookies");

    // The query parameter (any case) wins over the cookie.
    let got = read_with(&relay, "/mcast/ck?SeqID=2", &[("Cookie", "SeqId=0")]);
    assert_message(&got, 2, b"m2", "query seqid and cookie");
}

#[test]
fn mcast_unparsable_seqid_counts_as_zero() {
    let relay = Relay::start();
    for body in [&b"m0"[..], b"m1", b"m2"] {
        write(&relay, "/mcast/nan", body);
    }
    for target in [
        "/mcast/nan?seqid=abc",
        "/mcast/nan?SEQID=-2",
        "/mcast/nan?seqid=1.5",
    ] {
        let got = read(&relay, target);
        assert_message(&got, 0, b"m0", target);
        assert_cache_headers(&got, true, target);
    }
    let got = read_with(&relay, "/mcast/nan", &[("Cookie", "SeqId=two")]);
    assert_message(&got, 0, b"m0", "Cookie: SeqId=two");
}

#[test]
fn mcast_reader_and_producer_headers() {
    let relay = Relay::start();
    let mut producer = relay.connect();
    let done = producer.exchange(&req(
        "PUT",
        "/mcast/hdr?b=2&a=1&wsecret=s",
        &[("Content-Type", "text/x-mcast")],
        b"headers",
    ));
    assert_eq!(done.status(), 200);
    assert_eq!(seq_of(&done), 0, "first message of a channel is 0");
    assert_eq!(done.header("HttpRelay-Version"), Some(VERSION));
    assert_eq!(done.header("HttpRelay-Method"), Some("PUT"));
    let producer_port = producer.local_port().to_string();

    let expose = format!("HttpRelay-SeqId, {EXPOSE}");
    for (target, supplied) in [("/mcast/hdr", false), ("/mcast/hdr?seqid=0", true)] {
        let got = read(&relay, target);
        assert_message(&got, 0, b"headers", target);
        // Content headers and the producer's metadata.
        assert_eq!(got.header("Content-Type"), Some("text/x-mcast"), "{target}");
        assert_eq!(got.head.content_length(), Some(7), "{target}");
        assert_eq!(got.header("HttpRelay-Method"), Some("PUT"), "{target}");
        assert_eq!(got.header("HttpRelay-Query"), Some("a=1&b=2"), "{target}");
        assert_eq!(got.header("X-Real-IP"), Some("127.0.0.1"), "{target}");
        assert_eq!(
            got.header("X-Real-Port"),
            Some(producer_port.as_str()),
            "{target}"
        );
        assert_eq!(got.header("HttpRelay-Version"), Some(VERSION), "{target}");
        // Reader headers.
        let (next, attrs) = cookie(&got);
        assert_eq!(next, 1, "{target}: cookie names the next message");
        assert!(
            has_attr(&attrs, "Path=/mcast/hdr"),
            "{target}: cookie path: {attrs:?}"
        );
        assert!(
            !has_attr(&attrs, "Secure") && !has_attr(&attrs, "SameSite=None"),
            "{target}: plain HTTP cookie must not be Secure/SameSite=None: {attrs:?}"
        );
        assert_eq!(
            got.header("Access-Control-Allow-Credentials"),
            Some("true"),
            "{target}"
        );
        assert_eq!(
            got.header("Access-Control-Expose-Headers"),
            Some(expose.as_str()),
            "{target}"
        );
        assert_cache_headers(&got, supplied, target);
    }
}

/// Body of the slow upload: `PIECES` pieces of `PIECE` bytes.
const PIECES: usize = 8;
const PIECE: usize = 16 * 1024;

#[test]
fn mcast_200_readers_receive_a_slow_upload_while_it_is_sent() {
    const READERS: usize = 200;
    let relay = Relay::start();
    let message: Vec<u8> = (0..PIECES * PIECE).map(|i| (i * 7 % 253) as u8).collect();
    let producer_done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Barrier::new(READERS + 1));

    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let addr = relay.addr().clone();
            let done = producer_done.clone();
            let sent = sent.clone();
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut reader = Conn::open(&addr);
                    reader.send(&get("/mcast/tee"));
                    sent.wait();
                    let head = reader.read_head();
                    let mut bytes = Vec::new();
                    let mut early = None;
                    let (end, _) = reader.stream_body(&head, false, 64 * 1024, |piece| {
                        if early.is_none() && !piece.is_empty() {
                            early = Some(!done.load(Ordering::SeqCst));
                        }
                        bytes.extend_from_slice(piece);
                    });
                    (head, end, bytes, early == Some(true))
                })
                .expect("spawn reader")
        })
        .collect();

    sent.wait();
    park();
    park();
    let mut producer = relay.connect();
    producer.send(&req(
        "POST",
        "/mcast/tee",
        &[
            ("Content-Type", "application/x-tee"),
            ("Content-Length", &message.len().to_string()),
        ],
        b"",
    ));
    for piece in message.chunks(PIECE) {
        producer.send(piece);
        thread::sleep(Duration::from_millis(60));
    }
    producer_done.store(true, Ordering::SeqCst);
    let done = producer.read_response();
    assert_eq!(done.status(), 200);
    assert_eq!(seq_of(&done), 0);

    let mut early = 0;
    for (i, reader) in readers.into_iter().enumerate() {
        let (head, end, bytes, got_early) = reader.join().expect("reader thread");
        assert_eq!(head.status, 200, "reader {i}: {head:?}");
        assert_eq!(
            head.header("HttpRelay-SeqId"),
            Some("0"),
            "reader {i}: {head:?}"
        );
        assert_eq!(
            head.header("Content-Type"),
            Some("application/x-tee"),
            "reader {i}"
        );
        assert_eq!(end, End::Complete, "reader {i}: body truncated");
        assert_eq!(bytes.len(), message.len(), "reader {i}: body length");
        assert!(bytes == message, "reader {i}: body differs from the upload");
        if got_early {
            early += 1;
        }
    }
    eprintln!("mcast tee: {early} of {READERS} readers had bytes before the upload ended");
    assert!(
        early > 0,
        "no reader received any byte before the producer finished sending: \
         the relay does not stream the message while it is uploaded"
    );
}

#[test]
fn mcast_reader_catches_up_by_following_the_cookie() {
    let relay = Relay::start();
    let bodies: Vec<String> = (0..5).map(|i| format!("message {i}")).collect();
    for (i, body) in bodies.iter().enumerate() {
        assert_eq!(write(&relay, "/mcast/follow", body.as_bytes()), i as u64);
    }
    // One keep-alive reader: starts at 0, then sends back whatever cookie it was given.
    let mut reader = relay.connect();
    let mut got = reader.exchange(&get("/mcast/follow?seqid=0"));
    for (i, body) in bodies.iter().enumerate() {
        assert_message(&got, i as u64, body.as_bytes(), &format!("catch-up {i}"));
        let (next, _) = cookie(&got);
        assert_eq!(next, i as u64 + 1);
        let request = req(
            "GET",
            "/mcast/follow",
            &[("Cookie", &format!("SeqId={next}"))],
            b"",
        );
        if i + 1 < bodies.len() {
            got = reader.exchange(&request);
        } else {
            // Caught up: the next request waits for message 5.
            send_waiting(&mut reader, &request, "a caught-up reader");
            assert_eq!(write(&relay, "/mcast/follow", b"message 5"), 5);
            got = reader.read_response();
        }
    }
    assert_message(&got, 5, b"message 5", "after catching up");
    assert_eq!(cookie(&got).0, 6);
}

#[test]
fn mcast_retention_drops_the_oldest_messages() {
    let relay = Relay::start_flags(&["--mcast-retain", "1600"]);
    let bodies: Vec<Vec<u8>> = (0..10u8).map(|i| vec![b'A' + i; 400]).collect();
    for (i, body) in bodies.iter().enumerate() {
        assert_eq!(write(&relay, "/mcast/keep", body), i as u64);
    }
    // A message costs its 400 bytes, its metadata and 256 bytes of bookkeeping:
    // two fit in 1600, a third would not: messages 8 and 9 remain.
    for (asked, seq) in [(9, 9), (8, 8), (7, 8), (3, 8), (0, 8)] {
        let got = read(&relay, &format!("/mcast/keep?seqid={asked}"));
        assert_message(&got, seq, &bodies[seq as usize], &format!("seqid={asked}"));
    }
    let got = read(&relay, "/mcast/keep");
    assert_message(&got, 9, &bodies[9], "newest");
}

#[test]
fn mcast_413_by_content_length() {
    let relay = Relay::start_flags(&["--mcast-max-message", "1000"]);
    let mut reader = relay.connect();
    send_waiting(
        &mut reader,
        &get("/mcast/big"),
        "a reader of an empty channel",
    );

    // Expect: 100-continue gets 413 instead of 100.
    let mut producer = relay.connect();
    producer.send(&req(
        "PUT",
        "/mcast/big",
        &[("Expect", "100-continue"), ("Content-Length", "1001")],
        b"",
    ));
    let head = producer.read_head();
    assert_eq!(head.status, 413, "1001 bytes with Expect: {head:?}");

    // Without Expect, the 413 comes before the body is sent.
    let mut producer = relay.connect();
    producer.send(&req(
        "POST",
        "/mcast/big",
        &[("Content-Length", "5000")],
        b"",
    ));
    let head = producer.read_head();
    assert_eq!(head.status, 413, "5000 bytes: {head:?}");

    // Nothing was stored: the reader still waits; exactly the maximum is fine.
    assert!(
        reader.is_silent_for(PARK),
        "a refused upload reached a reader"
    );
    let exact = vec![b'x'; 1000];
    assert_eq!(write(&relay, "/mcast/big", &exact), 0);
    let got = reader.read_response();
    assert_message(&got, 0, &exact, "1000-byte message");
}

#[test]
fn mcast_413_by_chunked_overflow() {
    let relay = Relay::start_flags(&["--mcast-max-message", "1000"]);
    let mut reader = relay.connect();
    send_waiting(
        &mut reader,
        &get("/mcast/over"),
        "a reader of an empty channel",
    );

    let mut producer = relay.connect();
    producer.send(&req(
        "POST",
        "/mcast/over",
        &[("Transfer-Encoding", "chunked")],
        &chunked(&[&[b'a'; 600]], false),
    ));
    park();
    // The second chunk crosses the maximum; the relay may close before it is written.
    let _ = producer.try_send(&chunked(&[&[b'b'; 600]], true));
    if let Some(head) = producer.try_read_head() {
        assert_eq!(head.status, 413, "overflowing chunked upload: {head:?}");
        let _ = producer.read_body(&head, false);
    }
    assert!(
        producer.is_closed_by_peer(),
        "an aborted upload closes the producer's connection"
    );

    let head = reader
        .try_read_head()
        .expect("a reader of an aborted upload gets a response head, then a cut body");
    assert_eq!(head.status, 200, "{head:?}");
    let body = reader.read_body(&head, false);
    assert!(
        matches!(&body, Body::Truncated(b) if b.len() <= 1000),
        "reader must see a truncated body, got {} bytes, complete: {}",
        body.bytes().len(),
        body.is_complete()
    );

    // The aborted message does not exist: a new reader waits for the next one.
    let mut reader = relay.connect();
    send_waiting(
        &mut reader,
        &get("/mcast/over"),
        "a reader after an aborted upload",
    );
    write(&relay, "/mcast/over", b"small");
    assert_eq!(reader.read_response().body(), b"small");
}

#[test]
fn mcast_producer_dying_mid_upload_truncates_readers() {
    let relay = Relay::start();
    assert_eq!(write(&relay, "/mcast/die", b"first"), 0);
    let mut readers: Vec<Conn> = (0..2).map(|_| relay.connect()).collect();
    for r in &mut readers {
        send_waiting(r, &get("/mcast/die?seqid=1"), "a reader of message 1");
    }

    let mut producer = relay.connect();
    producer.send(&req(
        "POST",
        "/mcast/die",
        &[("Content-Length", "1000")],
        &[b'z'; 100],
    ));
    park();
    drop(producer);

    for (i, r) in readers.iter_mut().enumerate() {
        let head = r
            .try_read_head()
            .unwrap_or_else(|| panic!("reader {i}: no response head"));
        assert_eq!(head.status, 200, "reader {i}: {head:?}");
        let body = r.read_body(&head, false);
        assert!(
            matches!(&body, Body::Truncated(b) if b.len() <= 100),
            "reader {i} must see a truncated body, got {} bytes, complete: {}",
            body.bytes().len(),
            body.is_complete()
        );
    }

    // The failed message was removed: the newest is still "first".
    let got = read(&relay, "/mcast/die");
    assert_message(&got, 0, b"first", "newest after a failed upload");
    write(&relay, "/mcast/die", b"after");
    let got = read(&relay, "/mcast/die");
    assert_eq!(got.body(), b"after");
}

#[test]
fn mcast_write_secret_applies_to_producers_only() {
    let relay = Relay::start();
    assert_eq!(write(&relay, "/mcast/sec?wsecret=key", b"one"), 0);
    let refused = |request: Vec<u8>, what: &str| {
        let mut producer = relay.connect();
        let r = producer.exchange(&request);
        assert_eq!(r.status(), 401, "{what}: {:?}", r.head);
    };
    refused(post("/mcast/sec", b"x"), "no secret");
    refused(post("/mcast/sec?wsecret=nope", b"x"), "wrong query secret");
    refused(
        req("POST", "/mcast/sec", &[("HttpRelay-WSecret", "nope")], b"x"),
        "wrong header secret",
    );
    let mut producer = relay.connect();
    let done = producer.exchange(&req(
        "POST",
        "/mcast/sec",
        &[("HttpRelay-WSecret", "key")],
        b"two",
    ));
    assert_eq!(done.status(), 200);
    assert_eq!(seq_of(&done), 1, "refused uploads store nothing");

    // Readers never need the secret, and a wrong one does not matter.
    assert_message(&read(&relay, "/mcast/sec"), 1, b"two", "reader");
    assert_message(
        &read(&relay, "/mcast/sec?seqid=0&wsecret=bad"),
        0,
        b"one",
        "reader with a wrong secret",
    );
}

#[test]
fn mcast_other_methods_405() {
    let relay = Relay::start();
    write(&relay, "/mcast/m", b"kept");
    let mut conn = relay.connect();
    for method in ["DELETE", "PATCH"] {
        let r = conn.exchange(&req(method, "/mcast/m", &[], b""));
        assert_eq!(r.status(), 405, "{method} /mcast/m");
    }
    let pre = conn.exchange(&req("OPTIONS", "/mcast/m", &[], b""));
    assert_eq!(pre.status(), 200, "preflight");
    assert_eq!(pre.body(), b"");
    // None of them stored anything.
    assert_message(&read(&relay, "/mcast/m"), 0, b"kept", "newest");
}

#[test]
fn mcast_errors_are_readable_by_credentialed_pages() {
    let relay = Relay::start_flags(&["--wait-timeout", "0.3"]);
    let origin = [("Origin", "http://page.example")];
    let mut conn = relay.connect();
    let refused = conn.exchange(&req("DELETE", "/mcast/cred", &origin, b""));
    assert_eq!(refused.status(), 405);
    assert_eq!(
        refused.header("Access-Control-Allow-Origin"),
        Some("http://page.example")
    );
    assert_eq!(
        refused.header("Access-Control-Allow-Credentials"),
        Some("true")
    );
    let mut waiting = relay.connect();
    let timed_out = waiting.exchange(&req("GET", "/mcast/cred?seqid=0", &origin, b""));
    assert_eq!(timed_out.status(), 504);
    assert_eq!(
        timed_out.header("Access-Control-Allow-Credentials"),
        Some("true")
    );
}

#[test]
fn mcast_head_too_large_is_500_and_the_channel_goes_on() {
    // The producer's own query comes back re-encoded (`*` → `%2A`), tripled.
    let relay = Relay::start_flags(&["--max-head", "24576"]);
    let query = "*".repeat(24_000);
    let mut producer = relay.connect();
    let r = producer.exchange(&req(
        "POST",
        &format!("/mcast/huge?q={query}"),
        &[],
        b"kept",
    ));
    assert_eq!(r.status(), 500, "{:?}", r.head);
    assert!(producer.is_closed_by_peer());
    // Readers of that message get the same refusal (its metadata is in their
    // head too), and the channel goes on: the next message is readable.
    let mut reader = relay.connect();
    assert_eq!(reader.exchange(&get("/mcast/huge?seqid=0")).status(), 500);
    let mut producer = relay.connect();
    let stored = producer.exchange(&post("/mcast/huge", b"next"));
    assert_eq!(stored.status(), 200);
    assert_eq!(stored.header("HttpRelay-SeqId"), Some("1"));
    let mut reader = relay.connect();
    assert_eq!(reader.exchange(&get("/mcast/huge?seqid=1")).body(), b"next");
}

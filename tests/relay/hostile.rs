//! Hostile and malformed input, limits and timeouts. Every test keeps an unrelated
//! link transfer streaming on other connections (`Background`) from before the hostile
//! action until after it, and checks that its bytes arrived intact.

use std::thread;
use std::time::Duration;

use super::support::{
    chunked, req, send_waiting, unix_ms, Background, Body, Conn, End, Relay, Response, RssSampler,
};
use super::{get, park, post, VERSION};

/// How long a test waits for a timeout-driven answer or close (the timeouts under test
/// are 0.5 s or 1 s; this only bounds a hang).
const WAIT: Duration = Duration::from_secs(5);

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

#[test]
fn content_length_with_transfer_encoding_is_400() {
    let relay = Relay::start();
    let bg = Background::start(&relay, "cl-te");
    let chunks = b"5\r\nhello\r\n0\r\n\r\n";
    let path = "/link/smuggle";
    let (cl, te) = (("Content-Length", "15"), ("Transfer-Encoding", "chunked"));
    // A smuggled second request inside a CL+TE body is not executed either.
    let mut smuggled = req("POST", path, &[("Content-Length", "4"), te], b"0\r\n\r\n");
    smuggled.extend_from_slice(&post(path, b"smuggled"));
    let bad = [
        (req("POST", path, &[cl, te], chunks), "CL then TE".into()),
        (req("POST", path, &[te, cl], chunks), "TE then CL".into()),
        (smuggled, "CL+TE with a request behind it".into()),
    ];
    refused_before_reaching_a_consumer(&relay, path, &bad);
    bg.finish();
}

#[test]
fn two_different_content_lengths_are_400() {
    let relay = Relay::start();
    let bg = Background::start(&relay, "two-cl");
    let path = "/link/two-cl";
    let bad = [
        (
            req(
                "POST",
                path,
                &[("Content-Length", "5"), ("Content-Length", "6")],
                b"hello!",
            ),
            "Content-Length 5 and 6 on two lines".into(),
        ),
        (
            req("POST", path, &[("Content-Length", "5, 6")], b"hello!"),
            "Content-Length: 5, 6".into(),
        ),
    ];
    refused_before_reaching_a_consumer(&relay, path, &bad);
    bg.finish();
}

#[test]
fn transfer_encoding_other_than_chunked_is_501() {
    let relay = Relay::start();
    let bg = Background::start(&relay, "te-501");
    for te in ["gzip", "gzip, chunked", "deflate", "identity"] {
        let (_, r) = raw_exchange(
            &relay,
            &req(
                "POST",
                "/link/te",
                &[("Transfer-Encoding", te)],
                b"5\r\nhello\r\n0\r\n\r\n",
            ),
        );
        assert_error(&r, 501, &format!("Transfer-Encoding: {te}"));
    }
    assert_healthy(&relay, "after 501s");
    bg.finish();
}

#[test]
fn bad_chunk_framing_is_400_and_truncates_the_consumer() {
    let relay = Relay::start();
    let bg = Background::start(&relay, "chunk");
    let cases: [(&str, &[u8]); 6] = [
        (
            "a chunk size that overflows 64 bits",
            b"10000000000000000\r\n",
        ),
        (
            "a chunk size of twenty f's",
            b"ffffffffffffffffffff\r\nxx\r\n",
        ),
        ("a chunk size that is not hex", b"zz\r\nxx\r\n"),
        ("a chunk size with a non-hex digit", b"1g\r\nxx\r\n"),
        ("a chunk size written 0x10", b"0x10\r\n0123456789abcdef\r\n"),
        ("chunk data without its CRLF", b"5\r\nhelloXY0\r\n\r\n"),
    ];
    for (i, (what, bad)) in cases.iter().enumerate() {
        let path = format!("/link/chunk-{i}");
        let mut consumer = relay.connect();
        send_waiting(&mut consumer, &get(&path), "a link consumer");
        let mut body = b"3\r\nabc\r\n".to_vec();
        body.extend_from_slice(bad);
        let mut producer = relay.connect();
        producer.send(&req(
            "POST",
            &path,
            &[("Transfer-Encoding", "chunked")],
            &body,
        ));

        let done = producer.read_response();
        assert_error(&done, 400, what);
        assert!(
            producer.is_closed_by_peer(),
            "{what}: the producer's connection must close after 400"
        );
        let head = consumer.read_head();
        assert_eq!(head.status, 200, "{what}: consumer head");
        let got = consumer.read_body(&head, false);
        assert!(
            matches!(&got, Body::Truncated(b) if b"abchello".starts_with(b)),
            "{what}: the consumer's body must end truncated, got {got:?}"
        );
    }
    bg.finish();
}

#[test]
fn obs_fold_is_400() {
    let relay = Relay::start();
    let bg = Background::start(&relay, "obs-fold");
    assert_bad_request(
        &relay,
        b"GET /health HTTP/1.1\r\nHost: relay.test\r\nX-Folded: first\r\n  continued\r\n\r\n",
        "obs-fold with spaces",
    );
    assert_bad_request(
        &relay,
        b"GET /health HTTP/1.1\r\nHost: relay.test\r\nX-Folded: first\r\n\tcontinued\r\n\r\n",
        "obs-fold with a tab",
    );
    assert_bad_request(
        &relay,
        b"GET /health HTTP/1.1\r\n Host: relay.test\r\n\r\n",
        "a first header line starting with a space",
    );
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
    let (_, r) = raw_exchange(&relay, &req("GET", "/health", &[("X-Huge", &huge)], b""));
    assert_error(&r, 431, "one 17,000-byte field");
    let kb = "c".repeat(1000);
    let many: Vec<(String, &str)> = (0..20).map(|i| (format!("X-F{i}"), kb.as_str())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let (_, r) = raw_exchange(&relay, &req("GET", "/health", &many, b""));
    assert_error(&r, 431, "twenty 1,000-byte fields");
    let (_, r) = raw_exchange(&relay, &req("POST", &format!("/link/{huge}"), &[], b"x"));
    assert_error(&r, 431, "a 17,000-byte target");

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

/// RSS limit while clients refuse to read.
const STALL_RSS_KIB: u64 = 32 * 1024;

#[test]
fn link_consumer_that_never_reads_50_mib_is_cut_by_body_timeout() {
    let relay = Relay::start_flags(&["--body-timeout", "1"]);
    let bg = Background::start(&relay, "never-reads");
    let total: u64 = 50 * 1024 * 1024;
    let sampler = RssSampler::start(relay.pid());

    let mut consumer = relay.connect();
    send_waiting(&mut consumer, &get("/link/stall"), "a link consumer");
    let mut producer = relay.connect();
    producer.set_write_timeout(Duration::from_secs(20));
    let uploader = thread::spawn(move || {
        producer.send(&req(
            "POST",
            "/link/stall",
            &[("Content-Length", &total.to_string())],
            b"",
        ));
        let block = pattern(64 * 1024, 7);
        let mut sent = 0u64;
        let error = loop {
            if sent >= total {
                break None;
            }
            let n = (total - sent).min(block.len() as u64) as usize;
            match producer.try_send(&block[..n]) {
                Ok(()) => sent += n as u64,
                Err(e) => break Some(e),
            }
        };
        (producer, sent, error)
    });
    let (mut producer, sent, error) = uploader.join().expect("uploader thread");
    if let Some(e) = &error {
        assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the stalled producer was still open 20 s after it stopped making progress \
             ({sent} bytes sent)"
        );
    }
    // The producer's connection is closed with no success response.
    producer.set_read_timeout(WAIT);
    match producer.closed_within(WAIT) {
        None => panic!("the stalled producer's connection stayed open ({sent} bytes sent)"),
        Some(bytes) => assert!(
            !bytes.starts_with(b"HTTP/1.1 200"),
            "a producer cut by the body timeout got a success response"
        ),
    }
    let (peak, _) = sampler.finish();

    // The consumer finds its response truncated once it reads.
    let head = consumer.read_head();
    assert_eq!(head.status, 200);
    let mut received = 0u64;
    let (end, _) = consumer.stream_body(&head, false, 64 * 1024, |piece| {
        received += piece.len() as u64
    });
    assert_eq!(
        end,
        End::Truncated,
        "the non-reading consumer must be cut ({received} of {total} bytes arrived)"
    );
    assert!(received < total);
    eprintln!(
        "never-reading consumer: producer sent {sent} bytes, consumer got {received}, \
         relay RSS peak {peak} KiB"
    );
    assert!(
        peak < STALL_RSS_KIB,
        "relay RSS peaked at {peak} KiB with a consumer that never reads (limit {STALL_RSS_KIB})"
    );
    link_transfer(&relay, "/link/stall", b"after the stall");
    bg.finish();
}

#[test]
fn mcast_readers_that_never_read_are_cut_by_body_timeout() {
    let relay = Relay::start_flags(&["--body-timeout", "1"]);
    let bg = Background::start(&relay, "mcast-never-reads");
    let size = 8 * 1024 * 1024;
    let message = pattern(size, 3);
    let mut producer = relay.connect();
    let done = producer.exchange(&post("/mcast/stall", &message));
    assert_eq!(done.status(), 200, "storing the message: {:?}", done.head);

    let sampler = RssSampler::start(relay.pid());
    let mut readers: Vec<Conn> = (0..10)
        .map(|_| {
            let mut r = relay.connect();
            r.send(&get("/mcast/stall?seqid=0"));
            r
        })
        .collect();
    // Long enough for the readers to stall and for the 1 s body timeout to fire.
    thread::sleep(Duration::from_secs(3));
    let (peak, _) = sampler.finish();

    for (i, reader) in readers.iter_mut().enumerate() {
        let head = reader.read_head();
        assert_eq!(head.status, 200, "reader {i}");
        let body = reader.read_body(&head, false);
        assert!(
            !body.is_complete() && message.starts_with(body.bytes()),
            "reader {i}: the non-reading reader must be cut ({} of {size} bytes arrived, \
             complete: {})",
            body.bytes().len(),
            body.is_complete()
        );
    }
    eprintln!("never-reading mcast readers: relay RSS peak {peak} KiB");
    assert!(
        peak < STALL_RSS_KIB,
        "relay RSS peaked at {peak} KiB with 10 readers that never read an 8 MiB message \
         (limit {STALL_RSS_KIB})"
    );
    // A reader that does read still gets the whole message.
    let mut reader = relay.connect();
    let got = reader.exchange(&get("/mcast/stall?seqid=0"));
    assert_eq!(got.status(), 200);
    assert!(got.body() == &message[..], "mcast message corrupted");
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
fn reset_mid_body_truncates_the_consumer() {
    let relay = Relay::start();
    let bg = Background::start(&relay, "rst");
    let body = pattern(5000, 1);
    let mut consumer = relay.connect();
    send_waiting(&mut consumer, &get("/link/rst"), "a link consumer");
    let mut producer = relay.connect();
    producer.send(&req(
        "POST",
        "/link/rst",
        &[("Content-Length", "100000")],
        &body,
    ));
    park();
    producer.reset();
    let head = consumer.read_head();
    assert_eq!(head.status, 200);
    let got = consumer.read_body(&head, false);
    assert!(
        matches!(&got, Body::Truncated(b) if body.starts_with(b)),
        "the consumer must see a truncated prefix of the body, got {} bytes, complete: {}",
        got.bytes().len(),
        got.is_complete()
    );

    // Chunked upload reset mid-chunk.
    let mut consumer = relay.connect();
    send_waiting(&mut consumer, &get("/link/rst"), "a link consumer");
    let mut producer = relay.connect();
    let mut partial = chunked(&[&body], false);
    partial.extend_from_slice(b"1000\r\nabc");
    producer.send(&req(
        "POST",
        "/link/rst",
        &[("Transfer-Encoding", "chunked")],
        &partial,
    ));
    park();
    producer.reset();
    let head = consumer.read_head();
    assert_eq!(head.status, 200);
    let got = consumer.read_body(&head, false);
    assert!(
        !got.is_complete(),
        "chunked upload reset mid-chunk: the consumer's body must be truncated"
    );

    link_transfer(&relay, "/link/rst", b"after the reset");
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

#[test]
fn head_timeout_is_408() {
    let relay = Relay::start_flags(&["--head-timeout", "0.5"]);
    let bg = Background::start(&relay, "head-timeout");

    // A fresh connection that sends nothing is governed by the idle timeout (60 s),
    // not the head timeout.
    let mut quiet = relay.connect();

    // A head that stops halfway.
    let mut conn = relay.connect();
    conn.set_read_timeout(WAIT);
    conn.send(b"GET /health HTTP/1.1\r\nHost: relay.test\r\n");
    let r = conn.read_response();
    assert_error(&r, 408, "a stalled head");
    assert!(
        conn.is_closed_by_peer(),
        "the connection must close after 408"
    );

    // A head dribbled a byte every 50 ms keeps making progress but never completes
    // within 0.5 s of its first byte.
    let mut conn = relay.connect();
    let dribble = b"POST /link/dribble HTTP/1.1\r\nHost: relay.test\r\nX-Slow: yes\r\n";
    let mut writer = conn.writer();
    let dribbler = thread::spawn(move || {
        for b in dribble.iter() {
            // The relay may cut the connection halfway: stop at the first error.
            if writer.try_send(std::slice::from_ref(b)).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    });
    conn.set_read_timeout(WAIT);
    let r = conn.read_response();
    assert_error(&r, 408, "a dribbled head");
    dribbler.join().expect("dribbler");

    // After a completed request, a second head that stalls on keep-alive gets 408 too.
    let mut conn = relay.connect();
    assert_eq!(conn.exchange(&get("/health")).status(), 200);
    conn.send(b"GET /heal");
    conn.set_read_timeout(WAIT);
    let r = conn.read_response();
    assert_error(&r, 408, "a stalled second head");

    assert!(
        quiet.is_silent_for(Duration::from_millis(200)),
        "a connection that sent nothing was answered"
    );
    let r = quiet.exchange(&get("/health"));
    assert_eq!(r.status(), 200, "the quiet connection is still usable");
    bg.finish();
}

#[test]
fn idle_timeout_closes_silently() {
    let relay = Relay::start_flags(&["--idle-timeout", "0.5"]);
    let bg = Background::start(&relay, "idle-timeout");

    // A parked waiter is not idle.
    let mut waiter = relay.connect();
    waiter.send(&get("/link/idle"));

    // A fresh connection that sends nothing.
    let mut fresh = relay.connect();
    assert_eq!(
        fresh
            .closed_within(WAIT)
            .map(|b| String::from_utf8_lossy(&b).into_owned()),
        Some(String::new()),
        "a connection that sent nothing must be closed silently"
    );
    // A keep-alive connection after a response.
    let mut kept = relay.connect();
    assert_eq!(kept.exchange(&get("/health")).status(), 200);
    assert_eq!(
        kept.closed_within(WAIT)
            .map(|b| String::from_utf8_lossy(&b).into_owned()),
        Some(String::new()),
        "an idle keep-alive connection must be closed silently"
    );

    assert!(
        waiter.is_silent_for(Duration::from_millis(200)),
        "the parked waiter was answered or closed"
    );
    let mut producer = relay.connect();
    producer.send(&post("/link/idle", b"still parked"));
    let got = waiter.read_response();
    assert_eq!(got.status(), 200);
    assert_eq!(got.body(), b"still parked");
    assert_eq!(producer.read_response().status(), 200);
    bg.finish();
}

#[test]
fn wait_timeout_is_504() {
    let relay = Relay::start_flags(&["--wait-timeout", "0.5"]);
    let bg = Background::start(&relay, "wait-timeout");

    let waiters: [(&str, Vec<u8>); 5] = [
        ("a link consumer", get("/link/w")),
        ("a link producer", post("/link/wp", b"never consumed")),
        ("a sync peer", post("/sync/w", b"never swapped")),
        ("an mcast reader of an empty channel", get("/mcast/w")),
        ("an mcast reader of a future seqid", get("/mcast/w?seqid=5")),
    ];
    let mut conns: Vec<Conn> = waiters
        .iter()
        .map(|(_, request)| {
            let mut c = relay.connect();
            c.set_read_timeout(WAIT);
            c.send(request);
            c
        })
        .collect();
    for ((what, _), conn) in waiters.iter().zip(conns.iter_mut()) {
        let r = conn.read_response();
        assert_error(&r, 504, what);
    }

    // The expired waiters are gone: new parties pair with each other.
    let mut producer = relay.connect();
    send_waiting(
        &mut producer,
        &post("/link/w", b"fresh"),
        "a producer after the consumer expired",
    );
    let mut consumer = relay.connect();
    assert_eq!(consumer.exchange(&get("/link/w")).body(), b"fresh");
    assert_eq!(producer.read_response().status(), 200);
    let mut consumer = relay.connect();
    send_waiting(
        &mut consumer,
        &get("/link/wp"),
        "a consumer after the producer expired",
    );
    let mut producer = relay.connect();
    producer.send(&post("/link/wp", b"second"));
    assert_eq!(consumer.read_response().body(), b"second");
    assert_eq!(producer.read_response().status(), 200);
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

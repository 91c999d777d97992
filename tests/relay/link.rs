//! link: a producer and a consumer meet on a channel, first come first served
//! (PROTOCOL.md, link): pairing, FIFO queues, upload framing, keep-alive, parties
//! that leave, metadata headers, write secrets.

use std::time::Duration;

use super::support::{req, unix_ms, Body, Relay, Response};
use super::{get, park, post, send_parked, VERSION};

// 1
#[test]
fn link_pairs_producer_first() {
    let relay = Relay::start();
    let mut producer = relay.connect();
    send_parked(
        &mut producer,
        &req(
            "POST",
            "/link/t1",
            &[("Content-Type", "text/plain")],
            b"hello",
        ),
    );

    let mut consumer = relay.connect();
    let got = consumer.exchange(&get("/link/t1"));
    assert_eq!(got.status(), 200);
    assert_eq!(got.body(), b"hello");
    assert_eq!(got.header("Content-Type"), Some("text/plain"));
    assert_eq!(got.head.content_length(), Some(5));
    assert_eq!(got.header("HttpRelay-Method"), Some("POST"));
    assert_eq!(got.header("HttpRelay-Version"), Some(VERSION));

    let done = producer.read_response();
    assert_eq!(done.status(), 200);
    assert_eq!(done.body(), b"");
    assert_eq!(done.head.content_length(), Some(0));
    assert_eq!(done.header("HttpRelay-Method"), Some("GET"));
    assert_eq!(done.header("HttpRelay-Version"), Some(VERSION));
    assert_eq!(
        done.header("HttpRelay-Query"),
        None,
        "an empty consumer query is not reported"
    );
}

// 2
#[test]
fn link_pairs_consumer_first() {
    let relay = Relay::start();
    let mut consumer = relay.connect();
    send_parked(&mut consumer, &get("/link/t2"));

    let mut producer = relay.connect();
    producer.send(&req(
        "PUT",
        "/link/t2",
        &[("Content-Type", "application/octet-stream")],
        b"payload-2",
    ));
    let got = consumer.read_response();
    assert_eq!(got.status(), 200);
    assert_eq!(got.body(), b"payload-2");
    assert_eq!(got.header("Content-Type"), Some("application/octet-stream"));
    assert_eq!(got.head.content_length(), Some(9));
    assert_eq!(got.header("HttpRelay-Method"), Some("PUT"));

    let done = producer.read_response();
    assert_eq!(done.status(), 200);
    assert_eq!(done.body(), b"");
    assert_eq!(done.header("HttpRelay-Method"), Some("GET"));

    // A producer without Content-Type.
    let mut consumer = relay.connect();
    send_parked(&mut consumer, &get("/link/t2"));
    let mut producer = relay.connect();
    producer.send(&post("/link/t2", b"x"));
    let got = consumer.read_response();
    assert_eq!(got.body(), b"x");
    assert_eq!(producer.read_response().status(), 200);
}

// 3
#[test]
fn link_is_fifo_on_both_sides() {
    let relay = Relay::start();
    let bodies: [&[u8]; 3] = [b"p1", b"p2", b"p3"];

    // Producers queue first; consumers arrive one by one.
    let mut producers = Vec::new();
    for body in bodies {
        let mut p = relay.connect();
        p.send(&post("/link/fifo-a", body));
        park();
        producers.push(p);
    }
    for body in bodies {
        let mut c = relay.connect();
        let got = c.exchange(&get("/link/fifo-a"));
        assert_eq!(got.status(), 200);
        assert_eq!(got.body(), body, "consumers get producers in arrival order");
    }
    for mut p in producers {
        assert_eq!(p.read_response().status(), 200);
    }

    // Consumers queue first; producers arrive one by one.
    let mut consumers = Vec::new();
    for _ in 0..3 {
        let mut c = relay.connect();
        c.send(&get("/link/fifo-b"));
        park();
        consumers.push(c);
    }
    let mut producers = Vec::new();
    for body in bodies {
        let mut p = relay.connect();
        p.send(&post("/link/fifo-b", body));
        park();
        producers.push(p);
    }
    for (i, c) in consumers.iter_mut().enumerate() {
        let got = c.read_response();
        assert_eq!(got.status(), 200);
        assert_eq!(
            got.body(),
            bodies[i],
            "consumer {} (in arrival order) gets producer {}",
            i + 1,
            i + 1
        );
    }
    for mut p in producers {
        assert_eq!(p.read_response().status(), 200);
    }
}

// 6
#[test]
fn link_relays_chunked_upload_with_extensions_and_trailer() {
    let relay = Relay::start();
    let mut consumer = relay.connect();
    send_parked(&mut consumer, &get("/link/chunky"));

    let mut producer = relay.connect();
    let encoded = b"5;name=value\r\nhello\r\n\
        6;flag\r\n world\r\n\
        1A\r\nabcdefghijklmnopqrstuvwxyz\r\n\
        0;last=1\r\nX-Checksum: 42\r\nX-Other: yes\r\n\r\n";
    producer.send(&req(
        "POST",
        "/link/chunky",
        &[
            ("Content-Type", "text/plain"),
            ("Transfer-Encoding", "chunked"),
            ("Trailer", "X-Checksum, X-Other"),
        ],
        encoded,
    ));
    let got = consumer.read_response();
    assert_eq!(got.status(), 200);
    assert_eq!(got.body(), b"hello worldabcdefghijklmnopqrstuvwxyz");
    assert_eq!(got.header("Content-Type"), Some("text/plain"));
    let done = producer.read_response();
    assert_eq!(done.status(), 200);
    assert_eq!(done.body(), b"");

    // The producer connection is still usable after the trailer.
    let mut consumer = relay.connect();
    send_parked(&mut consumer, &get("/link/chunky"));
    producer.send(&post("/link/chunky", b"again"));
    assert_eq!(consumer.read_response().body(), b"again");
    assert_eq!(producer.read_response().status(), 200);
}

#[test]
fn large_chunks_go_through_the_pipe_and_arrive_byte_for_byte() {
    let relay = Relay::start();
    // Large chunks (spliced), small ones (copied), an extension and a
    // trailer; to an HTTP/1.1 consumer (re-chunked) and an HTTP/1.0 one (as
    // is, until close).
    let sizes = [70_000, 5, 1 << 20, 16_384, 16_383, 300_000, 3];
    let mut content = Vec::new();
    let mut encoded = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let piece: Vec<u8> = (0..size).map(|b| (b * 7 + i * 13) as u8).collect();
        let extension = if i == 5 { ";note=big" } else { "" };
        encoded.extend_from_slice(format!("{size:x}{extension}\r\n").as_bytes());
        encoded.extend_from_slice(&piece);
        encoded.extend_from_slice(b"\r\n");
        content.extend_from_slice(&piece);
    }
    encoded.extend_from_slice(b"0\r\nX-Sum: 1\r\n\r\n");
    let large: usize = sizes.iter().filter(|&&s| s >= 16_384).sum();
    for version in ["HTTP/1.1", "HTTP/1.0"] {
        let spliced_before = super::support::metric(&relay, "httprelay_spliced_bytes_total");
        let mut consumer = relay.connect();
        let request = format!("GET /link/big {version}\r\nHost: h\r\n\r\n");
        send_parked(&mut consumer, request.as_bytes());
        let mut producer = relay.connect();
        producer.send(&req(
            "POST",
            "/link/big",
            &[("Transfer-Encoding", "chunked")],
            b"",
        ));
        producer.send(&encoded);
        let got = consumer.read_response();
        assert_eq!(got.status(), 200, "{version}");
        assert!(
            got.body() == content.as_slice(),
            "{version}: the bytes differ"
        );
        assert_eq!(producer.read_response().status(), 200, "{version}");
        let spliced =
            super::support::metric(&relay, "httprelay_spliced_bytes_total") - spliced_before;
        // A large chunk's first bytes may be read with its size line: after
        // the head, or after a small chunk, up to an input buffer (16 KiB).
        assert!(
            spliced as usize >= large - 4 * (16 << 10),
            "{version}: {spliced} of the large chunks' {large} bytes went through the pipe"
        );
    }
}

// 7
#[test]
fn link_expect_100_continue() {
    let relay = Relay::start();
    let expect_head = req(
        "PUT",
        "/link/expect",
        &[("Expect", "100-continue"), ("Content-Length", "6")],
        b"",
    );

    // Consumer waiting: the producer gets 100 Continue before sending its body.
    let mut consumer = relay.connect();
    send_parked(&mut consumer, &get("/link/expect"));
    let mut producer = relay.connect();
    producer.send(&expect_head);
    let interim = producer.read_head();
    assert_eq!(interim.status, 100, "interim response: {interim:?}");
    assert_eq!(interim.version, "HTTP/1.1");
    producer.send(b"first!");
    let got = consumer.read_response();
    assert_eq!(got.status(), 200);
    assert_eq!(got.body(), b"first!");
    let done = producer.read_response();
    assert_eq!(done.status(), 200);

    // Producer first: the relay may hold the 100 until a consumer arrives, so the
    // consumer is sent before the producer waits for it.
    let mut producer = relay.connect();
    producer.send(&expect_head);
    park();
    let mut consumer = relay.connect();
    consumer.send(&get("/link/expect"));
    let interim = producer.read_head();
    assert_eq!(interim.status, 100, "interim response: {interim:?}");
    producer.send(b"second");
    let got = consumer.read_response();
    assert_eq!(got.status(), 200);
    assert_eq!(got.body(), b"second");
    assert_eq!(producer.read_response().status(), 200);
}

// 8
#[test]
fn link_keep_alive_1000_transfers_on_two_connections() {
    let relay = Relay::start();
    let mut producer = relay.connect();
    let mut consumer = relay.connect();
    for i in 0..1000 {
        let body = format!("message number {i}");
        let upload = req("POST", "/link/ka", &[], body.as_bytes());
        // Alternate which side arrives first.
        if i % 2 == 0 {
            producer.send(&upload);
            consumer.send(&get("/link/ka"));
        } else {
            consumer.send(&get("/link/ka"));
            producer.send(&upload);
        }
        let got = consumer.read_response();
        assert_eq!(got.status(), 200, "transfer {i}");
        assert_eq!(got.body(), body.as_bytes(), "transfer {i}");
        let done = producer.read_response();
        assert_eq!(done.status(), 200, "transfer {i}");
        assert_eq!(done.body(), b"", "transfer {i}");
        for r in [&got, &done] {
            assert!(
                !r.head.header_has_token("Connection", "close"),
                "transfer {i}: relay closed a keep-alive connection"
            );
        }
    }
}

// 10
#[test]
fn waiting_consumer_that_disconnects_is_never_matched() {
    let relay = Relay::start();
    let mut gone = relay.connect();
    gone.send(&get("/link/leave"));
    park();
    drop(gone);
    park();

    let mut consumer = relay.connect();
    send_parked(&mut consumer, &get("/link/leave"));
    let mut producer = relay.connect();
    producer.send(&post("/link/leave", b"for the live one"));
    let got = consumer.read_response();
    assert_eq!(got.status(), 200);
    assert_eq!(got.body(), b"for the live one");
    assert_eq!(producer.read_response().status(), 200);
}

// 10b
#[test]
fn waiting_producer_that_disconnects_is_never_matched() {
    let relay = Relay::start();
    let mut gone = relay.connect();
    gone.send(&post("/link/leave-p", b"stale"));
    park();
    drop(gone);
    park();

    let mut producer = relay.connect();
    send_parked(&mut producer, &post("/link/leave-p", b"fresh"));
    let mut consumer = relay.connect();
    let got = consumer.exchange(&get("/link/leave-p"));
    assert_eq!(got.status(), 200);
    assert_eq!(got.body(), b"fresh");
    assert_eq!(producer.read_response().status(), 200);
}

// 11
#[test]
fn producer_dying_mid_body_truncates_consumer_response() {
    let relay = Relay::start();

    // Declared Content-Length 1000, only 100 bytes sent.
    let mut consumer = relay.connect();
    send_parked(&mut consumer, &get("/link/die"));
    let mut producer = relay.connect();
    producer.send(&req(
        "POST",
        "/link/die",
        &[("Content-Length", "1000")],
        &[b'a'; 100],
    ));
    park();
    drop(producer);
    let head = consumer.read_head();
    assert_eq!(head.status, 200);
    let body = consumer.read_body(&head, false);
    assert!(
        matches!(&body, Body::Truncated(b) if b.len() <= 100),
        "consumer must see a truncated body, got {} bytes, complete: {}, head {head:?}",
        body.bytes().len(),
        body.is_complete()
    );

    // Chunked upload that stops inside a chunk, without the terminating zero chunk.
    let mut consumer = relay.connect();
    send_parked(&mut consumer, &get("/link/die-chunked"));
    let mut producer = relay.connect();
    let mut partial = b"64\r\n".to_vec();
    partial.extend_from_slice(&[b'b'; 100]);
    partial.extend_from_slice(b"\r\n64\r\n");
    partial.extend_from_slice(&[b'c'; 10]);
    producer.send(&req(
        "POST",
        "/link/die-chunked",
        &[("Transfer-Encoding", "chunked")],
        &partial,
    ));
    park();
    drop(producer);
    let head = consumer.read_head();
    assert_eq!(head.status, 200);
    let body = consumer.read_body(&head, false);
    assert!(
        matches!(&body, Body::Truncated(b) if b.len() <= 110),
        "consumer must see a truncated body, got {} bytes, complete: {}, head {head:?}",
        body.bytes().len(),
        body.is_complete()
    );
}

// 12
#[test]
fn metadata_headers_describe_the_counterpart() {
    let relay = Relay::start();
    let before = unix_ms();
    let mut producer = relay.connect();
    send_parked(
        &mut producer,
        &req(
            "POST",
            "/link/m?z=last&a=first+one&WSecret=s",
            &[("Content-Type", "text/x-producer")],
            b"meta",
        ),
    );
    let mut consumer = relay.connect();
    let got = consumer.exchange(&get("/link/m?b=2&a=1&wsecret=zz&SeqId=4"));
    let done = producer.read_response();
    let after = unix_ms();

    // The consumer learns about the producer, with content headers.
    assert_eq!(got.status(), 200);
    assert_eq!(got.body(), b"meta");
    assert_eq!(got.header("Content-Type"), Some("text/x-producer"));
    assert_eq!(got.head.content_length(), Some(4));
    assert_eq!(got.header("X-Real-IP"), Some("127.0.0.1"));
    assert_eq!(
        got.header("X-Real-Port"),
        Some(producer.local_port().to_string().as_str())
    );
    assert_eq!(got.header("HttpRelay-Method"), Some("POST"));
    assert_eq!(got.header("HttpRelay-Query"), Some("a=first+one&z=last"));
    assert_eq!(got.header("HttpRelay-Version"), Some(VERSION));

    // The producer learns about the consumer, without content headers.
    assert_eq!(done.status(), 200);
    assert_eq!(done.body(), b"");
    assert_eq!(done.head.content_length(), Some(0));
    assert_ne!(done.header("Content-Type"), Some("text/x-producer"));
    assert_eq!(done.header("X-Real-IP"), Some("127.0.0.1"));
    assert_eq!(
        done.header("X-Real-Port"),
        Some(consumer.local_port().to_string().as_str())
    );
    assert_eq!(done.header("HttpRelay-Method"), Some("GET"));
    assert_eq!(done.header("HttpRelay-Query"), Some("a=1&b=2"));
    assert_eq!(done.header("HttpRelay-Version"), Some(VERSION));

    // Times are Unix milliseconds; each side's "Your-Time" is the other's "Time".
    let ms = |r: &Response, name: &str| -> u64 {
        let v = r
            .header(name)
            .unwrap_or_else(|| panic!("missing {name}: {:?}", r.head));
        v.parse()
            .unwrap_or_else(|_| panic!("{name} is not Unix ms: {v:?}"))
    };
    let producer_time = ms(&got, "HttpRelay-Time");
    let consumer_time = ms(&got, "HttpRelay-Your-Time");
    assert_eq!(ms(&done, "HttpRelay-Time"), consumer_time);
    assert_eq!(ms(&done, "HttpRelay-Your-Time"), producer_time);
    for t in [producer_time, consumer_time] {
        assert!(
            (before..=after).contains(&t),
            "{t} not within [{before}, {after}]"
        );
    }
    assert!(producer_time <= consumer_time, "the producer arrived first");

    // A query made only of wsecret/seqid parameters is not reported at all.
    let mut producer = relay.connect();
    send_parked(&mut producer, &post("/link/m2", b"q"));
    let mut consumer = relay.connect();
    let got = consumer.exchange(&get("/link/m2?SEQID=1&WSECRET=2"));
    assert_eq!(got.body(), b"q");
    assert_eq!(got.header("HttpRelay-Query"), None);
    let done = producer.read_response();
    assert_eq!(done.header("HttpRelay-Query"), None);
}

// 17
#[test]
fn write_secret_claims_the_channel() {
    let relay = Relay::start();
    let transfer = |upload: Vec<u8>, expect: &[u8]| {
        let mut consumer = relay.connect();
        send_parked(&mut consumer, &get("/link/ws"));
        let mut producer = relay.connect();
        producer.send(&upload);
        let got = consumer.read_response();
        assert_eq!(got.status(), 200);
        assert_eq!(got.body(), expect);
        assert_eq!(producer.read_response().status(), 200);
    };
    let refused = |upload: Vec<u8>| {
        let mut producer = relay.connect();
        producer.set_read_timeout(Duration::from_secs(5));
        let r = producer.exchange(&upload);
        assert_eq!(r.status(), 401, "wrong or missing secret: {:?}", r.head);
    };

    // The first writer with a secret claims the channel (query parameter).
    transfer(post("/link/ws?wsecret=abc", b"one"), b"one");
    // Missing or different secrets are refused at once.
    refused(post("/link/ws", b"no secret"));
    refused(post("/link/ws?wsecret=abd", b"wrong query secret"));
    refused(req(
        "POST",
        "/link/ws",
        &[("HttpRelay-WSecret", "wrong")],
        b"wrong header secret",
    ));
    // The right secret, by header or by a query name in any case.
    transfer(
        req("POST", "/link/ws", &[("HttpRelay-WSecret", "abc")], b"two"),
        b"two",
    );
    transfer(post("/link/ws?WSecret=abc", b"three"), b"three");

    // The header claims a channel just as well.
    let mut consumer = relay.connect();
    send_parked(&mut consumer, &get("/link/ws-h"));
    let mut producer = relay.connect();
    producer.send(&req(
        "PUT",
        "/link/ws-h",
        &[("HttpRelay-WSecret", "hdr")],
        b"h",
    ));
    assert_eq!(consumer.read_response().body(), b"h");
    assert_eq!(producer.read_response().status(), 200);
    let mut producer = relay.connect();
    producer.set_read_timeout(Duration::from_secs(5));
    let r = producer.exchange(&post("/link/ws-h?wsecret=other", b"x"));
    assert_eq!(r.status(), 401);
}

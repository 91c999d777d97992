//! Loopback integration tests for the relay binary, written from `PROTOCOL.md`.
//!
//! Every test starts its own relay (`-a 127.0.0.1 -p 0`) and talks raw HTTP/1.1 to it
//! with the blocking client in `support`. "The waiter is parked" is approximated by a
//! short pause after sending its request; no assertion depends on timing.

mod support;

mod browser;
mod hostile;
mod mcast;
mod memory;
mod ops;
mod proxy;
mod readme;
mod sharding;
mod stress;
mod sync;
mod trust;

use std::thread;
use std::time::Duration;

use support::{req, unix_ms, Addr, Body, Conn, End, Relay, RssSampler, PARK};

const VERSION: &str = "0.1.0";
const EXPOSE: &str = "Content-Length, X-Real-IP, X-Real-Port, HttpRelay-Version, \
HttpRelay-Time, HttpRelay-Your-Time, HttpRelay-Method, HttpRelay-Query";
const ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, SERVE";

fn park() {
    thread::sleep(PARK);
}

fn get(path: &str) -> Vec<u8> {
    req("GET", path, &[], b"")
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    req("POST", path, &[], body)
}

/// Sends `request` and checks that no response arrives while it is parked.
fn send_parked(conn: &mut Conn, request: &[u8]) {
    conn.send(request);
    assert!(
        conn.is_silent_for(PARK),
        "a lone link party must wait for its counterpart, but the relay answered"
    );
}

/// Deterministic body pattern: byte `i` is `i % 251`.
const PERIOD: usize = 251;

fn pattern_block() -> Vec<u8> {
    // A whole number of periods plus one extra period, so that any window of
    // `PERIOD * 256` bytes starting at any phase is a slice of it.
    (0..PERIOD * 257).map(|i| (i % PERIOD) as u8).collect()
}

/// Writes `total` pattern bytes to `conn` in blocks.
fn send_pattern(conn: &mut Conn, total: u64) {
    let block = pattern_block();
    let step = (PERIOD * 256) as u64;
    let mut sent = 0u64;
    while sent < total {
        let n = step.min(total - sent) as usize;
        conn.send(&block[..n]);
        sent += n as u64;
    }
}

/// Checks streamed pieces against the pattern; remembers the first mismatch and a
/// Fletcher-style checksum over little-endian 8-byte words of the whole stream
/// (independent of how the stream was split into pieces).
struct PatternCheck {
    block: Vec<u8>,
    offset: u64,
    first_mismatch: Option<u64>,
    pending: Vec<u8>,
    sum1: u64,
    sum2: u64,
}

impl PatternCheck {
    fn new() -> PatternCheck {
        PatternCheck {
            block: pattern_block(),
            offset: 0,
            first_mismatch: None,
            pending: Vec::with_capacity(8),
            sum1: 0,
            sum2: 0,
        }
    }

    fn feed(&mut self, mut piece: &[u8]) {
        while !piece.is_empty() {
            let phase = (self.offset % PERIOD as u64) as usize;
            let n = piece.len().min(PERIOD * 256);
            if self.first_mismatch.is_none() && piece[..n] != self.block[phase..phase + n] {
                let at = piece[..n]
                    .iter()
                    .zip(&self.block[phase..])
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                self.first_mismatch = Some(self.offset + at as u64);
            }
            self.sum_words(&piece[..n]);
            self.offset += n as u64;
            piece = &piece[n..];
        }
    }

    fn sum_words(&mut self, mut bytes: &[u8]) {
        if !self.pending.is_empty() {
            let take = (8 - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() < 8 {
                return;
            }
            let word: [u8; 8] = self.pending[..].try_into().unwrap();
            self.add_word(word);
            self.pending.clear();
        }
        let words = bytes.chunks_exact(8);
        self.pending.extend_from_slice(words.remainder());
        for word in words {
            self.add_word(word.try_into().unwrap());
        }
    }

    fn add_word(&mut self, word: [u8; 8]) {
        self.sum1 = self.sum1.wrapping_add(u64::from_le_bytes(word));
        self.sum2 = self.sum2.wrapping_add(self.sum1);
    }

    fn checksum(&self) -> (u64, u64) {
        let mut check = (self.sum1, self.sum2);
        if !self.pending.is_empty() {
            let mut word = [0u8; 8];
            word[..self.pending.len()].copy_from_slice(&self.pending);
            check.0 = check.0.wrapping_add(u64::from_le_bytes(word));
            check.1 = check.1.wrapping_add(check.0);
        }
        check
    }
}

/// The checksum `PatternCheck` computes for `total` pattern bytes.
fn expected_checksum(total: u64) -> (u64, u64) {
    let mut check = PatternCheck::new();
    let block = pattern_block();
    let step = (PERIOD * 256) as u64;
    let mut fed = 0u64;
    while fed < total {
        let n = step.min(total - fed) as usize;
        check.feed(&block[..n]);
        fed += n as u64;
    }
    check.checksum()
}

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

/// Streams `total` pattern bytes from a producer to a consumer reading `max_read`
/// bytes at a time (sleeping `pause` after each read), sampling the relay's RSS.
/// Returns the relay's peak RSS in KiB.
fn stream_through(relay: &Relay, id: &str, total: u64, max_read: usize, pause: Duration) -> u64 {
    let path = format!("/link/{id}");
    let mut consumer = relay.connect();
    send_parked(&mut consumer, &get(&path));

    let baseline_kib = relay.rss_kib();
    let sampler = RssSampler::start(relay.pid());
    let addr = relay.addr().clone();
    let producer_path = path.clone();
    let producer = thread::spawn(move || {
        let mut p = Conn::open(&addr);
        p.send(&req(
            "POST",
            &producer_path,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", &total.to_string()),
            ],
            b"",
        ));
        send_pattern(&mut p, total);
        p.read_response()
    });

    let head = consumer.read_head();
    assert_eq!(head.status, 200);
    assert_eq!(head.content_length(), Some(total));
    let mut check = PatternCheck::new();
    let (end, received) = consumer.stream_body(&head, false, max_read, |piece| {
        check.feed(piece);
        if !pause.is_zero() {
            thread::sleep(pause);
        }
    });
    let (peak_kib, samples) = sampler.finish();
    let done = producer.join().expect("producer thread");

    assert_eq!(end, End::Complete);
    assert_eq!(received, total, "byte count");
    assert_eq!(check.first_mismatch, None, "first corrupted byte offset");
    assert_eq!(check.checksum(), expected_checksum(total), "checksum");
    assert_eq!(done.status(), 200);
    assert!(samples > 0, "RSS was never sampled");
    eprintln!("{id}: relay RSS {baseline_kib} KiB before, peak {peak_kib} KiB during the transfer");
    peak_kib
}

// 4
#[test]
fn link_streams_200_mib_in_bounded_memory() {
    let relay = Relay::start();
    let total = 200 * 1024 * 1024;
    let peak = stream_through(&relay, "big", total, 64 * 1024, Duration::ZERO);
    assert!(
        peak < 16 * 1024,
        "relay RSS peaked at {peak} KiB while streaming 200 MiB (limit 16 MiB)"
    );
}

// 5
#[test]
fn link_slow_consumer_gets_intact_bytes_in_bounded_memory() {
    let relay = Relay::start();
    let total = 4 * 1024 * 1024;
    let peak = stream_through(&relay, "slow", total, 16 * 1024, Duration::from_millis(3));
    assert!(
        peak < 16 * 1024,
        "relay RSS peaked at {peak} KiB with a slow consumer (limit 16 MiB)"
    );
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
    let ms = |r: &support::Response, name: &str| -> u64 {
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

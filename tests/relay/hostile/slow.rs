//! Slow and silent clients: the head, idle, wait and body timeouts, and readers
//! that never read.

use std::thread;
use std::time::Duration;

use super::{assert_error, link_transfer, pattern};
use crate::support::{req, send_waiting, Background, Conn, End, Relay, RssSampler};
use crate::{get, post};

/// How long a test waits for a timeout-driven answer or close (the timeouts under test
/// are 0.5 s or 1 s; this only bounds a hang).
const WAIT: Duration = Duration::from_secs(5);

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

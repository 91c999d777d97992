//! Large and slow link transfers: every byte arrives intact and the relay's
//! memory stays bounded.

use std::thread;
use std::time::Duration;

use super::support::{bounded_rss_kib, req, Conn, End, Relay, RssSampler};
use super::{get, send_parked};

/// Deterministic body pattern: byte `i` is `i % 251`.
const PERIOD: usize = 251;

fn pattern_block() -> Vec<u8> {
    // A whole number of periods plus one extra period, so that any window of
    // `PERIOD * 256` bytes starting at any phase is a slice of it.
    (0..PERIOD * 257).map(|i| (i % PERIOD) as u8).collect()
}

/// Writes `total` pattern bytes to `conn` in blocks.
pub(super) fn send_pattern(conn: &mut Conn, total: u64) {
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
pub(super) struct PatternCheck {
    block: Vec<u8>,
    offset: u64,
    pub(super) first_mismatch: Option<u64>,
    pending: Vec<u8>,
    sum1: u64,
    sum2: u64,
}

impl PatternCheck {
    pub(super) fn new() -> PatternCheck {
        PatternCheck {
            block: pattern_block(),
            offset: 0,
            first_mismatch: None,
            pending: Vec::with_capacity(8),
            sum1: 0,
            sum2: 0,
        }
    }

    pub(super) fn feed(&mut self, mut piece: &[u8]) {
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

    pub(super) fn checksum(&self) -> (u64, u64) {
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
pub(super) fn expected_checksum(total: u64) -> (u64, u64) {
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

/// Streams `total` pattern bytes from a producer to a consumer reading `max_read`
/// bytes at a time (sleeping `pause` after each read), sampling the relay's RSS.
/// Returns the relay's peak RSS in KiB (under emulation, its growth: see
/// `bounded_rss_kib`).
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
    bounded_rss_kib(peak_kib, baseline_kib)
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

/// Reads from `s` until `want` body bytes have come after the response head
/// (or the read times out); returns how many came.
fn body_bytes_within(s: &mut std::net::TcpStream, seen: &mut Vec<u8>, want: usize) -> usize {
    use std::io::Read;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let body = seen
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(0, |i| seen.len() - i - 4);
        if body >= want {
            return body;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return body,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn streamed_bytes_reach_the_receiver_while_the_producer_pauses() {
    use std::io::Write;
    use std::sync::mpsc;
    // The consumer does not read at first, so the relay passes only part of
    // the first burst and leaves the rest in the producer's socket (the
    // producer then waits, blocked or paused). When the consumer reads,
    // that rest must come with no new byte from the producer to wake the
    // relay for it. Nor may a small piece sent after the pause wait.
    let relay = Relay::start();
    // A first large piece read at once lets the relay's receive buffer grow
    // (the kernel tunes it to the pace of reading), so that the second
    // piece can lie in the relay's socket whole while the consumer waits.
    let pieces = [64 << 20, 6 << 20, 10, 1 << 20];
    let total: usize = pieces.iter().sum();
    let mut consumer = std::net::TcpStream::connect(relay.tcp_addr()).unwrap();
    consumer
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    consumer
        .write_all(b"GET /link/pausing HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    thread::sleep(Duration::from_millis(50));
    let mut producer = std::net::TcpStream::connect(relay.tcp_addr()).unwrap();
    let head = format!("POST /link/pausing HTTP/1.1\r\nHost: h\r\nContent-Length: {total}\r\n\r\n");
    producer.write_all(head.as_bytes()).unwrap();
    let (go, next) = mpsc::channel::<()>();
    let writer = thread::spawn(move || {
        for piece in pieces {
            if next.recv().is_err() || producer.write_all(&vec![b'p'; piece]).is_err() {
                return;
            }
        }
        // Held open until the test ends: the body is complete without a close.
        let _ = next.recv();
    });
    let mut seen = Vec::new();
    let mut sent = 0;
    for (i, piece) in pieces.into_iter().enumerate() {
        go.send(()).unwrap();
        sent += piece;
        if i == 1 {
            // Not reading yet: the relay fills what the consumer's side holds.
            thread::sleep(Duration::from_millis(300));
        }
        assert_eq!(
            body_bytes_within(&mut consumer, &mut seen, sent),
            sent,
            "the producer paused after {sent} bytes; the consumer got fewer within 5 s"
        );
    }
    drop(go);
    writer.join().unwrap();
}

//! mcast as a live stream (Server-Sent Events) over real sockets: readers get
//! every message in order, and a thousand of them cost the relay what the
//! memory bound of docs/memory.md allows.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use httprelay::bound::MemoryBound;
use httprelay::config::{parse, Command};

use super::support::{Relay, RssSampler, PARK};
use super::{get, post};

/// How long a reader waits for all its events.
const DEADLINE: Duration = Duration::from_secs(60);

/// One stream reader on a non-blocking socket: what arrived, dechunked as
/// it comes.
struct Reader {
    socket: TcpStream,
    raw: Vec<u8>,
    /// Where the next chunk begins in `raw` (after the head).
    next_chunk: Option<usize>,
    /// The event stream so far (the content of the complete chunks).
    text: Vec<u8>,
    /// Complete events in `text` (each ends with a blank line; the test's
    /// messages have none inside).
    complete: usize,
}

impl Reader {
    fn open(addr: SocketAddr, id: &str) -> Reader {
        let mut socket = TcpStream::connect(addr).expect("connect");
        let request =
            format!("GET /mcast/{id} HTTP/1.1\r\nHost: r\r\nAccept: text/event-stream\r\n\r\n");
        socket.write_all(request.as_bytes()).expect("send");
        socket.set_nonblocking(true).expect("non-blocking");
        Reader {
            socket,
            raw: Vec::new(),
            next_chunk: None,
            text: Vec::new(),
            complete: 0,
        }
    }

    fn is_open(&self) -> bool {
        self.next_chunk.is_some()
    }

    /// Reads what the socket holds and dechunks it; false once it is closed.
    fn pull(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let mut open = true;
        loop {
            match self.socket.read(&mut chunk) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(n) => self.raw.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("stream read: {e}"),
            }
        }
        if self.next_chunk.is_none() {
            if let Some(at) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.raw[..at]);
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                assert!(
                    head.contains("\r\nContent-Type: text/event-stream"),
                    "{head}"
                );
                assert!(head.contains("\r\nTransfer-Encoding: chunked"), "{head}");
                self.next_chunk = Some(at + 4);
            }
        }
        while let Some(at) = self.next_chunk {
            let body = &self.raw[at..];
            let Some(line) = body.windows(2).position(|w| w == b"\r\n") else {
                break;
            };
            let size = std::str::from_utf8(&body[..line]).expect("a chunk-size line");
            let size = usize::from_str_radix(size, 16).expect("a chunk size");
            if size == 0 || body.len() < line + 2 + size + 2 {
                break;
            }
            let from = self.text.len().saturating_sub(1);
            self.text
                .extend_from_slice(&body[line + 2..line + 2 + size]);
            self.complete += self.text[from..]
                .windows(2)
                .filter(|w| w == b"\n\n")
                .count();
            self.next_chunk = Some(at + line + 2 + size + 2);
        }
        open
    }

    fn events(&self) -> &str {
        std::str::from_utf8(&self.text).expect("UTF-8 events")
    }
}

/// The body of message `n`: `len` bytes of text naming it.
fn message(n: u64, len: usize) -> Vec<u8> {
    let mut body = format!("message {n}:").into_bytes();
    body.resize(len, b'a' + (n % 26) as u8);
    body
}

/// The expected event for message `n`.
fn event(n: u64, len: usize) -> String {
    let body = String::from_utf8(message(n, len)).unwrap();
    format!("id: {n}\ndata: {body}\n\n")
}

/// Reads every reader until each has `count` events or the deadline passes.
fn read_all(readers: &mut [Reader], count: usize) {
    let start = Instant::now();
    loop {
        let mut done = true;
        for reader in readers.iter_mut() {
            assert!(reader.pull(), "a stream closed");
            done &= reader.complete >= count;
        }
        if done {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "readers still short of {count} events"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

fn publish(relay: &Relay, id: &str, body: &[u8]) {
    let mut conn = relay.connect();
    assert_eq!(
        conn.exchange(&post(&format!("/mcast/{id}"), body)).status(),
        200
    );
}

#[test]
fn three_readers_get_twenty_messages_in_order() {
    let relay = Relay::start();
    let mut readers: Vec<Reader> = (0..3)
        .map(|_| Reader::open(relay.tcp_addr(), "live"))
        .collect();
    thread::sleep(PARK);
    for n in 0..20 {
        publish(&relay, "live", &message(n, 40));
    }
    read_all(&mut readers, 20);
    let expected: String = (0..20).map(|n| event(n, 40)).collect();
    for reader in &readers {
        assert_eq!(reader.events(), expected);
    }
    let metrics = relay.connect().exchange(&get("/metrics")).text();
    for line in [
        "httprelay_sse_streams 3\n",
        "httprelay_sse_events_total 60\n",
    ] {
        assert!(metrics.contains(line), "{line:?} in {metrics}");
    }
}

/// Flags of the thousand-reader run: room for the readers, small totals.
const FLAGS: [&str; 14] = [
    "--max-conns",
    "1100",
    "--max-head",
    "4096",
    "--mcast-total",
    "1000000",
    "--mcast-retain",
    "200000",
    "--sync-total",
    "100000",
    "--max-channels",
    "100",
    "--mcast-max-message",
    "100000",
];

#[test]
fn a_stream_to_1000_readers_keeps_rss_within_the_bound() {
    const READERS: usize = 1000;
    const MESSAGES: u64 = 50;
    const LEN: usize = 4000;
    let Ok(Command::Run(config)) = parse(FLAGS.iter().map(Into::into), None) else {
        panic!("the test's flags parse");
    };
    let bound = MemoryBound::new(&config, 1100).total() / 1024;
    let relay = Relay::start_flags(&FLAGS);
    let before = relay.rss_kib();
    let mut readers: Vec<Reader> = (0..READERS)
        .map(|_| Reader::open(relay.tcp_addr(), "wide"))
        .collect();
    let start = Instant::now();
    while readers.iter_mut().any(|r| {
        assert!(r.pull(), "a stream closed");
        !r.is_open()
    }) {
        assert!(start.elapsed() < DEADLINE, "streams not all open");
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(PARK);
    let idle = relay.rss_kib();
    let per_stream = (idle.saturating_sub(before) * 1024) / READERS as u64;
    eprintln!(
        "sse: RSS {before} KiB before, {idle} KiB with {READERS} idle streams: {per_stream} B per stream"
    );
    let sampler = RssSampler::start(relay.pid());
    // The readers read beside the publisher, as browsers would.
    let reading = thread::spawn(move || {
        read_all(&mut readers, MESSAGES as usize);
        readers
    });
    for n in 0..MESSAGES {
        publish(&relay, "wide", &message(n, LEN));
    }
    let readers = reading.join().expect("the readers");
    let (peak, samples) = sampler.finish();
    let expected: String = (0..MESSAGES).map(|n| event(n, LEN)).collect();
    for reader in &readers {
        assert_eq!(reader.events(), expected, "every event, in order");
    }
    eprintln!(
        "sse: peak RSS {peak} KiB over {samples} samples with {READERS} streams; bound {bound} KiB"
    );
    assert!(samples > 0);
    assert!(
        peak <= bound,
        "peak RSS {peak} KiB over the bound {bound} KiB"
    );
    assert!(
        per_stream <= 4096,
        "an idle stream costs {per_stream} B, more than a connection's fixed part"
    );
}

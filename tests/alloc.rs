//! Heap allocations on the link hot path once connections are warm.
//!
//! A counting global allocator (per test binary, hence this separate file)
//! wraps `System` and counts every `alloc`, `alloc_zeroed` and `realloc` made
//! on the relay's event-loop thread, which runs in this process
//! (`Server::bind` + `run` on a spawned thread that marks itself). The client
//! side is allocation-free in the measured window as well (pre-built requests,
//! fixed read buffers), and its count is printed too, as a cross-check.
//!
//! On failure the test prints backtraces of the first few counted allocations;
//! run it in the debug profile for symbols:
//!
//!     cargo test --test alloc -- --nocapture

use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::Cell;
use std::ffi::OsString;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::Duration;

use httprelay::config::{self, Command};
use httprelay::server::Server;

/// Allocations made on the relay thread.
static RELAY_ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Allocations made on any thread.
static ALL_ALLOCS: AtomicU64 = AtomicU64::new(0);
/// While set, the first `TRACE_MAX` relay-thread allocations record a backtrace.
static TRACING: AtomicBool = AtomicBool::new(false);
static TRACED: AtomicUsize = AtomicUsize::new(0);
const TRACE_MAX: usize = 8;
static TRACES: Mutex<Vec<(usize, Backtrace)>> = Mutex::new(Vec::new());

thread_local! {
    /// Set on the relay's event-loop thread.
    static ON_RELAY: Cell<bool> = const { Cell::new(false) };
    /// Set while the allocator itself records a backtrace (its own allocations
    /// are neither counted nor traced).
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

struct Counting;

impl Counting {
    fn count(size: usize) {
        if IN_HOOK.try_with(Cell::get).unwrap_or(true) {
            return;
        }
        ALL_ALLOCS.fetch_add(1, Ordering::Relaxed);
        if !ON_RELAY.try_with(Cell::get).unwrap_or(false) {
            return;
        }
        RELAY_ALLOCS.fetch_add(1, Ordering::Relaxed);
        if TRACING.load(Ordering::Relaxed) && TRACED.fetch_add(1, Ordering::Relaxed) < TRACE_MAX {
            IN_HOOK.with(|h| h.set(true));
            let trace = Backtrace::force_capture();
            if let Ok(mut traces) = TRACES.lock() {
                traces.push((size, trace));
            }
            IN_HOOK.with(|h| h.set(false));
        }
    }
}

// SAFETY: every call is forwarded unchanged to `System`; counting touches only
// atomics and const-initialised thread-locals (no allocation), and the
// backtrace path guards against re-entry with `IN_HOOK`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Counting::count(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Counting::count(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Counting::count(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WARM_UP: usize = 200;
const MEASURED: u64 = 1_000;
const BODY_LEN: usize = 64;

/// Starts the relay on its own thread (marked as the relay thread) and returns
/// its port. `Server` has no accessor for its bound address (it only prints it
/// on stderr), so a free port is found by binding and dropping a listener.
fn start_relay() -> u16 {
    for _ in 0..20 {
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").expect("bind a probe listener");
            probe.local_addr().expect("probe address").port()
        };
        let (tx, rx) = mpsc::channel::<Result<(), String>>();
        thread::Builder::new()
            .name("relay".into())
            .spawn(move || {
                ON_RELAY.with(|f| f.set(true));
                let args: Vec<OsString> = [
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "--idle-timeout",
                    "600",
                ]
                .iter()
                .map(OsString::from)
                .collect();
                let config = match config::parse(args, None) {
                    Ok(Command::Run(config)) => config,
                    other => {
                        let _ = tx.send(Err(format!("unexpected parse result: {other:?}")));
                        return;
                    }
                };
                let mut server = match Server::bind(&config) {
                    Ok(server) => server,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = tx.send(Ok(()));
                if let Err(e) = server.run() {
                    eprintln!("relay thread: {e}");
                }
            })
            .expect("spawn the relay thread");
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => return port,
            // Another process took the port between probe and bind: try again.
            Ok(Err(e)) => eprintln!("relay bind on port {port} failed: {e}; retrying"),
            Err(e) => panic!("relay thread did not start: {e}"),
        }
    }
    panic!("could not bind the relay to a free port");
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the relay");
    s.set_nodelay(true).expect("TCP_NODELAY");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    s
}

/// Reads one HTTP response into a fixed buffer, without allocating; returns
/// the status and the body bytes (only `Content-Length` framing is expected).
struct Reader {
    buf: [u8; 8192],
    len: usize,
}

impl Reader {
    fn new() -> Reader {
        Reader {
            buf: [0; 8192],
            len: 0,
        }
    }

    fn response(&mut self, s: &mut TcpStream) -> (u16, usize) {
        loop {
            if let Some(head_end) = find(&self.buf[..self.len], b"\r\n\r\n") {
                let head = &self.buf[..head_end];
                let status = parse_status(head);
                let body = content_length(head).expect("a Content-Length response");
                let total = head_end + 4 + body;
                assert!(total <= self.buf.len(), "response larger than the buffer");
                while self.len < total {
                    self.fill(s);
                }
                // Keep anything after this response (nothing is expected).
                self.buf.copy_within(total..self.len, 0);
                self.len -= total;
                return (status, body);
            }
            assert!(self.len < self.buf.len(), "response head too large");
            self.fill(s);
        }
    }

    fn fill(&mut self, s: &mut TcpStream) {
        match s.read(&mut self.buf[self.len..]) {
            Ok(0) => panic!("relay closed the connection"),
            Ok(n) => self.len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read from the relay: {e}"),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_status(head: &[u8]) -> u16 {
    // "HTTP/1.1 200 ..."
    head.get(9..12)
        .and_then(|d| {
            d.iter().try_fold(0u16, |acc, &b| {
                b.is_ascii_digit().then(|| acc * 10 + u16::from(b - b'0'))
            })
        })
        .expect("a status line")
}

fn content_length(head: &[u8]) -> Option<usize> {
    const NAME: &[u8] = b"content-length:";
    head.split(|&b| b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() < NAME.len() || !line[..NAME.len()].eq_ignore_ascii_case(NAME) {
            return None;
        }
        let value = line[NAME.len()..].trim_ascii();
        value.iter().try_fold(0usize, |acc, &b| {
            b.is_ascii_digit().then(|| acc * 10 + usize::from(b - b'0'))
        })
    })
}

#[test]
fn warm_link_transfers_do_not_allocate_on_the_relay_thread() {
    let port = start_relay();
    let mut consumer = connect(port);
    let mut producer = connect(port);

    let get: &[u8] = b"GET /link/alloc HTTP/1.1\r\nHost: relay\r\n\r\n";
    let mut post = Vec::new();
    post.extend_from_slice(
        b"POST /link/alloc HTTP/1.1\r\nHost: relay\r\nContent-Type: application/octet-stream\r\n",
    );
    post.extend_from_slice(format!("Content-Length: {BODY_LEN}\r\n\r\n").as_bytes());
    post.extend_from_slice(&[b'x'; BODY_LEN]);
    let post: &[u8] = &post;
    let mut consumer_in = Reader::new();
    let mut producer_in = Reader::new();

    // One link transfer: the consumer's GET first, then the producer's POST;
    // the consumer gets the body, the producer its empty 200.
    let mut transfer = || {
        consumer.write_all(get).expect("write GET");
        producer.write_all(post).expect("write POST");
        let (status, body) = consumer_in.response(&mut consumer);
        assert_eq!((status, body), (200, BODY_LEN), "consumer response");
        let (status, body) = producer_in.response(&mut producer);
        assert_eq!((status, body), (200, 0), "producer response");
    };

    for _ in 0..WARM_UP {
        transfer();
    }
    let relay_before = RELAY_ALLOCS.load(Ordering::SeqCst);
    let all_before = ALL_ALLOCS.load(Ordering::SeqCst);
    TRACING.store(true, Ordering::SeqCst);
    for _ in 0..MEASURED {
        transfer();
    }
    TRACING.store(false, Ordering::SeqCst);
    let relay = RELAY_ALLOCS.load(Ordering::SeqCst) - relay_before;
    let all = ALL_ALLOCS.load(Ordering::SeqCst) - all_before;

    println!(
        "link hot path: {relay} relay-thread allocations in {MEASURED} warm transfers \
         ({:.3} per transfer); all threads: {all} ({:.3} per transfer)",
        relay as f64 / MEASURED as f64,
        all as f64 / MEASURED as f64,
    );
    if relay != 0 {
        let traces = TRACES.lock().unwrap();
        for (i, (size, trace)) in traces.iter().enumerate() {
            eprintln!("--- counted relay allocation #{i} ({size} bytes):\n{trace}");
        }
    }
    assert_eq!(
        relay,
        0,
        "the relay thread allocated {:.3} times per warm link transfer ({relay} in {MEASURED})",
        relay as f64 / MEASURED as f64
    );
}

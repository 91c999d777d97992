//! `cargo bench --bench relay`: the release relay against two baselines that
//! need no relay logic, measured in the same run, interleaved (A B C A B C ...),
//! medians over runs; prints one table with the issue's targets (issue 7).
//!
//! Baselines, implemented here as threads of this process:
//! - `io::copy`: a blocking TCP forwarder; it pairs accepted connections
//!   2k (producer) and 2k+1 (consumer) and runs `std::io::copy` from one to
//!   the other on a thread per pair (8 KiB buffer on sockets).
//! - `256 KiB`: the same with a 256 KiB read buffer and `write_all`.
//!
//! The client writes a body to the producer connection and reads it from the
//! consumer connection in both cases; against the relay it speaks HTTP/1.1
//! keep-alive (`GET /link/id` on the consumer, `POST /link/id` on the producer).
//!
//! Environment:
//! - `HTTPRELAY_BENCH_QUICK=1`: small counts, for a smoke run under a minute.
//! - `HTTPRELAY_BENCH_RUNS=N`: runs per figure (default 5, quick 3).
//! - `HTTPRELAY_BENCH_ONLY=latency,pairs,stream,fanout,memory,footprint`.
//! - `HTTPRELAY_BENCH_CLIENTS=N`: client threads driving the pairs (default 1).
//! - `HTTPRELAY_BENCH_BIN=PATH`: another relay binary (e.g. one with symbols,
//!   for `perf record -p`); the footprint rows still describe this build's.
//!
//! Nothing here asserts on timing: it is a report.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

type Res<T> = Result<T, String>;

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
/// Body size for latency and pair throughput.
const SMALL: usize = 64;
/// Mcast fan-out message size.
const FAN_MESSAGE: usize = 1024;
/// Client write unit for streaming (one chunk when chunked).
const STREAM_UNIT: usize = MIB as usize;
/// Any client socket read blocks at most this long.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

// ---- plan ----------------------------------------------------------------------

struct Plan {
    quick: bool,
    runs: usize,
    latency_exchanges: usize,
    pairs: usize,
    pair_secs: f64,
    stream_bytes: u64,
    fan_readers: usize,
    waiter_targets: [usize; 2],
    /// Client threads driving the pairs (event-driven).
    client_threads: usize,
    only: Option<Vec<String>>,
}

impl Plan {
    fn from_env() -> Plan {
        let quick = std::env::var("HTTPRELAY_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let runs = std::env::var("HTTPRELAY_BENCH_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n: &usize| n > 0)
            .unwrap_or(if quick { 3 } else { 5 });
        let client_threads = std::env::var("HTTPRELAY_BENCH_CLIENTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let only = std::env::var("HTTPRELAY_BENCH_ONLY")
            .ok()
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
        if quick {
            Plan {
                quick,
                runs,
                latency_exchanges: 2_000,
                pairs: 64,
                pair_secs: 1.0,
                stream_bytes: 256 * MIB,
                fan_readers: 1_000,
                waiter_targets: [2_000, 5_000],
                client_threads,
                only,
            }
        } else {
            Plan {
                quick,
                runs,
                latency_exchanges: 20_000,
                pairs: 64,
                pair_secs: 10.0,
                stream_bytes: 2 * GIB,
                fan_readers: 1_000,
                waiter_targets: [10_000, 50_000],
                client_threads,
                only,
            }
        }
    }

    fn wants(&self, section: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|list| list.iter().any(|s| s == section))
    }
}

// ---- /proc -----------------------------------------------------------------------

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime in seconds from a `/proc/.../stat` file.
fn stat_cpu(path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let rest = text.get(text.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clock_ticks())
}

/// Seconds spent waiting on a run queue (runnable, not running), from a
/// `/proc/.../schedstat` file.
fn sched_wait(path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let ns: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

/// CPU seconds and run-queue wait seconds.
type Usage = (f64, f64);

fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU and run-queue wait of a thread, given its `/proc` directory.
fn thread_usage(dir: &str) -> Usage {
    (
        stat_cpu(&format!("{dir}/stat")).unwrap_or(0.0),
        sched_wait(&format!("{dir}/schedstat")).unwrap_or(0.0),
    )
}

fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

fn nofile() -> (u64, u64) {
    // SAFETY: getrlimit writes only the struct passed.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return (1024, 1024);
        }
        (l.rlim_cur, l.rlim_max)
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (children inherit it) and
/// tries a higher hard limit too (needs privilege); returns the new limits.
fn raise_nofile(wanted: u64) -> (u64, u64) {
    // SAFETY: getrlimit/setrlimit read and write only the struct passed.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            if l.rlim_max < wanted {
                let up = libc::rlimit {
                    rlim_cur: wanted,
                    rlim_max: wanted,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &up) == 0 {
                    l = up;
                }
            }
            if l.rlim_cur < l.rlim_max {
                let up = libc::rlimit {
                    rlim_cur: l.rlim_max,
                    rlim_max: l.rlim_max,
                };
                let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &up);
            }
        }
    }
    nofile()
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

// ---- the relay process -----------------------------------------------------------

fn relay_binary() -> Res<PathBuf> {
    if let Some(bin) = std::env::var_os("HTTPRELAY_BENCH_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_httprelay"));
    if bin.exists() {
        return Ok(bin);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let release = root.join("target/release/httprelay");
    if !release.exists() {
        eprintln!(
            "bench: {} missing; cargo build --release",
            release.display()
        );
        let status = Command::new("cargo")
            .args(["build", "--release"])
            .current_dir(root)
            .status()
            .map_err(|e| format!("cargo build --release: {e}"))?;
        if !status.success() {
            return Err(format!("cargo build --release failed: {status}"));
        }
    }
    Ok(release)
}

struct RelayProc {
    child: Child,
    addr: SocketAddr,
    pid: u32,
}

impl RelayProc {
    fn start(bin: &Path) -> Res<RelayProc> {
        let mut child = Command::new(bin)
            // As many connections as descriptors allow: the per-waiter figure
            // parks tens of thousands.
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                "0",
                "--idle-timeout",
                "3600",
                "--max-conns",
                "1000000",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let stderr = child.stderr.take().ok_or("no stderr pipe")?;
        let (tx, rx) = mpsc::channel::<String>();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("listening on") {
                    let _ = tx.send(line);
                } else {
                    eprintln!("relay: {line}");
                }
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the relay never printed `listening on ADDR`".into());
            }
        };
        let addr = line
            .rsplit(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("cannot parse the address in {line:?}"))?;
        let pid = child.id();
        Ok(RelayProc { child, addr, pid })
    }

    fn cpu(&self) -> f64 {
        stat_cpu(&format!("/proc/{}/stat", self.pid)).unwrap_or(f64::NAN)
    }

    fn usage(&self) -> Usage {
        (
            self.cpu(),
            sched_wait(&format!("/proc/{}/schedstat", self.pid)).unwrap_or(f64::NAN),
        )
    }

    fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid)
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- baselines -------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum FwdKind {
    Copy,
    Big,
}

/// CPU time of the forwarder's copy threads: live ones from
/// `/proc/self/task/TID/stat`, finished ones from the value they recorded on exit.
#[derive(Default)]
struct CpuBook {
    threads: Mutex<Vec<(i32, Option<Usage>)>>,
}

impl CpuBook {
    fn enter(&self) -> usize {
        let mut t = self.threads.lock().unwrap();
        t.push((gettid(), None));
        t.len() - 1
    }

    fn leave(&self, slot: usize) {
        let usage = thread_usage("/proc/thread-self");
        self.threads.lock().unwrap()[slot].1 = Some(usage);
    }

    fn usage(&self) -> Usage {
        let t = self.threads.lock().unwrap();
        t.iter()
            .map(|&(tid, done)| {
                done.unwrap_or_else(|| thread_usage(&format!("/proc/self/task/{tid}")))
            })
            .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
    }

    fn total(&self) -> f64 {
        self.usage().0
    }
}

struct Forwarder {
    addr: SocketAddr,
    book: Arc<CpuBook>,
}

impl Forwarder {
    fn start(kind: FwdKind) -> Res<Forwarder> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let book = Arc::new(CpuBook::default());
        let threads = book.clone();
        thread::spawn(move || loop {
            let Ok((a, _)) = listener.accept() else {
                return;
            };
            let Ok((b, _)) = listener.accept() else {
                return;
            };
            let _ = a.set_nodelay(true);
            let _ = b.set_nodelay(true);
            let book = threads.clone();
            thread::spawn(move || {
                let slot = book.enter();
                forward(kind, a, b);
                book.leave(slot);
            });
        });
        Ok(Forwarder { addr, book })
    }

    /// A producer and a consumer connection; the forwarder pairs them by
    /// accept order, so they are made one after the other.
    fn pair(&self) -> Res<(TcpStream, TcpStream)> {
        let p = plain_connect(self.addr)?;
        let c = plain_connect(self.addr)?;
        Ok((p, c))
    }
}

fn forward(kind: FwdKind, mut a: TcpStream, mut b: TcpStream) {
    match kind {
        FwdKind::Copy => {
            let _ = io::copy(&mut a, &mut b);
        }
        FwdKind::Big => {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match a.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if b.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
    }
    let _ = b.shutdown(Shutdown::Write);
}

/// Fan-out baseline: accepts `readers` consumers, then one producer; each
/// message of `FAN_MESSAGE` bytes is written to every consumer in turn.
fn start_fanout_forwarder(readers: usize) -> Res<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    thread::spawn(move || {
        let mut consumers = Vec::with_capacity(readers);
        for _ in 0..readers {
            let Ok((c, _)) = listener.accept() else {
                return;
            };
            let _ = c.set_nodelay(true);
            consumers.push(c);
        }
        let Ok((mut p, _)) = listener.accept() else {
            return;
        };
        let mut msg = [0u8; FAN_MESSAGE];
        while p.read_exact(&mut msg).is_ok() {
            for c in &mut consumers {
                let _ = c.write_all(&msg);
            }
        }
    });
    Ok(addr)
}

// ---- a small HTTP/1.1 client -------------------------------------------------------

fn plain_connect(addr: SocketAddr) -> Res<TcpStream> {
    let s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn header<'a>(head: &'a [u8], name: &str) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(name.as_bytes())
            .then(|| line[colon + 1..].trim_ascii())
    })
}

fn parse_dec(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit()
            .then(|| acc.checked_mul(10)?.checked_add(u64::from(b - b'0')))?
    })
}

fn parse_hex(v: &[u8]) -> Option<u64> {
    let v = v.split(|&b| b == b';').next()?.trim_ascii();
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        let d = (b as char).to_digit(16)?;
        acc.checked_mul(16)?.checked_add(u64::from(d))
    })
}

fn status_of(head: &[u8]) -> u16 {
    head.get(9..12).and_then(parse_dec).map_or(0, |s| s as u16)
}

enum Framing {
    Length(u64),
    Chunked,
}

fn framing_of(head: &[u8]) -> Res<Framing> {
    if header(head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case(b"chunked")) {
        Ok(Framing::Chunked)
    } else if let Some(v) = header(head, "content-length") {
        parse_dec(v)
            .map(Framing::Length)
            .ok_or_else(|| "bad Content-Length".into())
    } else {
        Err(format!(
            "response without length: {}",
            String::from_utf8_lossy(head)
        ))
    }
}

/// A keep-alive client connection with its own read buffer.
struct Http {
    s: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Http {
    fn connect(addr: SocketAddr, buf: usize) -> Res<Http> {
        Ok(Http::new(plain_connect(addr)?, buf))
    }

    fn new(s: TcpStream, buf: usize) -> Http {
        Http {
            s,
            buf: vec![0; buf],
            start: 0,
            end: 0,
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Res<()> {
        self.s.write_all(bytes).map_err(|e| format!("write: {e}"))
    }

    /// Reads more; compacts the buffer first when it is full.
    fn fill(&mut self) -> Res<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start == 0 {
                return Err("response line or head larger than the buffer".into());
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            match self.s.read(&mut self.buf[self.end..]) {
                Ok(0) => return Err("connection closed by the peer".into()),
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// Consumes one line (without CRLF) and returns its range in `buf`.
    fn line(&mut self) -> Res<(usize, usize)> {
        loop {
            if let Some(i) = find(&self.buf[self.start..self.end], b"\r\n") {
                let at = self.start;
                self.start += i + 2;
                return Ok((at, at + i));
            }
            self.fill()?;
        }
    }

    /// Consumes `n` body bytes, appending them to `keep` if given.
    fn skip(&mut self, mut n: u64, keep: &mut Option<&mut Vec<u8>>) -> Res<()> {
        while n > 0 {
            if self.start == self.end {
                self.fill()?;
            }
            let take = (self.end - self.start).min(usize::try_from(n).unwrap_or(usize::MAX));
            if let Some(k) = keep.as_deref_mut() {
                k.extend_from_slice(&self.buf[self.start..self.start + take]);
            }
            self.start += take;
            n -= take as u64;
        }
        Ok(())
    }

    /// Reads one response; returns its status and body length.
    fn response(&mut self, mut keep: Option<&mut Vec<u8>>) -> Res<(u16, u64)> {
        let head_len = loop {
            if let Some(i) = find(&self.buf[self.start..self.end], b"\r\n\r\n") {
                break i + 4;
            }
            self.fill()?;
        };
        let head = &self.buf[self.start..self.start + head_len];
        let status = status_of(head);
        let framing = framing_of(head)?;
        self.start += head_len;
        match framing {
            Framing::Length(n) => {
                self.skip(n, &mut keep)?;
                Ok((status, n))
            }
            Framing::Chunked => {
                let mut total = 0;
                loop {
                    let (a, b) = self.line()?;
                    let size = parse_hex(&self.buf[a..b]).ok_or("bad chunk size")?;
                    if size == 0 {
                        // Trailer fields, then the empty line.
                        while {
                            let (a, b) = self.line()?;
                            a != b
                        } {}
                        return Ok((status, total));
                    }
                    self.skip(size, &mut keep)?;
                    total += size;
                    let (a, b) = self.line()?;
                    if a != b {
                        return Err("chunk data not followed by CRLF".into());
                    }
                }
            }
        }
    }

    /// A response that must be `200` with a body of `len` bytes.
    fn expect(&mut self, len: u64) -> Res<()> {
        match self.response(None)? {
            (200, n) if n == len => Ok(()),
            (status, n) => Err(format!(
                "expected 200 with {len} bytes, got {status} with {n}"
            )),
        }
    }
}

fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").into_bytes()
}

fn post_request(path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// The value of the first metric line starting with `name` (labels included).
fn metric(conn: &mut Http, name: &str) -> Res<f64> {
    conn.send(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")?;
    let mut body = Vec::new();
    conn.response(Some(&mut body))?;
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("metric {name} not found"))
}

/// Polls `/metrics` until `name` reaches `target`; returns the last value.
fn wait_metric(conn: &mut Http, name: &str, target: f64, timeout: Duration) -> Res<f64> {
    let deadline = Instant::now() + timeout;
    loop {
        let v = metric(conn, name)?;
        if v >= target || Instant::now() >= deadline {
            return Ok(v);
        }
        thread::sleep(Duration::from_millis(2));
    }
}

// ---- statistics ------------------------------------------------------------------

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize)
        .saturating_sub(1)
        .min(sorted.len() - 1);
    sorted[i] as f64
}

fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Per-run figures of one variant; the table shows their medians.
#[derive(Default)]
struct Series(Vec<Vec<f64>>);

impl Series {
    fn push(&mut self, figures: &[f64]) {
        if self.0.is_empty() {
            self.0 = vec![Vec::new(); figures.len()];
        }
        for (col, &f) in self.0.iter_mut().zip(figures) {
            col.push(f);
        }
    }

    fn median(&self, i: usize) -> f64 {
        self.0.get(i).map_or(f64::NAN, |c| median(c))
    }
}

// ---- 1. link latency -------------------------------------------------------------

/// Consumer's GET parked first, then the producer's POST; nanoseconds from the
/// POST until the consumer has the whole body.
fn relay_latency(c: &mut Http, p: &mut Http, get: &[u8], post: &[u8], n: usize) -> Res<Vec<u64>> {
    let mut lat = Vec::with_capacity(n);
    c.send(get)?;
    thread::sleep(Duration::from_millis(5));
    for i in 0..n {
        let t0 = Instant::now();
        p.send(post)?;
        c.expect(SMALL as u64)?;
        lat.push(t0.elapsed().as_nanos() as u64);
        if i + 1 < n {
            // The next GET goes out now, to be parked while the producer's
            // answer is read.
            c.send(get)?;
        }
        p.expect(0)?;
    }
    Ok(lat)
}

fn base_latency(p: &mut TcpStream, c: &mut TcpStream, n: usize) -> Res<Vec<u64>> {
    let body = [b'x'; SMALL];
    let mut got = [0u8; SMALL];
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        p.write_all(&body).map_err(|e| e.to_string())?;
        c.read_exact(&mut got).map_err(|e| e.to_string())?;
        lat.push(t0.elapsed().as_nanos() as u64);
    }
    Ok(lat)
}

fn latency_figures(mut lat: Vec<u64>) -> [f64; 3] {
    lat.sort_unstable();
    [
        percentile(&lat, 0.50) / 1e3,
        percentile(&lat, 0.99) / 1e3,
        percentile(&lat, 0.999) / 1e3,
    ]
}

struct Trio {
    relay: Series,
    copy: Series,
    big: Series,
}

fn latency(plan: &Plan, relay: &RelayProc, copy: &Forwarder, big: &Forwarder) -> Res<Trio> {
    let mut rc = Http::connect(relay.addr, 64 * 1024)?;
    let mut rp = Http::connect(relay.addr, 64 * 1024)?;
    let get = get_request("/link/latency");
    let post = post_request("/link/latency", &[b'x'; SMALL]);
    let (mut cp, mut cc) = copy.pair()?;
    let (mut bp, mut bc) = big.pair()?;
    let warm = plan.latency_exchanges / 10;
    relay_latency(&mut rc, &mut rp, &get, &post, warm)?;
    base_latency(&mut cp, &mut cc, warm)?;
    base_latency(&mut bp, &mut bc, warm)?;
    let mut out = Trio {
        relay: Series::default(),
        copy: Series::default(),
        big: Series::default(),
    };
    let n = plan.latency_exchanges;
    for run in 0..plan.runs {
        eprintln!("bench: latency run {}/{}", run + 1, plan.runs);
        out.relay.push(&latency_figures(relay_latency(
            &mut rc, &mut rp, &get, &post, n,
        )?));
        out.copy
            .push(&latency_figures(base_latency(&mut cp, &mut cc, n)?));
        out.big
            .push(&latency_figures(base_latency(&mut bp, &mut bc, n)?));
    }
    Ok(out)
}

// ---- 2. pair throughput ----------------------------------------------------------

/// Runs `work` on one thread per state for `secs`; returns [exchanges/s, p99 µs,
/// server CPU s, server run-queue wait s, client CPU s, client run-queue wait s]
/// where the server's usage comes from `usage()` before and after.
fn timed<S: Send>(
    states: &mut [S],
    secs: f64,
    usage: &dyn Fn() -> Usage,
    work: fn(&mut S, &AtomicBool, &mut Vec<u64>) -> Res<u64>,
) -> Res<[f64; 6]> {
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(states.len() + 1);
    let (results, elapsed, cpu_used) = thread::scope(|s| {
        let handles: Vec<_> = states
            .iter_mut()
            .map(|st| {
                let (stop, barrier) = (&stop, &barrier);
                s.spawn(move || {
                    let mut lat = Vec::with_capacity(1 << 16);
                    barrier.wait();
                    let u0 = thread_usage("/proc/thread-self");
                    let n = work(st, stop, &mut lat);
                    let u1 = thread_usage("/proc/thread-self");
                    n.map(|n| (n, lat, (u1.0 - u0.0, u1.1 - u0.1)))
                })
            })
            .collect();
        barrier.wait();
        let u0 = usage();
        let t0 = Instant::now();
        thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::SeqCst);
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("client thread panicked".into()))
            })
            .collect();
        let u1 = usage();
        (results, t0.elapsed(), (u1.0 - u0.0, u1.1 - u0.1))
    });
    let mut total = 0;
    let mut all = Vec::new();
    let mut client = (0.0, 0.0);
    for r in results {
        let (n, lat, u) = r?;
        total += n;
        all.extend(lat);
        client = (client.0 + u.0, client.1 + u.1);
    }
    all.sort_unstable();
    Ok([
        total as f64 / elapsed.as_secs_f64(),
        percentile(&all, 0.99) / 1e3,
        cpu_used.0,
        cpu_used.1,
        client.0,
        client.1,
    ])
}

/// Non-blocking `write_all` (small writes to a socket with room; a full send
/// buffer is waited out).
fn write_nb(s: &mut mio::net::TcpStream, bytes: &[u8]) -> Res<()> {
    let mut off = 0;
    while off < bytes.len() {
        match s.write(&bytes[off..]) {
            Ok(n) => off += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_micros(50)),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    Ok(())
}

/// Reads until `WouldBlock` into `buf[*len..]`.
fn read_nb(s: &mut mio::net::TcpStream, buf: &mut [u8], len: &mut usize) -> Res<()> {
    loop {
        if *len == buf.len() {
            return Err("client buffer full".into());
        }
        match s.read(&mut buf[*len..]) {
            Ok(0) => return Err("connection closed by the peer".into()),
            Ok(n) => *len += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Length of the complete `Content-Length` response at the start of `b`.
fn http_len(b: &[u8]) -> Option<usize> {
    let h = find(b, b"\r\n\r\n")?;
    let n = header(&b[..h + 2], "content-length").and_then(parse_dec)? as usize;
    (b.len() >= h + 4 + n).then_some(h + 4 + n)
}

/// One producer/consumer pair of the event-driven client.
struct EvPair {
    c: mio::net::TcpStream,
    p: mio::net::TcpStream,
    cbuf: Vec<u8>,
    clen: usize,
    pbuf: Vec<u8>,
    plen: usize,
    /// Relay: the consumer's GET; baseline: nothing.
    get: Vec<u8>,
    /// Relay: the producer's POST; baseline: the raw body.
    post: Vec<u8>,
    started: Instant,
    c_done: bool,
    p_done: bool,
    busy: bool,
}

/// A client thread driving several pairs with mio, so that the load generator
/// needs few context switches and leaves the CPU to the server under test.
struct EvClient {
    poll: mio::Poll,
    pairs: Vec<EvPair>,
    http: bool,
}

impl EvClient {
    fn new(conns: Vec<(TcpStream, TcpStream, Vec<u8>, Vec<u8>)>, http: bool) -> Res<EvClient> {
        let poll = mio::Poll::new().map_err(|e| e.to_string())?;
        let mut pairs = Vec::new();
        for (i, (c, p, get, post)) in conns.into_iter().enumerate() {
            let mut socks = Vec::new();
            for (k, s) in [c, p].into_iter().enumerate() {
                s.set_nonblocking(true).map_err(|e| e.to_string())?;
                let mut s = mio::net::TcpStream::from_std(s);
                poll.registry()
                    .register(&mut s, mio::Token(2 * i + k), mio::Interest::READABLE)
                    .map_err(|e| e.to_string())?;
                socks.push(s);
            }
            let p = socks.pop().ok_or("no socket")?;
            let c = socks.pop().ok_or("no socket")?;
            pairs.push(EvPair {
                c,
                p,
                cbuf: vec![0; 16 * 1024],
                clen: 0,
                pbuf: vec![0; 16 * 1024],
                plen: 0,
                get,
                post,
                started: Instant::now(),
                c_done: false,
                p_done: false,
                busy: false,
            });
        }
        Ok(EvClient { poll, pairs, http })
    }

    fn begin(pair: &mut EvPair, http: bool) -> Res<()> {
        pair.started = Instant::now();
        pair.c_done = false;
        pair.p_done = !http;
        pair.busy = true;
        if http {
            write_nb(&mut pair.c, &pair.get)?;
        }
        write_nb(&mut pair.p, &pair.post)
    }

    /// Exchanges on every pair, back to back, until `stop`; counts those
    /// completed before it and records each one's latency (start to consumer
    /// having the body).
    fn run(&mut self, stop: &AtomicBool, lat: &mut Vec<u64>) -> Res<u64> {
        let http = self.http;
        for pair in &mut self.pairs {
            EvClient::begin(pair, http)?;
        }
        let mut busy = self.pairs.len();
        let mut done = 0;
        let mut events = mio::Events::with_capacity(1024);
        let mut stopped_at: Option<Instant> = None;
        while busy > 0 {
            let stopping = stop.load(Ordering::Relaxed);
            if stopping {
                let at = *stopped_at.get_or_insert_with(Instant::now);
                if at.elapsed() > IO_TIMEOUT {
                    return Err(format!("{busy} exchanges never finished"));
                }
            }
            self.poll
                .poll(&mut events, Some(Duration::from_millis(20)))
                .map_err(|e| e.to_string())?;
            for ev in events.iter() {
                let i = ev.token().0 / 2;
                let pair = &mut self.pairs[i];
                if ev.token().0 % 2 == 0 {
                    read_nb(&mut pair.c, &mut pair.cbuf, &mut pair.clen)?;
                    let want = if http {
                        http_len(&pair.cbuf[..pair.clen])
                    } else {
                        (pair.clen >= SMALL).then_some(SMALL)
                    };
                    if let Some(n) = want {
                        if pair.c_done {
                            return Err("unexpected data for the consumer".into());
                        }
                        pair.cbuf.copy_within(n..pair.clen, 0);
                        pair.clen -= n;
                        pair.c_done = true;
                        lat.push(pair.started.elapsed().as_nanos() as u64);
                    }
                } else {
                    read_nb(&mut pair.p, &mut pair.pbuf, &mut pair.plen)?;
                    if let Some(n) = http_len(&pair.pbuf[..pair.plen]) {
                        pair.pbuf.copy_within(n..pair.plen, 0);
                        pair.plen -= n;
                        pair.p_done = true;
                    }
                }
                if pair.busy && pair.c_done && pair.p_done {
                    pair.busy = false;
                    if stop.load(Ordering::Relaxed) {
                        busy -= 1;
                    } else {
                        done += 1;
                        EvClient::begin(pair, http)?;
                    }
                }
            }
        }
        Ok(done)
    }
}

fn pairs(plan: &Plan, relay: &RelayProc, copy: &Forwarder, big: &Forwarder) -> Res<Trio> {
    let threads = plan.client_threads.clamp(1, plan.pairs.max(1));
    let mut relay_conns: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
    let mut copy_conns: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
    let mut big_conns: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
    for i in 0..plan.pairs {
        let path = format!("/link/pair{i}");
        let t = i % threads;
        relay_conns[t].push((
            plain_connect(relay.addr)?,
            plain_connect(relay.addr)?,
            get_request(&path),
            post_request(&path, &[b'x'; SMALL]),
        ));
        let (p, c) = copy.pair()?;
        copy_conns[t].push((c, p, Vec::new(), vec![b'x'; SMALL]));
        let (p, c) = big.pair()?;
        big_conns[t].push((c, p, Vec::new(), vec![b'x'; SMALL]));
    }
    let clients = |conns: Vec<Vec<_>>, http| -> Res<Vec<EvClient>> {
        conns.into_iter().map(|c| EvClient::new(c, http)).collect()
    };
    let mut relay_clients = clients(relay_conns, true)?;
    let mut copy_clients = clients(copy_conns, false)?;
    let mut big_clients = clients(big_conns, false)?;
    let relay_cpu = || relay.usage();
    let copy_cpu = || copy.book.usage();
    let big_cpu = || big.book.usage();
    // Warm-up: every connection a few times.
    let warm = 0.2_f64.min(plan.pair_secs);
    timed(&mut relay_clients, warm, &relay_cpu, EvClient::run)?;
    timed(&mut copy_clients, warm, &copy_cpu, EvClient::run)?;
    timed(&mut big_clients, warm, &big_cpu, EvClient::run)?;
    let mut out = Trio {
        relay: Series::default(),
        copy: Series::default(),
        big: Series::default(),
    };
    for run in 0..plan.runs {
        eprintln!("bench: pair throughput run {}/{}", run + 1, plan.runs);
        let secs = plan.pair_secs;
        out.relay
            .push(&timed(&mut relay_clients, secs, &relay_cpu, EvClient::run)?);
        out.copy
            .push(&timed(&mut copy_clients, secs, &copy_cpu, EvClient::run)?);
        out.big
            .push(&timed(&mut big_clients, secs, &big_cpu, EvClient::run)?);
    }
    Ok(out)
}

// ---- 3. streaming ----------------------------------------------------------------

struct StreamData {
    /// `STREAM_UNIT` bytes of a pattern.
    raw: Vec<u8>,
    /// The same as one chunk: size line, data, CRLF.
    chunk: Vec<u8>,
}

impl StreamData {
    fn new() -> StreamData {
        let raw: Vec<u8> = (0..STREAM_UNIT).map(|i| (i % 251) as u8).collect();
        let mut chunk = format!("{STREAM_UNIT:x}\r\n").into_bytes();
        chunk.extend_from_slice(&raw);
        chunk.extend_from_slice(b"\r\n");
        StreamData { raw, chunk }
    }
}

/// [MiB/s, relay CPU s per GiB] for one link transfer of `bytes`.
fn relay_stream(relay: &RelayProc, data: &StreamData, bytes: u64, chunked: bool) -> Res<[f64; 2]> {
    let path = "/link/stream";
    let mut c = Http::connect(relay.addr, STREAM_UNIT)?;
    c.send(&get_request(path))?;
    thread::sleep(Duration::from_millis(10));
    let mut p = Http::connect(relay.addr, 16 * 1024)?;
    let units = bytes / STREAM_UNIT as u64;
    let head = if chunked {
        format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        )
    } else {
        format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {bytes}\r\n\r\n"
        )
    };
    let cpu0 = relay.cpu();
    let t0 = Instant::now();
    let (got, elapsed) = thread::scope(|s| {
        let producer = s.spawn(move || -> Res<()> {
            p.send(head.as_bytes())?;
            let unit = if chunked { &data.chunk } else { &data.raw };
            for _ in 0..units {
                p.send(unit)?;
            }
            if chunked {
                p.send(b"0\r\n\r\n")?;
            }
            p.expect(0)
        });
        let got = c.response(None);
        let elapsed = t0.elapsed();
        let sent = producer
            .join()
            .unwrap_or_else(|_| Err("producer panicked".into()));
        (got.and_then(|g| sent.map(|()| g)), elapsed)
    });
    let cpu = relay.cpu() - cpu0;
    let (status, n) = got?;
    if status != 200 || n != bytes {
        return Err(format!("stream: got {status} with {n} of {bytes} bytes"));
    }
    Ok([
        bytes as f64 / MIB as f64 / elapsed.as_secs_f64(),
        cpu / (bytes as f64 / GIB as f64),
    ])
}

fn base_stream(fwd: &Forwarder, data: &StreamData, bytes: u64) -> Res<[f64; 2]> {
    let (mut p, mut c) = fwd.pair()?;
    let units = bytes / STREAM_UNIT as u64;
    let mut buf = vec![0u8; STREAM_UNIT];
    let cpu0 = fwd.book.total();
    let t0 = Instant::now();
    let (got, elapsed) = thread::scope(|s| {
        let producer = s.spawn(move || -> Res<()> {
            for _ in 0..units {
                p.write_all(&data.raw).map_err(|e| e.to_string())?;
            }
            p.shutdown(Shutdown::Write).map_err(|e| e.to_string())
        });
        let mut got = 0u64;
        while got < bytes {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n as u64,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let elapsed = t0.elapsed();
        let sent = producer
            .join()
            .unwrap_or_else(|_| Err("producer panicked".into()));
        (sent.map(|()| got), elapsed)
    });
    let got = got?;
    // The forwarder thread records its CPU on exit, after the producer's EOF.
    thread::sleep(Duration::from_millis(20));
    let cpu = fwd.book.total() - cpu0;
    if got != bytes {
        return Err(format!("forwarder stream: {got} of {bytes} bytes"));
    }
    Ok([
        bytes as f64 / MIB as f64 / elapsed.as_secs_f64(),
        cpu / (bytes as f64 / GIB as f64),
    ])
}

struct StreamResults {
    length: Series,
    chunked: Series,
    copy: Series,
    big: Series,
}

fn streaming(
    plan: &Plan,
    relay: &RelayProc,
    copy: &Forwarder,
    big: &Forwarder,
) -> Res<StreamResults> {
    let data = StreamData::new();
    let bytes = plan.stream_bytes;
    // Warm-up: a short transfer of each kind.
    relay_stream(relay, &data, 16 * MIB, false)?;
    relay_stream(relay, &data, 16 * MIB, true)?;
    base_stream(copy, &data, 16 * MIB)?;
    base_stream(big, &data, 16 * MIB)?;
    let mut out = StreamResults {
        length: Series::default(),
        chunked: Series::default(),
        copy: Series::default(),
        big: Series::default(),
    };
    for run in 0..plan.runs {
        eprintln!("bench: streaming run {}/{}", run + 1, plan.runs);
        out.length.push(&relay_stream(relay, &data, bytes, false)?);
        out.chunked.push(&relay_stream(relay, &data, bytes, true)?);
        out.copy.push(&base_stream(copy, &data, bytes)?);
        out.big.push(&base_stream(big, &data, bytes)?);
    }
    Ok(out)
}

// ---- 4. mcast fan-out --------------------------------------------------------------

struct Readers {
    poll: mio::Poll,
    socks: Vec<mio::net::TcpStream>,
    bufs: Vec<Vec<u8>>,
    lens: Vec<usize>,
}

impl Readers {
    fn connect(addr: SocketAddr, n: usize) -> Res<Readers> {
        let poll = mio::Poll::new().map_err(|e| e.to_string())?;
        let mut socks = Vec::with_capacity(n);
        for i in 0..n {
            let s = plain_connect(addr)?;
            s.set_nonblocking(true).map_err(|e| e.to_string())?;
            let mut s = mio::net::TcpStream::from_std(s);
            poll.registry()
                .register(&mut s, mio::Token(i), mio::Interest::READABLE)
                .map_err(|e| e.to_string())?;
            socks.push(s);
        }
        Ok(Readers {
            poll,
            socks,
            bufs: vec![vec![0; 4096]; n],
            lens: vec![0; n],
        })
    }

    fn send_all(&mut self, bytes: &[u8]) -> Res<()> {
        for s in &mut self.socks {
            let mut off = 0;
            while off < bytes.len() {
                match s.write(&bytes[off..]) {
                    Ok(n) => off += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(1))
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("reader write: {e}")),
                }
            }
        }
        Ok(())
    }

    /// Reads until every reader has a complete message (`complete` says when);
    /// returns the time the last one completed, from `t0`.
    fn collect(&mut self, t0: Instant, complete: fn(&[u8]) -> bool) -> Res<Duration> {
        let n = self.socks.len();
        self.lens.iter_mut().for_each(|l| *l = 0);
        let mut done = vec![false; n];
        let mut left = n;
        let mut events = mio::Events::with_capacity(1024);
        let deadline = t0 + IO_TIMEOUT;
        while left > 0 {
            if Instant::now() > deadline {
                return Err(format!(
                    "fan-out: {left} of {n} readers never got the message"
                ));
            }
            self.poll
                .poll(&mut events, Some(Duration::from_millis(100)))
                .map_err(|e| e.to_string())?;
            for ev in events.iter() {
                let i = ev.token().0;
                loop {
                    let (buf, len) = (&mut self.bufs[i], &mut self.lens[i]);
                    if *len == buf.len() {
                        return Err("fan-out response larger than 4 KiB".into());
                    }
                    match self.socks[i].read(&mut buf[*len..]) {
                        Ok(0) => return Err("fan-out reader closed".into()),
                        Ok(k) => *len += k,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("fan-out read: {e}")),
                    }
                }
                if !done[i] && complete(&self.bufs[i][..self.lens[i]]) {
                    done[i] = true;
                    left -= 1;
                }
            }
        }
        Ok(t0.elapsed())
    }
}

fn http_complete(b: &[u8]) -> bool {
    let Some(h) = find(b, b"\r\n\r\n") else {
        return false;
    };
    header(&b[..h + 2], "content-length")
        .and_then(parse_dec)
        .is_some_and(|n| b.len() as u64 >= h as u64 + 4 + n)
}

fn raw_complete(b: &[u8]) -> bool {
    b.len() >= FAN_MESSAGE
}

/// Milliseconds until the last of `plan.fan_readers` has the message: relay
/// and the write-loop baseline, interleaved.
fn fanout(plan: &Plan, relay: &RelayProc) -> Res<(Series, Series)> {
    let n = plan.fan_readers;
    let mut readers = Readers::connect(relay.addr, n)?;
    let mut producer = Http::connect(relay.addr, 16 * 1024)?;
    let mut metrics = Http::connect(relay.addr, 64 * 1024)?;
    let post = post_request("/mcast/fanout", &[b'm'; FAN_MESSAGE]);
    let base_addr = start_fanout_forwarder(n)?;
    let mut base = Readers::connect(base_addr, n)?;
    let mut base_producer = plain_connect(base_addr)?;
    let mut relay_ms = Series::default();
    let mut base_ms = Series::default();
    let waiters = "httprelay_waiters{method=\"mcast\"}";
    // Round 0 warms up.
    for round in 0..=plan.runs {
        if round > 0 {
            eprintln!("bench: fan-out run {round}/{}", plan.runs);
        }
        readers.send_all(&get_request(&format!("/mcast/fanout?seqid={round}")))?;
        let parked = wait_metric(&mut metrics, waiters, n as f64, Duration::from_secs(20))?;
        if parked < n as f64 {
            return Err(format!("only {parked} of {n} mcast readers parked"));
        }
        let t0 = Instant::now();
        producer.send(&post)?;
        let last = readers.collect(t0, http_complete)?;
        producer.expect(0)?;
        let t0 = Instant::now();
        base_producer
            .write_all(&[b'm'; FAN_MESSAGE])
            .map_err(|e| e.to_string())?;
        let base_last = base.collect(t0, raw_complete)?;
        if round > 0 {
            relay_ms.push(&[last.as_secs_f64() * 1e3]);
            base_ms.push(&[base_last.as_secs_f64() * 1e3]);
        }
    }
    Ok((relay_ms, base_ms))
}

// ---- 5. memory -------------------------------------------------------------------

struct MemPoint {
    target: usize,
    reached: usize,
    rss_kib: u64,
}

struct Memory {
    idle_kib: u64,
    points: Vec<MemPoint>,
    limit_note: Option<String>,
}

/// A TCP connection from a chosen loopback source address (one source address
/// offers only the ephemeral port range's worth of connections to one port).
fn connect_from(src: Ipv4Addr, dst: SocketAddrV4) -> io::Result<TcpStream> {
    fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
        // SAFETY: all-zero is a valid sockaddr_in.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = port.to_be();
        sa.sin_addr = libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        };
        sa
    }
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor owned by `stream` from
    // creation on; the addresses passed live across the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        // Pick the port at connect time (by the whole 4-tuple), not at bind:
        // a bind to port 0 searches all bound ports, quadratic over many sockets.
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let local = sockaddr(src, 0);
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let remote = sockaddr(*dst.ip(), dst.port());
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stream)
    }
}

fn memory(plan: &Plan, bin: &Path) -> Res<Memory> {
    let wanted = plan.waiter_targets.iter().copied().max().unwrap_or(0) as u64 + 1_000;
    let (soft, hard) = raise_nofile(wanted);
    let relay = RelayProc::start(bin)?;
    thread::sleep(Duration::from_millis(300));
    let idle_kib = relay.rss_kib().ok_or("no VmRSS for the relay")?;
    let mut metrics = Http::connect(relay.addr, 64 * 1024)?;
    // The relay keeps 32 descriptors in reserve (plus its listener, poll and
    // signal pipe); this process needs its own descriptors too.
    let relay_cap = soft.saturating_sub(48);
    let own_cap = soft.saturating_sub(open_fds() + 64);
    let cap = relay_cap.min(own_cap) as usize;
    let limit_note = (cap < wanted as usize).then(|| {
        format!(
            "RLIMIT_NOFILE is {soft} (hard {hard}, not raisable here), so at most {cap} parked \
             waiters per process"
        )
    });
    let SocketAddr::V4(dst) = relay.addr else {
        return Err("relay not on IPv4".into());
    };
    let waiters = "httprelay_waiters{method=\"link\"}";
    let mut conns: Vec<TcpStream> = Vec::new();
    let mut points = Vec::new();
    for &target in &plan.waiter_targets {
        let want = target.min(cap);
        eprintln!("bench: parking {want} link consumers (target {target})");
        while conns.len() < want {
            let batch_end = (conns.len() + 500).min(want);
            while conns.len() < batch_end {
                let i = conns.len();
                // 127.0.0.1, .2, ...: 25,000 connections per source address.
                let src = Ipv4Addr::new(127, 0, 0, 1 + (i / 25_000) as u8);
                let s = if i < 25_000 {
                    TcpStream::connect(dst)
                } else {
                    connect_from(src, dst)
                };
                let mut s = s.map_err(|e| format!("waiter {i}: {e}"))?;
                s.write_all(&get_request(&format!("/link/waiter{i}")))
                    .map_err(|e| format!("waiter {i}: {e}"))?;
                conns.push(s);
            }
            let parked = wait_metric(
                &mut metrics,
                waiters,
                conns.len() as f64,
                Duration::from_secs(20),
            )?;
            if (parked as usize) < conns.len() {
                eprintln!(
                    "bench: only {parked} of {} waiters parked; stopping there",
                    conns.len()
                );
                break;
            }
        }
        thread::sleep(Duration::from_millis(300));
        let reached = metric(&mut metrics, waiters)? as usize;
        let rss_kib = relay.rss_kib().ok_or("no VmRSS for the relay")?;
        points.push(MemPoint {
            target,
            reached,
            rss_kib,
        });
    }
    Ok(Memory {
        idle_kib,
        points,
        limit_note,
    })
}

// ---- 6. footprint ----------------------------------------------------------------

/// Size of a stripped copy of `bin` (`strip` if available, else as built).
fn stripped_size(bin: &Path) -> Option<(u64, &'static str)> {
    let size = std::fs::metadata(bin).ok()?.len();
    let tmp = std::env::temp_dir().join(format!("httprelay-bench-strip-{}", std::process::id()));
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&tmp)
        .arg(bin)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let out = if stripped {
        let s = std::fs::metadata(&tmp).map_or(size, |m| m.len());
        (s, "strip")
    } else {
        (size, "as built")
    };
    let _ = std::fs::remove_file(&tmp);
    Some(out)
}

struct Footprint {
    release: Option<(u64, &'static str)>,
    musl: Result<(u64, &'static str), String>,
    /// Idle RSS of the static build, KiB.
    musl_idle_kib: Option<u64>,
}

fn footprint(plan: &Plan, bin: &Path) -> Footprint {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let musl_bin = root.join("target/x86_64-unknown-linux-musl/release/httprelay");
    let musl = if plan.quick {
        match stripped_size(&musl_bin) {
            Some(s) => Ok(s),
            None => Err("not built (quick mode does not build it)".into()),
        }
    } else {
        eprintln!("bench: scripts/static-build.sh");
        let built = Command::new(root.join("scripts/static-build.sh"))
            .current_dir(root)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .and_then(|mut child| {
                // A build stuck on a lock must not hang the bench.
                let deadline = Instant::now() + Duration::from_secs(600);
                loop {
                    if let Some(status) = child.try_wait()? {
                        return Ok(status);
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(io::Error::new(ErrorKind::TimedOut, "timed out after 600 s"));
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            });
        match built {
            Ok(s) if s.success() => {
                stripped_size(&musl_bin).ok_or_else(|| "not built (no binary)".to_string())
            }
            Ok(s) => Err(format!("not built (static-build.sh: {s})")),
            Err(e) => Err(format!("not built (static-build.sh: {e})")),
        }
    };
    let musl_idle_kib = musl.as_ref().ok().and_then(|_| {
        let relay = RelayProc::start(&musl_bin).ok()?;
        thread::sleep(Duration::from_millis(300));
        relay.rss_kib()
    });
    Footprint {
        musl_idle_kib,
        // The footprint is this build's, even when another binary was benchmarked.
        release: stripped_size(&PathBuf::from(env!("CARGO_BIN_EXE_httprelay")))
            .or_else(|| stripped_size(bin)),
        musl,
    }
}

// ---- the table -------------------------------------------------------------------

struct Row {
    figure: String,
    relay: String,
    copy: String,
    big: String,
    ratio: String,
    target: String,
    met: String,
}

fn num(v: f64, decimals: usize) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.decimals$}")
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

fn met(ok: Option<bool>) -> String {
    match ok {
        Some(true) => "yes".into(),
        Some(false) => "NO".into(),
        None => "–".into(),
    }
}

/// A row comparing relay with both baselines.
fn row3(figure: &str, r: f64, c: f64, b: f64, decimals: usize) -> Row {
    Row {
        figure: figure.into(),
        relay: num(r, decimals),
        copy: num(c, decimals),
        big: num(b, decimals),
        ratio: format!("{}× / {}×", num(ratio(r, c), 2), num(ratio(r, b), 2)),
        target: "–".into(),
        met: "–".into(),
    }
}

fn failed(figure: &str, e: &str) -> Row {
    Row {
        figure: figure.into(),
        relay: format!("failed: {e}"),
        copy: String::new(),
        big: String::new(),
        ratio: String::new(),
        target: String::new(),
        met: String::new(),
    }
}

fn print_table(rows: &[Row]) {
    let head = Row {
        figure: "figure".into(),
        relay: "relay".into(),
        copy: "io::copy".into(),
        big: "256 KiB".into(),
        ratio: "ratio: ÷ io::copy / ÷ 256 KiB".into(),
        target: "target".into(),
        met: "met".into(),
    };
    let cells = |r: &Row| {
        [
            r.figure.clone(),
            r.relay.clone(),
            r.copy.clone(),
            r.big.clone(),
            r.ratio.clone(),
            r.target.clone(),
            r.met.clone(),
        ]
    };
    let all: Vec<[String; 7]> = std::iter::once(&head).chain(rows).map(cells).collect();
    let mut width = [0usize; 7];
    for r in &all {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for (i, r) in all.iter().enumerate() {
        out.push('|');
        for (c, w) in r.iter().zip(width) {
            let pad = w - c.chars().count();
            let _ = write!(out, " {c}{} |", " ".repeat(pad));
        }
        out.push('\n');
        if i == 0 {
            out.push('|');
            for w in width {
                let _ = write!(out, "{}|", "-".repeat(w + 2));
            }
            out.push('\n');
        }
    }
    print!("{out}");
}

fn main() {
    // `cargo test --benches` runs this without `--bench`: nothing to measure then.
    if !std::env::args().any(|a| a == "--bench")
        && std::env::var_os("HTTPRELAY_BENCH_QUICK").is_none()
    {
        println!("relay bench: run it with `cargo bench --bench relay` (skipped)");
        return;
    }
    let plan = Plan::from_env();
    let started = Instant::now();
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let bin = match relay_binary() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(1);
        }
    };
    raise_nofile(0);
    let relay = match RelayProc::start(&bin) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(1);
        }
    };
    let (copy, big) = match (
        Forwarder::start(FwdKind::Copy),
        Forwarder::start(FwdKind::Big),
    ) {
        (Ok(c), Ok(b)) => (c, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("bench: forwarder: {e}");
            std::process::exit(1);
        }
    };
    let mut rows = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut rss_trail: Vec<String> = Vec::new();
    let mut rss_mark = |what: &str, relay: &RelayProc| {
        if let Some(kib) = relay.rss_kib() {
            rss_trail.push(format!("{what} {kib}"));
        }
    };
    rss_mark("start", &relay);

    if plan.wants("latency") {
        match latency(&plan, &relay, &copy, &big) {
            Ok(t) => {
                let names = [
                    "link latency p50 (µs)",
                    "link latency p99 (µs)",
                    "link latency p99.9 (µs)",
                ];
                let limits = [1.2, 1.5, 2.0];
                for i in 0..3 {
                    let (r, c, b) = (t.relay.median(i), t.copy.median(i), t.big.median(i));
                    let mut row = row3(names[i], r, c, b, 1);
                    row.target = format!("≤ {}× io::copy", limits[i]);
                    row.met = met((!ratio(r, c).is_nan()).then(|| ratio(r, c) <= limits[i]));
                    rows.push(row);
                }
            }
            Err(e) => rows.push(failed("link latency", &e)),
        }
        rss_mark("latency", &relay);
    }

    if plan.wants("pairs") {
        match pairs(&plan, &relay, &copy, &big) {
            Ok(t) => {
                let (r, c, b) = (t.relay.median(0), t.copy.median(0), t.big.median(0));
                let mut row = row3(&format!("{} pairs: exchanges/s", plan.pairs), r, c, b, 0);
                row.target = "≥ 0.5× io::copy".into();
                row.met = met((!ratio(r, c).is_nan()).then(|| ratio(r, c) >= 0.5));
                rows.push(row);
                rows.push(row3(
                    &format!("{} pairs: p99 (µs)", plan.pairs),
                    t.relay.median(1),
                    t.copy.median(1),
                    t.big.median(1),
                    1,
                ));
                rows.push(row3(
                    &format!("{} pairs: server CPU s in {} s", plan.pairs, plan.pair_secs),
                    t.relay.median(2),
                    t.copy.median(2),
                    t.big.median(2),
                    2,
                ));
                rows.push(row3(
                    &format!(
                        "{} pairs: server run-queue wait s in {} s",
                        plan.pairs, plan.pair_secs
                    ),
                    t.relay.median(3),
                    t.copy.median(3),
                    t.big.median(3),
                    2,
                ));
                notes.push(format!(
                    "pairs: {} event-driven (mio) client thread(s) drive all pairs; their CPU / \
                     run-queue wait s per run (median): relay {:.2} / {:.2}, io::copy {:.2} / \
                     {:.2}, 256 KiB {:.2} / {:.2}",
                    plan.client_threads,
                    t.relay.median(4),
                    t.relay.median(5),
                    t.copy.median(4),
                    t.copy.median(5),
                    t.big.median(4),
                    t.big.median(5)
                ));
            }
            Err(e) => rows.push(failed("pair throughput", &e)),
        }
        rss_mark("pairs", &relay);
    }

    if plan.wants("stream") {
        match streaming(&plan, &relay, &copy, &big) {
            Ok(s) => {
                let size = if plan.stream_bytes >= GIB {
                    format!("{} GiB", plan.stream_bytes / GIB)
                } else {
                    format!("{} MiB", plan.stream_bytes / MIB)
                };
                for (name, series) in [("Content-Length", &s.length), ("chunked", &s.chunked)] {
                    let (r, c, b) = (series.median(0), s.copy.median(0), s.big.median(0));
                    let mut row = row3(&format!("stream {size}, {name}: MiB/s"), r, c, b, 0);
                    row.target = "≥ 1.3× 256 KiB".into();
                    row.met = met((!ratio(r, b).is_nan()).then(|| ratio(r, b) >= 1.3));
                    rows.push(row);
                }
                for (name, series) in [("Content-Length", &s.length), ("chunked", &s.chunked)] {
                    rows.push(row3(
                        &format!("stream {name}: CPU s per GiB"),
                        series.median(1),
                        s.copy.median(1),
                        s.big.median(1),
                        3,
                    ));
                }
            }
            Err(e) => rows.push(failed("streaming", &e)),
        }
        rss_mark("streaming", &relay);
    }

    if plan.wants("fanout") {
        match fanout(&plan, &relay) {
            Ok((r, b)) => {
                let (r, c) = (r.median(0), b.median(0));
                rows.push(Row {
                    figure: format!(
                        "mcast 1 KiB to {} parked readers: last has it (ms)",
                        plan.fan_readers
                    ),
                    relay: num(r, 2),
                    copy: num(c, 2),
                    big: "–".into(),
                    ratio: format!("{}× / –", num(ratio(r, c), 2)),
                    target: "–".into(),
                    met: "–".into(),
                });
                notes.push(
                    "fan-out baseline (io::copy column): one thread writing the 1 KiB message \
                     to each of the readers' sockets in turn"
                        .into(),
                );
            }
            Err(e) => rows.push(failed("mcast fan-out", &e)),
        }
        rss_mark("fan-out", &relay);
    }
    notes.push(format!(
        "relay RSS (KiB) at start and after each section: {}",
        rss_trail.join(", ")
    ));
    drop(relay);

    if plan.wants("memory") {
        match memory(&plan, &bin) {
            Ok(m) => {
                let idle_mib = m.idle_kib as f64 / 1024.0;
                rows.push(Row {
                    figure: "idle RSS, release build (MiB)".into(),
                    relay: num(idle_mib, 2),
                    copy: "–".into(),
                    big: "–".into(),
                    ratio: "–".into(),
                    target: "≤ 1.5 MiB".into(),
                    met: met(Some(idle_mib <= 1.5)),
                });
                let last = m.points.len().saturating_sub(1);
                for (i, p) in m.points.iter().enumerate() {
                    let per_kib = if p.reached > 0 {
                        (p.rss_kib.saturating_sub(m.idle_kib)) as f64 / p.reached as f64
                    } else {
                        f64::NAN
                    };
                    let short = p.reached < p.target;
                    let figure = if short {
                        format!(
                            "RSS per parked waiter, target {} (KiB) — MEASURED AT {}",
                            p.target, p.reached
                        )
                    } else {
                        format!("RSS per parked waiter at {} (KiB)", p.reached)
                    };
                    let is_target_row = i == last;
                    rows.push(Row {
                        figure,
                        relay: format!("{} (RSS {} KiB)", num(per_kib, 2), p.rss_kib),
                        copy: "–".into(),
                        big: "–".into(),
                        ratio: "–".into(),
                        target: if is_target_row {
                            format!("≤ 2 KiB at {}", p.target)
                        } else {
                            "–".into()
                        },
                        met: if is_target_row {
                            let m = met((!per_kib.is_nan()).then_some(per_kib <= 2.0));
                            if short {
                                format!("{m} (at {})", p.reached)
                            } else {
                                m
                            }
                        } else {
                            "–".into()
                        },
                    });
                }
                if let Some(n) = m.limit_note {
                    notes.push(n);
                }
                notes.push(
                    "RSS per waiter = (RSS with N parked consumers − idle RSS) / N, on a fresh \
                     relay; kernel socket memory is not in RSS"
                        .into(),
                );
            }
            Err(e) => rows.push(failed("memory", &e)),
        }
    }

    if plan.wants("footprint") {
        let f = footprint(&plan, &bin);
        let size_row = |figure: &str,
                        s: Option<(u64, &str)>,
                        err: Option<String>,
                        target: &str,
                        limit: Option<u64>| Row {
            figure: figure.into(),
            relay: match (s, err) {
                (Some((bytes, how)), _) => {
                    format!("{:.1} KiB ({bytes} B, {how})", bytes as f64 / 1024.0)
                }
                (None, Some(e)) => e,
                (None, None) => "not built".into(),
            },
            copy: "–".into(),
            big: "–".into(),
            ratio: "–".into(),
            target: target.into(),
            met: match (s, limit) {
                (Some((bytes, _)), Some(l)) => met(Some(bytes < l)),
                (None, Some(_)) => "NO (not built)".into(),
                _ => "–".into(),
            },
        };
        rows.push(size_row(
            "release binary, stripped",
            f.release,
            None,
            "–",
            None,
        ));
        let (s, e) = match f.musl {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e)),
        };
        rows.push(size_row(
            "static musl binary, stripped",
            s,
            e,
            "< 1 MiB",
            Some(MIB),
        ));
        if let Some(kib) = f.musl_idle_kib {
            let mib = kib as f64 / 1024.0;
            rows.push(Row {
                figure: "idle RSS, static musl build (MiB)".into(),
                relay: num(mib, 2),
                copy: "–".into(),
                big: "–".into(),
                ratio: "–".into(),
                target: "≤ 1.5 MiB".into(),
                met: met(Some(mib <= 1.5)),
            });
        }
    }

    println!();
    println!(
        "httprelay relay bench ({} mode, {} runs per figure, medians; {} CPUs; relay {})",
        if plan.quick { "QUICK" } else { "full" },
        plan.runs,
        thread::available_parallelism().map_or(0, |n| n.get()),
        bin.display()
    );
    println!(
        "latency: {} exchanges of {SMALL} B per run; pairs: {} pairs × {} s per run; stream: {} MiB \
         per run",
        plan.latency_exchanges,
        plan.pairs,
        plan.pair_secs,
        plan.stream_bytes / MIB
    );
    println!();
    print_table(&rows);
    println!();
    println!("notes:");
    println!(
        "- baselines: io::copy = blocking forwarder thread per pair with std::io::copy; \
         256 KiB = the same with a 256 KiB buffer; both carry the raw body only (no HTTP)"
    );
    println!("- ratios are relay ÷ baseline (for latency and CPU lower is better, for rates higher is better)");
    println!(
        "- CPU: relay = utime+stime of the relay process; baselines = the forwarder's copy threads"
    );
    for n in notes {
        println!("- {n}");
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let three = |l: &str| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    println!(
        "- load average (1/5/15 min) before: {}; after: {} (other work on this machine adds noise)",
        three(&load_before),
        three(&load_after)
    );
    println!(
        "- total bench time: {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

//! Memory and soak tool for `scripts/memory-soak.sh`: drives one traffic pattern
//! against a relay already running on a loopback address and reports how the
//! relay's resident memory (`VmRSS` of `--pid`) and its `httprelay_channels`
//! gauge move before, during and after.
//!
//! Usage: relay-soak ADDR PATTERN [SECONDS|COUNT] [--pid PID] [--pairs N]
//!        [--threads N] [--rate N] [--hold SECS] [--limit SECS]
//!
//! Patterns (default amount in brackets):
//! - `unique-pairs [120 s]`: `--pairs` (64) threads, each looping link exchanges,
//!   one fresh channel id per exchange, consumer `GET` and producer `POST` (64-byte
//!   body) on two keep-alive connections. Latency: consumer `GET` sent to the
//!   producer's response read.
//! - `abandoned-gets [50000]`: link `GET`s on new ids, each on its own connection,
//!   closed right after sending.
//! - `secret-producers [50000]`: `POST /link/{new id}?wsecret=s-{n}` with a 5-byte
//!   body, closed right after sending.
//! - `empty-mcast [100000]`: `POST /mcast/{new id}` with an empty body on keep-alive
//!   connections, every response read.
//! - `proxy-jobs [20000]`: `POST /proxy/{new id}/x` with a 1000-byte body (no
//!   `SERVE` exists), closed right after sending.
//! - `parked-producers [2000]`: that many link producers (100-byte body) kept open
//!   for `--hold` (2) seconds, then closed. The caller raises `ulimit -n` if needed.
//!
//! The floods use `--threads` (4) threads; they and `parked-producers` start at
//! most `--rate` operations a second (0, the default: no limit). A relay that
//! accepts more slowly than clients connect fills its listen backlog; the kernel
//! then drops SYNs and the client sends them again a second later. `slow_connects`
//! counts connects that took over 0.9 s; a rate keeps floods from measuring those
//! retries. A sampler thread reads `VmRSS` every 250 ms (for the peak) and scrapes
//! `/metrics` every second. Every loop is bounded by its count or its time, the
//! floods and `parked-producers` also by `--limit` (600) seconds; connect, read
//! and write timeouts are 5 s; errors are counted, not fatal. The relay's
//! `httprelay_loop_*` metrics, if it has any, are printed as they are at the end.
//!
//! The last line is the summary, `key=value` pairs starting with `pattern=`.
//! `status_N` counts responses read (both sides of a link exchange);
//! `relay_cpu_s` is the CPU time the relay used from before to after; `na` means
//! a figure was not available (no `--pid`, or `/metrics` did not answer).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TIMEOUT: Duration = Duration::from_secs(5);
const USAGE: &str = "usage: relay-soak ADDR PATTERN [SECONDS|COUNT] [--pid PID] [--pairs N] \
[--threads N] [--rate N] [--hold SECS] [--limit SECS]\npatterns: unique-pairs abandoned-gets \
secret-producers empty-mcast proxy-jobs parked-producers";

struct Opts {
    addr: SocketAddr,
    pattern: String,
    /// Seconds for `unique-pairs`, a count for the others.
    amount: u64,
    pid: Option<u32>,
    pairs: usize,
    threads: usize,
    /// Flood operations started per second in all (0: no limit).
    rate: u64,
    hold: u64,
    /// Deadline for the floods and `parked-producers` (`--limit`).
    deadline: Instant,
    /// Random per run, so that repeated runs use new channel ids.
    tag: u32,
}

fn usage_exit(msg: &str) -> ! {
    eprintln!("relay-soak: {msg}\n{USAGE}");
    std::process::exit(2);
}

fn parse_args() -> Opts {
    let mut positional = Vec::new();
    let (mut pid, mut pairs, mut threads, mut hold, mut limit) = (None, 64, 4, 2, 600);
    let mut rate = 0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage_exit(&format!("{name} needs a number")))
        };
        match arg.as_str() {
            "--pid" => pid = Some(value("--pid") as u32),
            "--pairs" => pairs = value("--pairs").max(1) as usize,
            "--threads" => threads = value("--threads").max(1) as usize,
            "--rate" => rate = value("--rate"),
            "--hold" => hold = value("--hold"),
            "--limit" => limit = value("--limit"),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ if arg.starts_with("--") => usage_exit(&format!("unknown option {arg}")),
            _ => positional.push(arg),
        }
    }
    if positional.len() < 2 || positional.len() > 3 {
        usage_exit("expected ADDR PATTERN [SECONDS|COUNT]");
    }
    let addr = positional[0]
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| usage_exit(&format!("cannot resolve {}", positional[0])));
    if !addr.ip().is_loopback() {
        usage_exit(&format!("{addr} is not a loopback address"));
    }
    let pattern = positional[1].clone();
    let default = match pattern.as_str() {
        "unique-pairs" => 120,
        "abandoned-gets" | "secret-producers" => 50_000,
        "empty-mcast" => 100_000,
        "proxy-jobs" => 20_000,
        "parked-producers" => 2_000,
        _ => usage_exit(&format!("unknown pattern {pattern}")),
    };
    let amount = positional.get(2).map_or(default, |s| {
        s.parse()
            .unwrap_or_else(|_| usage_exit(&format!("not a number: {s}")))
    });
    Opts {
        addr,
        pattern,
        amount,
        pid,
        pairs,
        threads,
        rate,
        hold,
        deadline: Instant::now() + Duration::from_secs(limit),
        tag: Rng::seeded(u64::from(std::process::id())).next() as u32,
    }
}

/// xorshift64*: ids and bodies only need to look random.
struct Rng(u64);

impl Rng {
    fn seeded(salt: u64) -> Rng {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng((now ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Connects that took over 0.9 s: a SYN dropped and sent again.
static SLOW_CONNECTS: AtomicU64 = AtomicU64::new(0);

fn connect(addr: &SocketAddr) -> io::Result<TcpStream> {
    let start = Instant::now();
    let stream = TcpStream::connect_timeout(addr, TIMEOUT);
    if start.elapsed() > Duration::from_millis(900) {
        SLOW_CONNECTS.fetch_add(1, Ordering::Relaxed);
    }
    let stream = stream?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    Ok(stream)
}

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(addr: &SocketAddr) -> io::Result<Conn> {
        let stream = connect(addr)?;
        Ok(Conn {
            reader: BufReader::with_capacity(16 * 1024, stream.try_clone()?),
            writer: stream,
        })
    }

    /// Reads one response with a `Content-Length` body into `body`; returns the status.
    fn read_response(&mut self, body: &mut Vec<u8>) -> io::Result<u16> {
        haproxy_bench::read_response(&mut self.reader, body)
    }
}

/// Response statuses and errors, shared by the threads of a pattern.
#[derive(Default)]
struct Counts {
    statuses: Mutex<BTreeMap<u16, u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Counts {
    fn status(&self, status: u16) {
        *self.statuses.lock().unwrap().entry(status).or_default() += 1;
    }

    fn error(&self, what: &str, e: &io::Error) {
        let key = match e.kind() {
            io::ErrorKind::Other | io::ErrorKind::InvalidData => format!("{what}: {e}"),
            kind => format!("{what}: {kind:?}"),
        };
        *self.errors.lock().unwrap().entry(key).or_default() += 1;
    }

    fn total_errors(&self) -> u64 {
        self.errors.lock().unwrap().values().sum()
    }
}

/// What `/metrics` says, summed over labels.
#[derive(Default, Clone)]
struct Metrics {
    channels: Option<f64>,
    waiters: Option<f64>,
    connections_open: Option<f64>,
    /// `httprelay_loop_*` sample lines, verbatim.
    loop_lines: Vec<String>,
}

fn parse_metrics(text: &str) -> Metrics {
    let mut m = Metrics::default();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = &line[..line.find(['{', ' ']).unwrap_or(line.len())];
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        let slot = match name {
            "httprelay_channels" => &mut m.channels,
            "httprelay_waiters" => &mut m.waiters,
            "httprelay_connections_open" => &mut m.connections_open,
            _ => {
                if name.starts_with("httprelay_loop_") {
                    m.loop_lines.push(line.to_string());
                }
                continue;
            }
        };
        if let Some(v) = value {
            *slot = Some(slot.unwrap_or(0.0) + v);
        }
    }
    m
}

fn scrape(addr: &SocketAddr) -> io::Result<Metrics> {
    let mut conn = Conn::open(addr)?;
    conn.writer
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")?;
    let mut body = Vec::new();
    let status = conn.read_response(&mut body)?;
    if status != 200 {
        return Err(io::Error::other(format!("/metrics answered {status}")));
    }
    Ok(parse_metrics(&String::from_utf8_lossy(&body)))
}

/// `VmRSS` and `VmHWM` of the process, in KiB.
fn memory_kib(pid: Option<u32>) -> (Option<u64>, Option<u64>) {
    let Some(status) = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
    else {
        return (None, None);
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time (user + system) the process has used, in seconds.
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    // Fields after the command name (which may hold spaces): state is the first,
    // utime and stime the 12th and 13th. Clock ticks are 1/100 s (USER_HZ).
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

struct Snapshot {
    cpu: Option<f64>,
    rss: Option<u64>,
    hwm: Option<u64>,
    metrics: Option<Metrics>,
}

fn snapshot(o: &Opts) -> Snapshot {
    let (rss, hwm) = memory_kib(o.pid);
    let metrics = match scrape(&o.addr) {
        Ok(m) => Some(m),
        Err(e) => {
            println!("  /metrics: {e}");
            None
        }
    };
    Snapshot {
        cpu: cpu_seconds(o.pid),
        rss,
        hwm,
        metrics,
    }
}

fn num<T: Into<f64>>(v: Option<T>) -> String {
    match v.map(Into::into) {
        None => "na".to_string(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{}", v as i64),
        Some(v) => format!("{v}"),
    }
}

fn channels(s: &Snapshot) -> String {
    num(s.metrics.as_ref().and_then(|m| m.channels))
}

fn waiters(s: &Snapshot) -> String {
    num(s.metrics.as_ref().and_then(|m| m.waiters))
}

/// Samples RSS every 250 ms (keeping the peak) and `/metrics` every second,
/// printing one progress line per second, until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<(Option<u64>, u64)>,
}

impl Sampler {
    fn start(o: &Opts, done: Arc<AtomicU64>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, pid) = (o.addr, o.pid);
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let start = Instant::now();
            let (mut peak, mut scrape_errors, mut tick) = (None::<u64>, 0u64, 0u64);
            while !flag.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(250));
                tick += 1;
                let (rss, _) = memory_kib(pid);
                if let Some(r) = rss {
                    peak = Some(peak.map_or(r, |p| p.max(r)));
                }
                if tick % 4 != 0 {
                    continue;
                }
                let m = scrape(&addr).unwrap_or_else(|_| {
                    scrape_errors += 1;
                    Metrics::default()
                });
                println!(
                    "  t={:.0}s done={} rss_kib={} channels={} waiters={} connections_open={}",
                    start.elapsed().as_secs_f64(),
                    done.load(Ordering::Relaxed),
                    num(rss.map(|r| r as f64)),
                    num(m.channels),
                    num(m.waiters),
                    num(m.connections_open),
                );
            }
            (peak, scrape_errors)
        });
        Sampler { stop, handle }
    }

    fn finish(self) -> (Option<u64>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or((None, 0))
    }
}

/// `key=value` fields of the summary line, in order.
type Fields = Vec<(&'static str, String)>;

fn percentile(sorted: &[u32], p: f64) -> String {
    if sorted.is_empty() {
        return "na".to_string();
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    format!("{:.2}", f64::from(sorted[rank - 1]) / 1000.0)
}

/// One link exchange on a fresh id; returns its latency in µs.
fn exchange(
    consumer: &mut Conn,
    producer: &mut Conn,
    path: &str,
    payload: &[u8],
    counts: &Counts,
    buf: &mut Vec<u8>,
) -> io::Result<u32> {
    let get = format!("GET {path} HTTP/1.1\r\nHost: soak\r\n\r\n");
    let mut post = format!(
        "POST {path} HTTP/1.1\r\nHost: soak\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        payload.len()
    )
    .into_bytes();
    post.extend_from_slice(payload);
    let start = Instant::now();
    consumer.writer.write_all(get.as_bytes())?;
    producer.writer.write_all(&post)?;
    let status = consumer.read_response(buf)?;
    counts.status(status);
    if status != 200 {
        return Err(io::Error::other(format!("consumer got {status}")));
    }
    if buf != payload {
        return Err(io::Error::other("consumer body differs"));
    }
    let status = producer.read_response(buf)?;
    counts.status(status);
    if status != 200 {
        return Err(io::Error::other(format!("producer got {status}")));
    }
    Ok(start.elapsed().as_micros().min(u128::from(u32::MAX)) as u32)
}

fn unique_pairs(o: &Opts, done: &AtomicU64, counts: &Counts) -> Fields {
    let start = Instant::now();
    let end = start + Duration::from_secs(o.amount);
    let mut latencies: Vec<u32> = thread::scope(|s| {
        let threads: Vec<_> = (0..o.pairs)
            .map(|t| {
                s.spawn(move || {
                    let mut rng = Rng::seeded(t as u64 + 1);
                    let (mut latencies, mut n, mut buf) = (Vec::new(), 0u64, Vec::new());
                    let mut conns: Option<(Conn, Conn)> = None;
                    while Instant::now() < end {
                        let (consumer, producer) = match &mut conns {
                            Some((c, p)) => (c, p),
                            None => {
                                match Conn::open(&o.addr)
                                    .and_then(|c| Ok((c, Conn::open(&o.addr)?)))
                                {
                                    Ok(pair) => conns = Some(pair),
                                    Err(e) => {
                                        counts.error("connect", &e);
                                        thread::sleep(Duration::from_millis(100));
                                    }
                                }
                                continue;
                            }
                        };
                        let r = rng.next();
                        let path = format!("/link/u-{t}-{n}-{:08x}", r as u32);
                        let payload: Vec<u8> = (0..64u64)
                            .map(|i| (r >> (i % 56)) as u8 ^ i as u8)
                            .collect();
                        n += 1;
                        match exchange(consumer, producer, &path, &payload, counts, &mut buf) {
                            Ok(us) => {
                                latencies.push(us);
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                counts.error("exchange", &e);
                                conns = None;
                            }
                        }
                    }
                    latencies
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_default())
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let exchanges = latencies.len();
    vec![
        ("seconds", format!("{elapsed:.1}")),
        ("pairs", o.pairs.to_string()),
        ("exchanges", exchanges.to_string()),
        ("rate", format!("{:.0}", exchanges as f64 / elapsed)),
        ("p50_ms", percentile(&latencies, 0.5)),
        ("p99_ms", percentile(&latencies, 0.99)),
        ("p999_ms", percentile(&latencies, 0.999)),
        ("max_ms", percentile(&latencies, 1.0)),
    ]
}

/// Runs `op(n, rng, conn)` for n in 0..count over `--threads` threads. `conn` is
/// the thread's keep-alive connection, for ops that use one; `op` returns the
/// response status when it read one.
fn flood<F>(o: &Opts, done: &AtomicU64, counts: &Counts, op: F) -> Fields
where
    F: Fn(u64, &mut Rng, &mut Option<Conn>) -> io::Result<Option<u16>> + Sync,
{
    let next = AtomicU64::new(0);
    let start = Instant::now();
    thread::scope(|s| {
        for t in 0..o.threads {
            let (next, op) = (&next, &op);
            s.spawn(move || {
                let mut rng = Rng::seeded(t as u64 + 1000);
                let mut conn = None;
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= o.amount || Instant::now() >= o.deadline {
                        break;
                    }
                    if o.rate > 0 {
                        let due = start + Duration::from_secs_f64(n as f64 / o.rate as f64);
                        thread::sleep(due.saturating_duration_since(Instant::now()));
                    }
                    match op(n, &mut rng, &mut conn) {
                        Ok(status) => {
                            if let Some(status) = status {
                                counts.status(status);
                            }
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            counts.error(&o.pattern, &e);
                            conn = None;
                        }
                    }
                }
            });
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    let sent = done.load(Ordering::Relaxed);
    vec![
        ("count", o.amount.to_string()),
        ("sent", sent.to_string()),
        ("seconds", format!("{elapsed:.1}")),
        ("rate", format!("{:.0}", sent as f64 / elapsed)),
    ]
}

/// Opens a connection, sends `request` and closes it without reading anything.
fn send_and_close(addr: &SocketAddr, request: &[u8]) -> io::Result<Option<u16>> {
    let mut stream = connect(addr)?;
    stream.write_all(request)?;
    Ok(None)
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: soak\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// `rss_start`: the relay's RSS before the pattern, for the per-connection figure.
fn parked_producers(o: &Opts, done: &AtomicU64, counts: &Counts, rss_start: Option<u64>) -> Fields {
    let start = Instant::now();
    let mut rng = Rng::seeded(7);
    let mut open = Vec::new();
    for n in 0..o.amount {
        if Instant::now() >= o.deadline {
            break;
        }
        if o.rate > 0 {
            let due = start + Duration::from_secs_f64(n as f64 / o.rate as f64);
            thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let body: Vec<u8> = (0..100).map(|_| b'a' + (rng.next() % 26) as u8).collect();
        let req = post(&format!("/link/pp-{:08x}-{n}", o.tag), &body);
        match connect(&o.addr).and_then(|mut s| s.write_all(&req).map(|()| s)) {
            Ok(s) => {
                open.push(s);
                done.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => counts.error("park", &e),
        }
    }
    let opened = open.len();
    println!(
        "  opened {opened} producers in {:.1} s; holding {} s",
        start.elapsed().as_secs_f64(),
        o.hold
    );
    thread::sleep(Duration::from_secs(o.hold));
    // Still parked: nothing to read yet. Otherwise the relay answered or closed.
    let (mut parked, mut answered, mut closed) = (0u64, 0u64, 0u64);
    let mut byte = [0u8; 1];
    for s in &open {
        let _ = s.set_nonblocking(true);
        match s.peek(&mut byte) {
            Ok(0) => closed += 1,
            Ok(_) => answered += 1,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => parked += 1,
            Err(_) => closed += 1,
        }
    }
    let during = snapshot(o);
    drop(open);
    let per_conn = match (during.rss, rss_start) {
        (Some(d), Some(s)) if parked > 0 => {
            format!("{:.2}", (d as f64 - s as f64) / parked as f64)
        }
        _ => "na".to_string(),
    };
    vec![
        ("count", o.amount.to_string()),
        ("opened", opened.to_string()),
        ("parked", parked.to_string()),
        ("answered", answered.to_string()),
        ("closed_by_relay", closed.to_string()),
        ("rss_parked_kib", num(during.rss.map(|r| r as f64))),
        ("rss_parked_per_conn_kib", per_conn),
        ("waiters_parked", waiters(&during)),
        ("channels_parked", channels(&during)),
    ]
}

fn main() {
    let o = parse_args();
    println!(
        "relay-soak {} against {} (pid {})",
        o.pattern,
        o.addr,
        o.pid.map_or("none".to_string(), |p| p.to_string())
    );
    let before = snapshot(&o);
    let done = Arc::new(AtomicU64::new(0));
    let counts = Counts::default();
    let sampler = Sampler::start(&o, done.clone());
    let addr = o.addr;
    let tag = o.tag;
    let mut fields = match o.pattern.as_str() {
        "unique-pairs" => unique_pairs(&o, &done, &counts),
        "abandoned-gets" => flood(&o, &done, &counts, |n, _, _| {
            let req = format!("GET /link/ag-{tag:08x}-{n} HTTP/1.1\r\nHost: soak\r\n\r\n");
            send_and_close(&addr, req.as_bytes())
        }),
        "secret-producers" => flood(&o, &done, &counts, |n, _, _| {
            let path = format!("/link/sp-{tag:08x}-{n}?wsecret=s-{n}");
            send_and_close(&addr, &post(&path, b"hello"))
        }),
        "proxy-jobs" => {
            let body = vec![b'j'; 1000];
            flood(&o, &done, &counts, |n, _, _| {
                send_and_close(&addr, &post(&format!("/proxy/pj-{tag:08x}-{n}/x"), &body))
            })
        }
        "empty-mcast" => flood(&o, &done, &counts, |n, _, conn| {
            if conn.is_none() {
                *conn = Some(Conn::open(&addr)?);
            }
            let c = conn.as_mut().expect("just opened");
            c.writer
                .write_all(&post(&format!("/mcast/em-{tag:08x}-{n}"), b""))?;
            let mut body = Vec::new();
            c.read_response(&mut body).map(Some)
        }),
        "parked-producers" => parked_producers(&o, &done, &counts, before.rss),
        other => unreachable!("pattern {other} checked in parse_args"),
    };
    let (peak, scrape_errors) = sampler.finish();
    thread::sleep(Duration::from_secs(1));
    let after = snapshot(&o);
    let peak = [before.rss, peak, after.rss].into_iter().flatten().max();

    for (status, n) in counts.statuses.lock().unwrap().iter() {
        println!("  status {status}: {n}");
    }
    for (what, n) in counts.errors.lock().unwrap().iter() {
        println!("  error {what}: {n}");
    }
    if scrape_errors > 0 {
        println!("  /metrics scrapes failed: {scrape_errors}");
    }
    for line in after.metrics.iter().flat_map(|m| &m.loop_lines) {
        println!("  {line}");
    }
    let statuses = counts.statuses.lock().unwrap().clone();
    let (ok, busy) = (
        statuses.get(&200).copied().unwrap_or(0),
        statuses.get(&503).copied().unwrap_or(0),
    );
    let other: u64 = statuses
        .iter()
        .filter(|(s, _)| **s != 200 && **s != 503)
        .map(|(_, n)| n)
        .sum();
    fields.extend([
        ("status_200", ok.to_string()),
        ("status_503", busy.to_string()),
        ("status_other", other.to_string()),
        ("errors", counts.total_errors().to_string()),
        (
            "slow_connects",
            SLOW_CONNECTS.load(Ordering::Relaxed).to_string(),
        ),
        ("rss_before_kib", num(before.rss.map(|r| r as f64))),
        ("rss_peak_kib", num(peak.map(|r| r as f64))),
        ("rss_after_kib", num(after.rss.map(|r| r as f64))),
        ("hwm_kib", num(after.hwm.map(|r| r as f64))),
        (
            "relay_cpu_s",
            match (before.cpu, after.cpu) {
                (Some(b), Some(a)) => format!("{:.1}", a - b),
                _ => "na".to_string(),
            },
        ),
        ("channels_before", channels(&before)),
        ("channels_after", channels(&after)),
        ("waiters_after", waiters(&after)),
    ]);
    let mut line = format!("pattern={}", o.pattern);
    for (key, value) in fields {
        let _ = write!(line, " {key}={value}");
    }
    println!("{line}");
}

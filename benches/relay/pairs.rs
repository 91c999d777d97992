//! Pair throughput: many pairs exchanging back to back, driven by an
//! event-driven (mio) client so that the load generator needs few context
//! switches and leaves the CPU to the server under test.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use httprelay_testkit::complete_length;

use crate::relay::{get_request, post_request};
use crate::report::{met, ratio, row3, Report};
use crate::stats::{percentile, Series, Trio};
use crate::usage::{thread_usage, Usage};
use crate::{plain_connect, relay, Res, Setup, IO_TIMEOUT, SMALL};

/// Runs `work` on one thread per state for `secs`; returns [exchanges/s, p99 µs,
/// server CPU s, server run-queue wait s, client CPU s, client run-queue wait s,
/// server CPU µs per exchange] where the server's usage comes from `usage()`
/// before and after.
fn timed<S: Send>(
    states: &mut [S],
    secs: f64,
    usage: &dyn Fn() -> Usage,
    work: fn(&mut S, &AtomicBool, &mut Vec<u64>) -> Res<u64>,
) -> Res<[f64; 7]> {
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
        if total > 0 {
            cpu_used.0 / total as f64 * 1e6
        } else {
            f64::NAN
        },
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
            Err(e) => return Err(format!("write: {e}").into()),
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
            Err(e) => return Err(format!("read: {e}").into()),
        }
    }
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
        let poll = mio::Poll::new()?;
        let mut pairs = Vec::new();
        for (i, (c, p, get, post)) in conns.into_iter().enumerate() {
            let mut socks = Vec::new();
            for (k, s) in [c, p].into_iter().enumerate() {
                s.set_nonblocking(true)?;
                let mut s = mio::net::TcpStream::from_std(s);
                poll.registry()
                    .register(&mut s, mio::Token(2 * i + k), mio::Interest::READABLE)?;
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
                    return Err(format!("{busy} exchanges never finished").into());
                }
            }
            self.poll
                .poll(&mut events, Some(Duration::from_millis(20)))?;
            for ev in events.iter() {
                let i = ev.token().0 / 2;
                let pair = &mut self.pairs[i];
                if ev.token().0 % 2 == 0 {
                    read_nb(&mut pair.c, &mut pair.cbuf, &mut pair.clen)?;
                    let want = if http {
                        complete_length(&pair.cbuf[..pair.clen])
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
                    if let Some(n) = complete_length(&pair.pbuf[..pair.plen]) {
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

fn pairs(setup: &Setup) -> Res<Trio> {
    let threads = setup.plan.client_threads.clamp(1, setup.plan.pairs.max(1));
    let mut relay_conns: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
    let mut copy_conns: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
    let mut big_conns: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
    for i in 0..setup.plan.pairs {
        let path = format!("/link/pair{i}");
        let t = i % threads;
        relay_conns[t].push((
            plain_connect(setup.relay.tcp_addr())?,
            plain_connect(setup.relay.tcp_addr())?,
            get_request(&path),
            post_request(&path, &[b'x'; SMALL]),
        ));
        let (p, c) = setup.copy.pair()?;
        copy_conns[t].push((c, p, Vec::new(), vec![b'x'; SMALL]));
        let (p, c) = setup.big.pair()?;
        big_conns[t].push((c, p, Vec::new(), vec![b'x'; SMALL]));
    }
    let clients = |conns: Vec<Vec<_>>, http| -> Res<Vec<EvClient>> {
        conns.into_iter().map(|c| EvClient::new(c, http)).collect()
    };
    let mut relay_clients = clients(relay_conns, true)?;
    let mut copy_clients = clients(copy_conns, false)?;
    let mut big_clients = clients(big_conns, false)?;
    let relay_cpu = || relay::usage(setup.relay);
    let copy_cpu = || setup.copy.book.usage();
    let big_cpu = || setup.big.book.usage();
    // Warm-up: every connection a few times.
    let warm = 0.2_f64.min(setup.plan.pair_secs);
    timed(&mut relay_clients, warm, &relay_cpu, EvClient::run)?;
    timed(&mut copy_clients, warm, &copy_cpu, EvClient::run)?;
    timed(&mut big_clients, warm, &big_cpu, EvClient::run)?;
    let mut out = Trio {
        relay: Series::default(),
        copy: Series::default(),
        big: Series::default(),
    };
    for run in 0..setup.plan.runs {
        eprintln!("bench: pair throughput run {}/{}", run + 1, setup.plan.runs);
        let secs = setup.plan.pair_secs;
        out.relay
            .push(&timed(&mut relay_clients, secs, &relay_cpu, EvClient::run)?);
        out.copy
            .push(&timed(&mut copy_clients, secs, &copy_cpu, EvClient::run)?);
        out.big
            .push(&timed(&mut big_clients, secs, &big_cpu, EvClient::run)?);
    }
    Ok(out)
}

/// Exchanges per second, their p99, and the CPU and run-queue wait each
/// server needed for them.
pub fn section(setup: &Setup, report: &mut Report) -> Res<()> {
    let plan = setup.plan;
    let t = pairs(setup)?;
    let (r, c, b) = (t.relay.median(0), t.copy.median(0), t.big.median(0));
    let mut row = row3(&format!("{} pairs: exchanges/s", plan.pairs), r, c, b, 0);
    row.target = "≥ 0.5× io::copy".into();
    row.met = met((!ratio(r, c).is_nan()).then(|| ratio(r, c) >= 0.5));
    report.rows.push(row);
    report.rows.push(row3(
        &format!("{} pairs: p99 (µs)", plan.pairs),
        t.relay.median(1),
        t.copy.median(1),
        t.big.median(1),
        1,
    ));
    report.rows.push(row3(
        &format!("{} pairs: server CPU s in {} s", plan.pairs, plan.pair_secs),
        t.relay.median(2),
        t.copy.median(2),
        t.big.median(2),
        2,
    ));
    let (rx, cx, bx) = (t.relay.median(6), t.copy.median(6), t.big.median(6));
    let mut row = row3(
        &format!("{} pairs: server CPU µs per exchange", plan.pairs),
        rx,
        cx,
        bx,
        2,
    );
    row.target = "≤ 1.25× io::copy".into();
    row.met = met((!ratio(rx, cx).is_nan()).then(|| ratio(rx, cx) <= 1.25));
    report.rows.push(row);
    report.rows.push(row3(
        &format!(
            "{} pairs: server run-queue wait s in {} s",
            plan.pairs, plan.pair_secs
        ),
        t.relay.median(3),
        t.copy.median(3),
        t.big.median(3),
        2,
    ));
    report.notes.push(format!(
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
    Ok(())
}

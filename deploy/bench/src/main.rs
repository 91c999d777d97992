//! Load generator for `scripts/bench-haproxy.sh`: link exchanges per second.
//!
//! `PAIRS` pairs each loop over one channel (`/link/bench-{pair}`) on two keep-alive
//! connections: send the consumer's `GET`, send the producer's `POST` with a small
//! body, read the consumer's response (checking every byte), read the producer's.
//! One such round is one exchange. Bodies are small, so neither write can block and
//! one thread per pair is enough. Exchanges completed after a warm-up second are
//! counted for `SECONDS` seconds.
//!
//! Usage: haproxy-bench ADDR[,ADDR...] [PAIRS] [SECONDS] [BODY_BYTES]
//! (with several addresses, pair k uses address k mod n: relays without HAProxy).
//! Prints one line: `exchanges=N seconds=S p50_ms=.. p99_ms=.. max_ms=.. rate=R`
//! (latency: from sending the consumer's GET to the producer's response).

use std::io::{self, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(addr: &str) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
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

/// Runs one pair until `stop`; returns the latency of each counted exchange, in µs.
fn pair(
    addr: &str,
    id: usize,
    body_len: usize,
    stop: &AtomicBool,
    counting: &AtomicBool,
    done: &AtomicU64,
) -> Vec<u32> {
    let mut latencies = Vec::new();
    let mut run = || -> io::Result<()> {
        let mut consumer = Conn::open(addr)?;
        let mut producer = Conn::open(addr)?;
        let path = format!("/link/bench-{id}");
        let get = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
        let mut buf = Vec::new();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let payload: Vec<u8> = (0..body_len)
                .map(|i| (i as u64 ^ n ^ id as u64) as u8)
                .collect();
            let mut post = format!(
                "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\nContent-Length: {body_len}\r\n\r\n"
            )
            .into_bytes();
            post.extend_from_slice(&payload);
            let start = Instant::now();
            consumer.writer.write_all(get.as_bytes())?;
            producer.writer.write_all(&post)?;
            let status = consumer.read_response(&mut buf)?;
            if status != 200 || buf != payload {
                return Err(io::Error::other(format!(
                    "pair {id}: consumer got {status}, {} bytes",
                    buf.len()
                )));
            }
            let status = producer.read_response(&mut buf)?;
            if status != 200 {
                return Err(io::Error::other(format!(
                    "pair {id}: producer got {status}"
                )));
            }
            if counting.load(Ordering::Relaxed) {
                latencies.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
                done.fetch_add(1, Ordering::Relaxed);
            }
            n += 1;
        }
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("haproxy-bench: pair {id}: {e}");
        std::process::exit(1);
    }
    latencies
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(addr) = args.first().cloned() else {
        eprintln!("usage: haproxy-bench ADDR [PAIRS] [SECONDS] [BODY_BYTES]");
        std::process::exit(2);
    };
    let num = |i: usize, default: u64| -> u64 {
        args.get(i)
            .map(|s| s.parse().expect("a number"))
            .unwrap_or(default)
    };
    let (pairs, seconds, body) = (num(1, 64) as usize, num(2, 10), num(3, 64) as usize);

    let stop = Arc::new(AtomicBool::new(false));
    let counting = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..pairs)
        .map(|id| {
            // Several comma-separated addresses: pair k uses address k mod n.
            let addrs: Vec<&str> = addr.split(',').collect();
            let addr = addrs[id % addrs.len()].to_string();
            let (stop, done) = (stop.clone(), done.clone());
            let counting = counting.clone();
            thread::spawn(move || pair(&addr, id, body, &stop, &counting, &done))
        })
        .collect();
    thread::sleep(Duration::from_secs(1));
    counting.store(true, Ordering::Relaxed);
    let start = Instant::now();
    thread::sleep(Duration::from_secs(seconds));
    counting.store(false, Ordering::Relaxed);
    let (elapsed, exchanges) = (start.elapsed(), done.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    let mut latencies: Vec<u32> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap_or_default())
        .collect();
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |&us| us as f64 / 1000.0)
    };
    println!(
        "exchanges={exchanges} seconds={:.2} p50_ms={:.2} p99_ms={:.2} max_ms={:.1} rate={:.0}",
        elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
        exchanges as f64 / elapsed.as_secs_f64()
    );
}

//! Stress: slow and flooding clients, descriptor exhaustion, and a long soak of short
//! link transfers.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::support::{body_for, req, Conn, Relay, RssSampler, PARK};
use super::{get, post, VERSION};

/// How long a client here waits for an answer before the test fails.
const ANSWER: Duration = Duration::from_secs(10);

/// One link transfer on fresh connections (consumer first); panics unless the bytes
/// arrive intact and both sides get `200`.
fn transfer(relay: &Relay, path: &str, body: &[u8], what: &str) {
    super::support::link_exchange(relay.addr(), path, path, body, ANSWER, what);
}

/// A health check on a fresh connection.
pub(super) fn health(relay: &Relay, what: &str) {
    let mut conn = relay.connect();
    conn.set_read_timeout(ANSWER);
    let r = conn.exchange(&get("/health"));
    assert_eq!(r.status(), 200, "{what}: /health {:?}", r.head);
    assert_eq!(r.text(), VERSION, "{what}: /health");
}

/// Opens up to `n` connections that each send `prefix` and then stall; connections
/// the kernel does not complete within a few seconds are skipped.
fn stalled_connections(addr: SocketAddr, n: usize, prefix: &[u8]) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
            if !prefix.is_empty() {
                s.write_all(prefix).ok()?;
            }
            Some(s)
        })
        .collect()
}

/// Runs `count` link transfers on `threads` threads at once, each checked.
fn transfers(relay: &Relay, tag: &str, threads: usize, count: usize, size: usize) {
    thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                for i in (t..count).step_by(threads) {
                    let body = body_for(i as u64 + 1, size + i * 97);
                    let path = format!("/link/{tag}-{i}");
                    transfer(relay, &path, &body, &format!("{tag} transfer {i}"));
                }
            });
        }
    });
}

#[test]
fn slowloris_does_not_starve_link_transfers() {
    let relay = Relay::start();
    let addr = relay.tcp_addr();
    let head = b"POST /link/slowloris HTTP/1.1\r\nHost: relay.test\r\nContent-Length: 1\r\n\r\nx";
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let s = TcpStream::connect(addr).expect("connect a slowloris client");
            s.set_nodelay(true).expect("nodelay");
            s
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // One byte per connection per second (the 10 s head timeout may cut them).
    let dribbler = thread::spawn(move || {
        let mut at = 0;
        while !flag.load(Ordering::Relaxed) && at < head.len() {
            for s in &mut slow {
                let _ = s.write_all(&head[at..at + 1]);
            }
            at += 1;
            let tick = Instant::now();
            while tick.elapsed() < Duration::from_secs(1) && !flag.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(20));
            }
        }
        slow.len()
    });
    thread::sleep(Duration::from_secs(2));

    let started = Instant::now();
    transfers(&relay, "slowloris", 10, 100, 16 * 1024);
    health(&relay, "during slowloris");
    eprintln!(
        "slowloris: 100 transfers in {:?} beside 200 dribbling connections",
        started.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    assert_eq!(dribbler.join().expect("dribbler"), 200);
}

/// The relay's descriptor limit (soft, hard) from /proc/PID/limits.
fn nofile_limit(relay: &Relay) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", relay.pid()))
        .expect("relay /proc limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line");
    let mut numbers = line.split_whitespace().filter_map(|w| w.parse().ok());
    (
        numbers.next().expect("soft limit"),
        numbers.next().expect("hard limit"),
    )
}

/// How many descriptors the relay has open.
fn open_fds(relay: &Relay) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", relay.pid()))
        .expect("relay /proc fd")
        .count()
}

/// Whether the relay has closed `s` (end of stream or reset), without blocking.
fn closed_by_relay(mut s: &TcpStream) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let mut probe = [0u8; 256];
    loop {
        match s.read(&mut probe) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

#[test]
fn flood_of_stalled_heads_is_evicted_and_service_continues() {
    let mut relay = Relay::start_nofile(256, &[]);
    assert_eq!(
        nofile_limit(&relay),
        (256, 256),
        "the relay's RLIMIT_NOFILE"
    );
    let addr = relay.tcp_addr();

    // Parked waiters with complete requests are never evicted.
    let mut parked: Vec<Conn> = (0..10)
        .map(|i| {
            let mut c = relay.connect();
            c.set_read_timeout(ANSWER);
            c.send(&get(&format!("/link/parked-{i}")));
            c
        })
        .collect();
    thread::sleep(PARK);

    let partial = b"GET /health HTTP/1.1\r\nHost: flood\r\n";
    let flood = stalled_connections(addr, 512, partial);
    eprintln!("flood: {} stalled connections opened", flood.len());

    // Keep flooding while the real clients work.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let flooder = thread::spawn(move || {
        let mut more: Vec<TcpStream> = Vec::new();
        let mut opened = 0;
        while !flag.load(Ordering::Relaxed) {
            let batch = stalled_connections(addr, 16, partial);
            opened += batch.len();
            more.extend(batch);
            if more.len() > 512 {
                more.drain(..256);
            }
            thread::sleep(Duration::from_millis(20));
        }
        opened
    });

    thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..20 {
                health(&relay, &format!("health check {i} during the flood"));
                thread::sleep(Duration::from_millis(50));
            }
        });
        scope.spawn(|| transfers(&relay, "flood", 4, 20, 32 * 1024));
    });
    stop.store(true, Ordering::Relaxed);
    let opened = flooder.join().expect("flooder");
    eprintln!("flood: {opened} more stalled connections opened during the checks");
    assert!(relay.is_running(), "relay died:\n{}", relay.output());
    health(&relay, "after the flood");

    // The oldest stalled connections were evicted (closed), not left waiting.
    thread::sleep(Duration::from_millis(300));
    let evicted = flood.iter().filter(|s| closed_by_relay(s)).count();
    eprintln!(
        "flood: {evicted} of the first {} stalled connections were closed by the relay; \
         it has {} descriptors open",
        flood.len(),
        open_fds(&relay)
    );
    assert!(
        evicted >= 256,
        "only {evicted} of the first {} stalled connections were evicted",
        flood.len()
    );

    // The parked waiters are still there and still pair.
    for (i, consumer) in parked.iter_mut().enumerate() {
        let body = body_for(1000 + i as u64, 1000 + i);
        let mut producer = relay.connect();
        producer.set_read_timeout(ANSWER);
        producer.send(&post(&format!("/link/parked-{i}"), &body));
        let got = consumer.read_response();
        assert_eq!(got.status(), 200, "parked consumer {i}: {:?}", got.head);
        assert!(got.body() == body.as_slice(), "parked consumer {i}: body");
        assert_eq!(producer.read_response().status(), 200, "producer {i}");
    }
    drop(flood);
}

#[test]
fn emfile_in_accept_keeps_serving_without_spinning() {
    let mut relay = Relay::start_nofile(64, &["--max-conns", "10000"]);
    assert_eq!(nofile_limit(&relay), (64, 64), "the relay's RLIMIT_NOFILE");
    let addr = relay.tcp_addr();
    let idle = stalled_connections(addr, 200, b"");
    thread::sleep(Duration::from_millis(500));
    let fds = open_fds(&relay);
    eprintln!(
        "emfile: {} idle connections opened; the relay has {fds} descriptors open",
        idle.len()
    );
    assert!(
        fds >= 56,
        "the relay holds only {fds} descriptors of 64: the test did not reach EMFILE"
    );

    health(&relay, "at EMFILE");
    transfer(
        &relay,
        "/link/emfile",
        &body_for(64, 100_000),
        "link transfer at EMFILE",
    );

    let before = relay.cpu_time();
    thread::sleep(Duration::from_secs(2));
    let used = relay.cpu_time().saturating_sub(before);
    eprintln!("emfile: relay used {used:?} of CPU in a 2 s idle window");
    assert!(relay.is_running(), "relay died:\n{}", relay.output());
    assert!(
        used < Duration::from_secs(1),
        "the relay used {used:?} of CPU in a 2 s idle window at EMFILE: it is spinning"
    );
    health(&relay, "after the idle window");
    drop(idle);
}

#[test]
fn soak_100k_short_link_transfers_on_keep_alive_pairs() {
    const PAIRS: usize = 50;
    const PER_PAIR: usize = 2000;
    let relay = Relay::start();
    let baseline = relay.rss_kib();
    let sampler = RssSampler::start(relay.pid());
    let started = Instant::now();
    thread::scope(|scope| {
        for pair in 0..PAIRS {
            let relay = &relay;
            scope.spawn(move || {
                let path = format!("/link/soak-{pair}");
                let mut producer: Conn = relay.connect();
                let mut consumer: Conn = relay.connect();
                producer.set_read_timeout(ANSWER);
                consumer.set_read_timeout(ANSWER);
                for i in 0..PER_PAIR {
                    let len = match i % 10 {
                        0 => 0,
                        1 => 1,
                        _ => (i * 131 + pair * 17) % 4001,
                    };
                    let body = body_for((pair * PER_PAIR + i) as u64, len);
                    let upload = req("POST", &path, &[], &body);
                    if (i + pair) % 2 == 0 {
                        producer.send(&upload);
                        consumer.send(&get(&path));
                    } else {
                        consumer.send(&get(&path));
                        producer.send(&upload);
                    }
                    let got = consumer.read_response();
                    assert_eq!(
                        got.status(),
                        200,
                        "pair {pair} transfer {i}: {:?}",
                        got.head
                    );
                    assert!(
                        got.body() == body.as_slice(),
                        "pair {pair} transfer {i}: {} bytes arrived, {len} sent, or the bytes \
                         differ",
                        got.body().len()
                    );
                    let done = producer.read_response();
                    assert_eq!(done.status(), 200, "pair {pair} transfer {i}: producer");
                    assert_eq!(done.body(), b"", "pair {pair} transfer {i}: producer");
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let (peak, _) = sampler.finish();
    thread::sleep(Duration::from_millis(500));
    let after = relay.rss_kib();
    eprintln!(
        "soak: {} transfers in {elapsed:?}; relay RSS {baseline} KiB before, peak {peak} KiB, \
         {after} KiB after",
        PAIRS * PER_PAIR
    );
    assert!(
        after <= baseline + 8 * 1024,
        "relay RSS {after} KiB after the soak, {baseline} KiB before (allowed: +8 MiB)"
    );
    health(&relay, "after the soak");
}

#[test]
fn max_conns_flag_evicts_stalled_heads_but_not_parked_waiters() {
    let mut relay = Relay::start_flags(&["--max-conns", "40"]);
    let addr = relay.tcp_addr();
    let mut parked: Vec<Conn> = (0..10)
        .map(|i| {
            let mut c = relay.connect();
            c.set_read_timeout(ANSWER);
            c.send(&get(&format!("/link/max-conns-{i}")));
            c
        })
        .collect();
    thread::sleep(PARK);

    let flood = stalled_connections(addr, 100, b"GET /health HTTP/1.1\r\n");
    thread::sleep(Duration::from_millis(300));
    for i in 0..5 {
        health(&relay, &format!("health check {i} at --max-conns 40"));
    }
    transfer(
        &relay,
        "/link/max-conns-new",
        &body_for(40, 50_000),
        "a link transfer at --max-conns 40",
    );
    let evicted = flood.iter().filter(|s| closed_by_relay(s)).count();
    eprintln!(
        "max-conns: {evicted} of {} stalled connections evicted",
        flood.len()
    );
    assert!(
        evicted >= flood.len() - 40,
        "only {evicted} of {} stalled connections were evicted at --max-conns 40",
        flood.len()
    );
    for (i, consumer) in parked.iter_mut().enumerate() {
        let body = body_for(2000 + i as u64, 500 + i);
        let mut producer = relay.connect();
        producer.set_read_timeout(ANSWER);
        producer.send(&post(&format!("/link/max-conns-{i}"), &body));
        let got = consumer.read_response();
        assert_eq!(got.status(), 200, "parked consumer {i}: {:?}", got.head);
        assert!(got.body() == body.as_slice(), "parked consumer {i}: body");
        assert_eq!(producer.read_response().status(), 200, "producer {i}");
    }
    assert!(relay.is_running(), "relay died:\n{}", relay.output());
}

/// Whether the relay closes `s` (end of stream or reset) within `wait`; bytes
/// that arrive meanwhile are skipped.
fn closed_by_relay_within(mut s: &TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut probe = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).expect("set_read_timeout");
        match s.read(&mut probe) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

/// A /health exchange on a connection of its own that stays open afterwards.
fn health_kept(relay: &Relay, what: &str) -> Conn {
    let mut conn = relay.connect();
    conn.set_read_timeout(ANSWER);
    let r = conn.exchange(&get("/health"));
    assert_eq!(r.status(), 200, "{what}: /health {:?}", r.head);
    assert_eq!(r.text(), VERSION, "{what}: /health");
    conn
}

#[test]
fn max_conns_every_slot_is_usable_and_a_client_beyond_waits() {
    let relay = Relay::start_flags(&["--max-conns", "8"]);
    // As many parked consumers as the limit: none is evicted to make room.
    let mut parked: Vec<Conn> = (0..8)
        .map(|i| {
            let mut c = relay.connect();
            c.set_read_timeout(ANSWER);
            c.send(&get(&format!("/link/slots-{i}")));
            c
        })
        .collect();
    thread::sleep(PARK);

    // A ninth client waits (it is neither answered nor closed) while all are parked.
    let mut ninth = relay.connect();
    ninth.set_read_timeout(ANSWER);
    ninth.send(&get("/health"));
    assert!(
        ninth.is_silent_for(Duration::from_millis(1500)),
        "a client beyond --max-conns 8 with 8 parked waiters must wait, but it was answered \
         or closed"
    );
    for (i, consumer) in parked.iter_mut().enumerate() {
        assert!(
            consumer.is_silent_for(Duration::from_millis(50)),
            "parked consumer {i} was answered or closed at --max-conns 8"
        );
    }

    // One parked consumer leaves: the waiting client gets its slot and its answer.
    drop(parked.pop());
    let r = ninth.read_response();
    assert_eq!(r.status(), 200, "the waiting client: {:?}", r.head);
    assert_eq!(r.text(), VERSION, "the waiting client");
    drop(ninth);

    // The others are still parked and pair (each producer takes a freed or
    // evicted slot).
    for (i, consumer) in parked.iter_mut().enumerate() {
        let body = body_for(3000 + i as u64, 300 + i);
        let mut producer = relay.connect();
        producer.set_read_timeout(ANSWER);
        producer.send(&post(&format!("/link/slots-{i}"), &body));
        let got = consumer.read_response();
        assert_eq!(got.status(), 200, "parked consumer {i}: {:?}", got.head);
        assert!(got.body() == body.as_slice(), "parked consumer {i}: body");
        assert_eq!(producer.read_response().status(), 200, "producer {i}");
    }
}

#[test]
fn max_conns_evicts_the_longest_waiting_for_a_head_first() {
    let relay = Relay::start_flags(&["--max-conns", "8"]);
    let addr = relay.tcp_addr();
    // Four idle keep-alive connections (each answered once), then, well past the
    // eviction grace, four whose heads stopped halfway.
    let mut idle: Vec<Conn> = (0..4)
        .map(|i| health_kept(&relay, &format!("idle connection {i}")))
        .collect();
    thread::sleep(Duration::from_millis(700));
    let partial = stalled_connections(addr, 4, b"GET /health HTTP/1.1\r\nHost: relay.test\r\n");
    assert_eq!(partial.len(), 4, "connections with a partial head");
    thread::sleep(Duration::from_millis(700));

    // Four newcomers are served; the idle connections, the oldest, make room.
    let mut first: Vec<Conn> = (0..4)
        .map(|i| health_kept(&relay, &format!("newcomer {i}")))
        .collect();
    for (i, conn) in idle.iter_mut().enumerate() {
        assert!(
            conn.closed_within(ANSWER).is_some(),
            "idle connection {i}, among the oldest, was not evicted"
        );
    }
    for (i, s) in partial.iter().enumerate() {
        assert!(
            !closed_by_relay(s),
            "partial head {i} was evicted before older idle connections"
        );
    }

    // Four more: now the partial heads are the oldest.
    thread::sleep(Duration::from_millis(700));
    let second: Vec<Conn> = (0..4)
        .map(|i| health_kept(&relay, &format!("second newcomer {i}")))
        .collect();
    for (i, s) in partial.iter().enumerate() {
        assert!(
            closed_by_relay_within(s, ANSWER),
            "partial head {i}, among the oldest, was not evicted"
        );
    }
    for (i, conn) in first.iter_mut().enumerate() {
        assert!(
            conn.is_silent_for(Duration::from_millis(50)),
            "newcomer {i} was closed, though older connections were there to evict"
        );
        let r = conn.exchange(&get("/health"));
        assert_eq!(r.status(), 200, "newcomer {i} again: {:?}", r.head);
    }
    let metrics = first[0].exchange(&get("/metrics")).text();
    assert!(
        metrics
            .lines()
            .any(|l| l == "httprelay_connections_evicted_total 8"),
        "eight evictions counted:\n{metrics}"
    );
    drop(second);
}

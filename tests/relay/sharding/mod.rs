//! Several relays behind HAProxy, sharded by channel id (`deploy/haproxy.cfg`).
//!
//! Starts three relays (`--trust-proxy 127.0.0.1 --access-log --piping`) and HAProxy on
//! loopback with the shipped configuration, where only the listening addresses are
//! substituted (everything else, the channel-id extraction, the shard choice, the
//! health checks and timeouts, is the file as shipped). Then checks: 1,000 link
//! transfers on random ids with every byte verified, the ids spread over all three
//! relays, path variants of one id (`/link/a/ID`, `%2F`, percent-encoded letters)
//! meeting on one relay, inbox paths (`/inbox/ID`, `/ack`, `/await`) reaching the
//! relay of that id and a message stored, read, acknowledged and awaited through
//! HAProxy, mcast with 20 readers, a sync pair, proxy round trips,
//! `X-Real-IP`/`X-Real-Port` and `X-Forwarded-*` believed from HAProxy, a client that
//! leaves leaving its relay too; Piping Server transfers on 60 paths (some with `?n=2`
//! and two receivers, some senders with `Expect: 100-continue`), each path's parties
//! meeting on one relay and the paths spread over all three; and finally one relay
//! killed: once HAProxy's health check marks it down, channels and paths on the other
//! two keep working while requests for the lost shard get a fast `503`, not a hang.
//!
//! Needs `haproxy` (`scripts/install-haproxy.sh`). Without it the test prints a loud
//! `SHARDING TEST SKIPPED` banner and passes, unless `HTTPRELAY_REQUIRE_HAPROXY=1`
//! (as in CI), which turns the skip into a failure. `$HTTPRELAY_HAPROXY` names
//! another binary.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use super::support::{
    body_for, free_port, haproxy_binary, req, send_waiting, unix_ms, Addr, Conn, Haproxy, Relay,
    Response, PARK,
};
use super::{get, post};

mod inbox;
mod piping;
use piping::{piping, Piping, PIPING_PATHS};

/// How many relays the shipped configuration lists.
const RELAYS: usize = 3;
/// How many link transfers on random ids.
const TRANSFERS: usize = 1000;
/// How many client threads run them.
const THREADS: usize = 16;
/// How many Piping Server transfers, each on its own path.
/// The sender's last progress line of a transfer that every receiver got whole.
/// Any answer through HAProxy must come within this (nothing here waits longer).
const ANSWER: Duration = Duration::from_secs(10);
/// A request for a down relay's channel must be answered within this.
const FAST: Duration = Duration::from_secs(2);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Skips (loudly) or, with `HTTPRELAY_REQUIRE_HAPROXY=1`, fails.
fn unavailable(reason: &str) {
    super::support::unavailable(
        "SHARDING",
        "HTTPRELAY_REQUIRE_HAPROXY",
        reason,
        "tests/relay/sharding/ did NOT run: deploy/haproxy.cfg was not tried.",
        "Run scripts/install-haproxy.sh",
    );
}

/// Replaces the one occurrence of `from`; a shipped file that no longer has it
/// exactly once fails the test (update the substitutions along with the file).
fn replace_once(text: &mut String, from: &str, to: &str) {
    let count = text.matches(from).count();
    assert_eq!(
        count, 1,
        "deploy/haproxy.cfg must contain {from:?} exactly once (found {count})"
    );
    *text = text.replacen(from, to, 1);
}

/// The shipped configuration with only its addresses changed.
fn config_for(frontend: u16, stats: u16, relays: &[SocketAddr]) -> String {
    let mut cfg = std::fs::read_to_string(root().join("deploy/haproxy.cfg"))
        .expect("read deploy/haproxy.cfg");
    replace_once(
        &mut cfg,
        "\n    bind :8080\n",
        &format!("\n    bind 127.0.0.1:{frontend}\n"),
    );
    replace_once(
        &mut cfg,
        "bind 127.0.0.1:8404\n",
        &format!("bind 127.0.0.1:{stats}\n"),
    );
    for (i, addr) in relays.iter().enumerate() {
        replace_once(
            &mut cfg,
            &format!(" 127.0.0.1:{}\n", 8081 + i),
            &format!(" {addr}\n"),
        );
    }
    cfg
}

/// xorshift64*; good enough for random channel ids.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn connect(addr: &Addr) -> Conn {
    let mut conn = Conn::open(addr);
    conn.set_read_timeout(ANSWER);
    conn
}

/// One link transfer through HAProxy: the consumer's request and the producer's go
/// out at once on fresh connections (either may reach the relay first). Checks the
/// bytes and both statuses; returns both responses and both clients' local ports.
fn link(
    front: &Addr,
    producer_path: &str,
    consumer_path: &str,
    body: &[u8],
    what: &str,
) -> (Response, Response, u16, u16) {
    super::support::link_exchange(front, producer_path, consumer_path, body, ANSWER, what)
}

/// A plain GET on a fresh connection; returns the body as text.
fn fetch(addr: &Addr, target: &str) -> String {
    let mut conn = connect(addr);
    let r = conn.exchange(&get(target));
    assert_eq!(r.status(), 200, "GET {target}: {:?}", r.head);
    r.text()
}

/// A counter or gauge from a relay's `/metrics` (the line `NAME{LABELS} VALUE`).
fn metric(relay: &Relay, series: &str) -> u64 {
    let text = fetch(relay.addr(), "/metrics");
    let line = text
        .lines()
        .find(|l| l.strip_prefix(series).is_some_and(|v| v.starts_with(' ')))
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"));
    let value = line[series.len()..].trim();
    value
        .parse::<f64>()
        .unwrap_or_else(|_| panic!("bad value in {line:?}")) as u64
}

/// Each relay's `httprelay_transfers_total{method="METHOD"}`, once they add up to
/// `total` (the last exchanges may still be finishing when their clients are done).
fn transfers_per_relay(relays: &[Relay], method: &str, total: usize) -> Vec<u64> {
    let series = format!("httprelay_transfers_total{{method=\"{method}\"}}");
    let mut counts = vec![0u64; relays.len()];
    wait_until(
        Duration::from_secs(3),
        &format!("{method} counters add up"),
        || {
            for (i, relay) in relays.iter().enumerate() {
                counts[i] = metric(relay, &series);
            }
            counts.iter().sum::<u64>() == total as u64
        },
    );
    counts
}

/// The status HAProxy's stats page gives a server (`UP`, `DOWN`, `UP 1/2`, ...).
fn server_status(stats: &Addr, server: &str) -> String {
    let csv = fetch(stats, "/;csv");
    let line = csv
        .lines()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.len() > 17 && f[0] == server && f[1] == server)
        .unwrap_or_else(|| panic!("server {server} not on the stats page:\n{csv}"));
    line[17].to_string()
}

/// Runs `task(i)` for every `i` in `0..count`, spread over [`THREADS`] threads.
fn spread(count: usize, task: impl Fn(usize) + Sync) {
    thread::scope(|scope| {
        for t in 0..THREADS {
            let task = &task;
            scope.spawn(move || (t..count).step_by(THREADS).for_each(task));
        }
    });
}

/// Polls until `cond` holds; panics with `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Which relay served each id, from the relays' access logs (`... GET /link/ID ...`):
/// a path's last segment that is one of `ids`. Panics if an id shows up on two
/// relays (a split channel).
fn shard_of(relays: &[Relay], ids: &[String]) -> HashMap<String, usize> {
    let wanted: HashMap<&str, ()> = ids.iter().map(|id| (id.as_str(), ())).collect();
    let mut shard = HashMap::new();
    for (i, relay) in relays.iter().enumerate() {
        for line in relay.output().lines() {
            let Some(path) = line.split_whitespace().find(|t| t.starts_with("/link/")) else {
                continue;
            };
            let last = path.rsplit('/').next().unwrap_or_default();
            if wanted.contains_key(last) {
                if let Some(other) = shard.insert(last.to_string(), i) {
                    assert_eq!(
                        other,
                        i,
                        "channel {last} was served by relay{} and relay{}",
                        other + 1,
                        i + 1
                    );
                }
            }
        }
    }
    shard
}

/// Sends a request for a down relay's channel and checks it is refused fast and
/// clearly.
fn refused_fast(front: &Addr, request: &[u8], what: &str) {
    let start = Instant::now();
    let mut conn = connect(front);
    let r = conn.exchange(request);
    let took = start.elapsed();
    assert_eq!(r.status(), 503, "{what}: {:?} {:?}", r.head, r.text());
    assert!(
        r.text().contains("relay for this channel is down"),
        "{what}: unclear 503 body {:?}",
        r.text()
    );
    assert!(took < FAST, "{what}: the 503 took {took:?}");
}

#[test]
fn relays_behind_haproxy_shard_by_channel_id() {
    let Some(haproxy_bin) = haproxy_binary() else {
        match std::env::var_os("HTTPRELAY_HAPROXY") {
            Some(path) => unavailable(&format!("HTTPRELAY_HAPROXY={path:?} is not a file")),
            None => unavailable("haproxy is not installed"),
        }
        return;
    };
    let started = Instant::now();

    // Three relays that believe HAProxy's forwarded fields, logging every request,
    // with Piping Server paths.
    let mut relays: Vec<Relay> = (0..RELAYS)
        .map(|_| Relay::start_flags(&["--trust-proxy", "127.0.0.1", "--access-log", "--piping"]))
        .collect();
    let relay_addrs: Vec<SocketAddr> = relays.iter().map(|r| r.tcp_addr()).collect();

    let dir = std::env::temp_dir().join(format!(
        "httprelay-sharding-{}-{}",
        std::process::id(),
        unix_ms()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("haproxy.cfg");
    let (front_port, stats_port) = (free_port(), free_port());
    std::fs::write(&config, config_for(front_port, stats_port, &relay_addrs))
        .expect("write haproxy.cfg");
    let mut haproxy = Haproxy::start(&haproxy_bin, &config);
    let front = Addr::Tcp(SocketAddr::from(([127, 0, 0, 1], front_port)));
    let stats = Addr::Tcp(SocketAddr::from(([127, 0, 0, 1], stats_port)));

    // HAProxy is up when its stats page shows every relay UP.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(
            haproxy.is_running(),
            "haproxy exited:\n{}",
            haproxy.output()
        );
        let up = std::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], stats_port)))
            .is_ok()
            && (1..=RELAYS).all(|i| server_status(&stats, &format!("relay{i}")) == "UP");
        if up
            && std::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], front_port))).is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "haproxy did not come up with every relay UP:\n{}",
            haproxy.output()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let version = fetch(&front, "/health");
    assert_eq!(version, super::VERSION, "/health through HAProxy");

    // 1. 1,000 link transfers on random ids, with path variants that the relay reads
    //    as the same id (HAProxy must send both sides to the same relay, or they hang).
    let seed = (unix_ms() ^ (u64::from(std::process::id()) << 32)) | 1;
    let mut rng = Rng(seed);
    let ids: Vec<String> = (0..TRANSFERS)
        .map(|_| format!("{:016x}", rng.next()))
        .collect();
    spread(TRANSFERS, |i| {
        let id = &ids[i];
        let plain = format!("/link/{id}");
        let (producer_path, consumer_path) = match i % 4 {
            0 => (plain.clone(), plain.clone()),
            1 => (format!("/link/from/a/{id}"), plain.clone()),
            2 => (plain.clone(), format!("/link/via%2F{id}")),
            _ => (
                format!("/link/%{:02X}{}", id.as_bytes()[0], &id[1..]),
                format!("{plain}?reply=yes"),
            ),
        };
        let len = match i % 10 {
            0 => 0,
            1 => 40_000 + i * 31,
            _ => (i * 37) % 3000 + 1,
        };
        let body = body_for(seed ^ i as u64, len);
        link(
            &front,
            &producer_path,
            &consumer_path,
            &body,
            &format!("transfer {i} on {id} (seed {seed})"),
        );
    });
    let after_transfers = started.elapsed();

    // 2. The ids spread over all three relays: each relay's link counter is well
    //    above zero (a fair share is a third; each must have at least a sixth).
    let counts = transfers_per_relay(&relays, "link", TRANSFERS);
    for (i, &n) in counts.iter().enumerate() {
        assert!(
            n > (TRANSFERS / (2 * RELAYS)) as u64,
            "relay{} got {n} of {TRANSFERS} link transfers ({counts:?}, seed {seed})",
            i + 1
        );
    }
    // Which relay owns which id, from the access logs (no id on two relays).
    let mut shard = HashMap::new();
    wait_until(Duration::from_secs(3), "every id in an access log", || {
        shard = shard_of(&relays, &ids);
        shard.len() == ids.len()
    });

    // 2b. Inbox paths: /inbox/{id}, its /ack and /await, and other spellings of
    //     the id reach the relay of the id (the one that has /link/{id}).
    let some_ids: Vec<&String> = ids.iter().take(24).collect();
    inbox::routing(&front, &relays, &some_ids, &shard);
    for id in ids.iter().skip(24).take(8) {
        inbox::exchange(&front, id);
    }

    // 3. Metadata through HAProxy: the relays believe X-Real-IP/X-Real-Port from it,
    //    so each side learns the other client's own address, not HAProxy's.
    let (got, done, producer_port, consumer_port) =
        link(&front, "/link/meta", "/link/meta", b"who", "metadata");
    assert_eq!(got.header("X-Real-IP"), Some("127.0.0.1"));
    assert_eq!(
        got.header("X-Real-Port"),
        Some(producer_port.to_string().as_str()),
        "the consumer must learn the producer's port at HAProxy: {:?}",
        got.head
    );
    assert_eq!(done.header("X-Real-IP"), Some("127.0.0.1"));
    assert_eq!(
        done.header("X-Real-Port"),
        Some(consumer_port.to_string().as_str()),
        "the producer must learn the consumer's port at HAProxy: {:?}",
        done.head
    );

    // 4. mcast: 20 readers (some on path variants of the id) wait for message 0.
    let id = format!("m{:x}", rng.next());
    let mut readers: Vec<Conn> = (0..20)
        .map(|k| {
            let mut conn = connect(&front);
            let target = if k % 2 == 0 {
                format!("/mcast/{id}?seqid=0")
            } else {
                format!("/mcast/reader{k}/{id}?seqid=0")
            };
            conn.send(&get(&target));
            conn
        })
        .collect();
    thread::sleep(PARK);
    assert!(
        readers[0].is_silent_for(PARK),
        "an mcast reader of a message not yet written must wait"
    );
    let message = body_for(seed ^ 0x6d63, 5000);
    let mut producer = connect(&front);
    let stored = producer.exchange(&post(&format!("/mcast/{id}"), &message));
    assert_eq!(stored.status(), 200, "mcast producer {:?}", stored.head);
    assert_eq!(stored.header("HttpRelay-SeqId"), Some("0"));
    for (k, reader) in readers.iter_mut().enumerate() {
        let r = reader.read_response();
        assert_eq!(r.status(), 200, "mcast reader {k}: {:?}", r.head);
        assert!(r.body() == message, "mcast reader {k}: wrong body");
        assert_eq!(r.header("HttpRelay-SeqId"), Some("0"), "mcast reader {k}");
    }

    // 5. A sync pair on two spellings of one id.
    let id = format!("s{:x}", rng.next());
    let mut a = connect(&front);
    send_waiting(
        &mut a,
        &post(&format!("/sync/pair/{id}"), b"from A"),
        "the first sync peer",
    );
    let mut b = connect(&front);
    let got_b = b.exchange(&post(&format!("/sync/{id}"), b"from B"));
    let got_a = a.read_response();
    assert_eq!((got_a.status(), got_b.status()), (200, 200));
    assert_eq!(got_a.body(), b"from B");
    assert_eq!(got_b.body(), b"from A");

    // 6. Proxy round trips: the server id is the segment after /proxy/, not the last
    //    one (eight server ids, so a wrong rule cannot pass by luck). The relay also
    //    believes X-Forwarded-Host/Port from HAProxy.
    for n in 0..8 {
        let srv = format!("srv{:x}", rng.next());
        let mut server = connect(&front);
        send_waiting(
            &mut server,
            &req("SERVE", &format!("/proxy/{srv}"), &[], b""),
            "a SERVE",
        );
        let mut client = connect(&front);
        client.send(&get(&format!("/proxy/{srv}/items/{n}?q=1")));
        let job = server.read_response();
        assert_eq!(job.status(), 200, "SERVE {srv}: {:?}", job.head);
        let header = |name: &str| job.header(name).unwrap_or_default().to_string();
        assert_eq!(header("HttpRelay-Proxy-Path"), format!("/items/{n}"));
        assert_eq!(header("HttpRelay-Proxy-Query"), "q=1");
        assert_eq!(header("HttpRelay-Proxy-Method"), "GET");
        assert_eq!(
            header("HttpRelay-Proxy-Port"),
            front_port.to_string(),
            "X-Forwarded-Port from HAProxy: {:?}",
            job.head
        );
        let job_id = header("HttpRelay-Proxy-JobId");
        server.send(&req(
            "SERVE",
            &format!("/proxy/{srv}"),
            &[
                ("HttpRelay-Proxy-JobId", job_id.as_str()),
                ("HttpRelay-Proxy-Status", "201"),
                ("Content-Type", "text/plain"),
            ],
            format!("item {n}").as_bytes(),
        ));
        let answer = client.read_response();
        assert_eq!(
            answer.status(),
            201,
            "proxy client {srv}: {:?}",
            answer.head
        );
        assert_eq!(answer.text(), format!("item {n}"));
        assert_eq!(answer.header("Content-Type"), Some("text/plain"));
    }

    // 7. A consumer that leaves while parked leaves its relay too (HAProxy's
    //    `option abortonclose`): a later producer waits instead of being matched
    //    with a ghost and losing its body.
    let waiting = |relays: &[Relay]| -> u64 {
        relays
            .iter()
            .map(|r| metric(r, "httprelay_waiters{method=\"link\"}"))
            .sum()
    };
    let id = format!("g{:x}", rng.next());
    let mut ghost = connect(&front);
    send_waiting(&mut ghost, &get(&format!("/link/{id}")), "a link consumer");
    wait_until(Duration::from_secs(3), "the consumer is parked", || {
        waiting(&relays) == 1
    });
    drop(ghost);
    wait_until(
        Duration::from_secs(3),
        "a consumer that left through HAProxy is dropped by its relay",
        || waiting(&relays) == 0,
    );
    let mut producer = connect(&front);
    send_waiting(
        &mut producer,
        &post(&format!("/link/{id}"), b"for a live consumer"),
        "a producer whose consumer left",
    );
    let mut consumer = connect(&front);
    let got = consumer.exchange(&get(&format!("/link/{id}")));
    assert_eq!(got.body(), b"for a live consumer");
    assert_eq!(producer.read_response().status(), 200);

    // 8. Piping Server paths (see `piping`).
    let run = format!("{:08x}", rng.next() as u32);
    let piping::PipingRun {
        took: after_piping,
        counts: piping_counts,
        transfers,
        served,
    } = piping::transfers_on_many_paths(&front, &relays, &run, seed);

    // 9. One relay dies. Its parked waiter gets an answer or a close, not a hang.
    let victim = RELAYS - 1;
    let lost: Vec<&String> = ids.iter().filter(|id| shard[*id] == victim).collect();
    let kept: Vec<&String> = ids.iter().filter(|id| shard[*id] != victim).collect();
    assert!(lost.len() >= 5 && kept.len() >= 10, "shards too uneven");
    let mut parked = connect(&front);
    send_waiting(
        &mut parked,
        &get(&format!("/link/{}", lost[0])),
        "a consumer on the doomed relay",
    );
    relays[victim].kill();
    let killed = Instant::now();
    parked.set_read_timeout(Duration::from_secs(5));
    if let Some(head) = parked.try_read_head() {
        assert_eq!(
            head.status, 502,
            "a waiter of the killed relay got {head:?}"
        );
        let body = parked.read_body(&head, false);
        let text = String::from_utf8_lossy(body.bytes());
        assert!(text.contains("went away"), "unclear 502 body {text:?}");
    }
    // Even before the health check notices, a request for the lost shard is
    // refused within about a second (connection refused, one retry, 503).
    let mut early = connect(&front);
    let start = Instant::now();
    let r = early.exchange(&get(&format!("/link/{}", lost[1])));
    let early_took = start.elapsed();
    assert_eq!(r.status(), 503, "before the health check: {:?}", r.head);
    assert!(
        early_took < Duration::from_secs(3),
        "before the health check, the 503 took {early_took:?}"
    );

    let server = format!("relay{}", victim + 1);
    wait_until(
        Duration::from_secs(10),
        "HAProxy's health check marks the killed relay DOWN",
        || server_status(&stats, &server).starts_with("DOWN"),
    );
    let marked_down = killed.elapsed();

    // The other shards keep working (piping paths too).
    let piping_lost: Vec<&Piping> = transfers
        .iter()
        .filter(|p| served[&p.path].0 == victim)
        .collect();
    let piping_kept: Vec<&Piping> = transfers
        .iter()
        .filter(|p| served[&p.path].0 != victim)
        .collect();
    for (k, p) in piping_kept.iter().take(4).enumerate() {
        let body = body_for(seed ^ 0xd0a2 ^ k as u64, 3000 + k);
        piping(
            &front,
            p,
            &body,
            &format!("after the kill, kept path {}", p.path),
        );
    }
    for (k, id) in kept.iter().take(12).enumerate() {
        let body = body_for(seed ^ 0xd0a1 ^ k as u64, 777 + k);
        link(
            &front,
            &format!("/link/{id}"),
            &format!("/link/{id}"),
            &body,
            &format!("after the kill, kept channel {id}"),
        );
    }
    for i in 0..RELAYS {
        if i != victim {
            assert_eq!(
                server_status(&stats, &format!("relay{}", i + 1)),
                "UP",
                "relay{} must stay UP",
                i + 1
            );
        }
    }
    // The lost shard: a fast, clear 503 for any method on its channels.
    for id in lost.iter().take(5) {
        refused_fast(&front, &get(&format!("/link/{id}")), "consumer, lost shard");
        refused_fast(
            &front,
            &post(&format!("/link/{id}"), b"nobody home"),
            "producer, lost shard",
        );
        refused_fast(
            &front,
            &get(&format!("/mcast/{id}")),
            "mcast reader, lost shard",
        );
    }
    for p in piping_lost.iter().take(3) {
        refused_fast(&front, &get(&p.path), "piping receiver, lost shard");
        refused_fast(
            &front,
            &req("PUT", &format!("{}?n=1", p.path), &[], b"nobody home"),
            "piping sender, lost shard",
        );
    }

    super::support::loud(&format!(
        "sharding: {TRANSFERS} transfers in {after_transfers:?} (link counts per relay \
         {counts:?}); {PIPING_PATHS} piping transfers in {after_piping:?} (per relay \
         {piping_counts:?}); killed relay marked DOWN after {marked_down:?}; lost-shard 503 before \
         that took {early_took:?}; whole test {:?}\n",
        started.elapsed()
    ));
    drop(haproxy);
    let _ = std::fs::remove_dir_all(&dir);
}

//! The memory bound: a relay with small limits (set one by one, or derived
//! from a small `--memory` budget) is driven by every kind of traffic that
//! makes it hold memory, and its RSS never passes the bound docs/memory.md
//! gives for those flags (`httprelay::bound`), while it keeps answering; a
//! small budget still serves 64 pairs at once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use httprelay::bound::MemoryBound;
use httprelay::budget::{fit, Budget};
use httprelay::config::{parse, Command, Config};

use super::stress::health;
use super::support::{bounded_rss_kib, metric, req, Conn, Relay, RssSampler, PARK};
use super::{get, post};

const ANSWER: Duration = Duration::from_secs(10);

const FLAGS: [&str; 21] = [
    "--piping",
    "--max-conns",
    "64",
    "--max-head",
    "4096",
    "--mcast-total",
    "2000000",
    "--sync-total",
    "2000000",
    "--max-channels",
    "2000",
    "--mcast-max-message",
    "300000",
    "--sync-max-body",
    "300000",
    "--mcast-retain",
    "1000000",
    "--inbox-total",
    "2000000",
    "--inbox-max-message",
    "250000",
];

/// The limits of a relay started with `flags`, as `main` fits them to a
/// `--memory` budget (flags without one give every limit themselves).
fn limits_of(flags: &[&str]) -> Config {
    let args = flags.iter().map(Into::into);
    let Ok(Command::Run(mut config)) = parse(args, None) else {
        panic!("the test's flags parse");
    };
    if let Some(bytes) = config.memory {
        let fitted = fit(&mut config, Budget::flag(bytes));
        fitted.check(&config).expect("the derived limits fit");
    }
    *config
}

fn bound_kib(config: &Config) -> u64 {
    MemoryBound::new(config, config.max_conns.expect("a connection limit")).total() / 1024
}

/// Sends `request` on a new connection and closes it at once, without waiting.
fn fire(relay: &Relay, request: &[u8]) {
    let mut s = TcpStream::connect(relay.tcp_addr()).expect("connect");
    s.write_all(request).expect("send");
}

/// Sends `request` on a new connection and returns the response status.
fn status_of(relay: &Relay, request: &[u8]) -> u16 {
    let mut conn = relay.connect();
    conn.set_read_timeout(ANSWER);
    conn.exchange(request).status()
}

/// Checks the relay's RSS against the bound and that it answers.
fn check(relay: &Relay, bound: u64, what: &str) {
    health(relay, what);
    let rss = relay.rss_kib();
    eprintln!("memory: {what}: RSS {rss} KiB (bound {bound} KiB)");
    assert!(
        rss <= bound,
        "{what}: RSS {rss} KiB over the bound {bound} KiB"
    );
}

#[test]
fn rss_stays_within_the_bound_under_every_kind_of_state() {
    let peak = floods(&FLAGS, 0);
    eprintln!("memory: limits set one by one: peak RSS {peak} KiB");
}

#[test]
fn a_32_mib_budget_holds_under_the_floods_and_serves_64_pairs_at_once() {
    let peak = floods(&["--piping", "--memory", "32M"], 64);
    assert!(peak < 32 * 1024, "peak RSS {peak} KiB");
    eprintln!("memory: --memory 32M: peak RSS {peak} KiB");
}

#[test]
fn a_64_mib_budget_holds_under_the_floods_and_serves_64_pairs_at_once() {
    let peak = floods(&["--piping", "--memory", "64M"], 64);
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    eprintln!("memory: --memory 64M: peak RSS {peak} KiB");
}

#[test]
fn a_journaled_relay_stays_within_its_bound_while_it_rewrites() {
    let dir = std::env::temp_dir().join(format!("httprelay-memory-journal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_flag = dir.to_str().expect("utf-8 path").to_string();
    let mut flags = FLAGS.to_vec();
    flags.extend(["--data-dir", &dir_flag]);
    let limits = limits_of(&flags);
    let bound = bound_kib(&limits);
    assert!(
        bound > bound_kib(&limits_of(&FLAGS)),
        "the bound counts the journal's rewrite"
    );
    let relay = Relay::start_flags(&flags);
    let sampler = RssSampler::start(relay.pid());
    let start = relay.rss_kib();
    // The inbox held at its total (7 messages of 240 KB), each replaced
    // round after round: the journal grows by the total each round and is
    // rewritten while the rewrite's snapshot shares bodies the inbox has
    // let go of and replaced.
    let body = vec![b'j'; 240_000];
    for round in 0..16 {
        for i in 0..7 {
            let status = status_of(&relay, &post(&format!("/inbox/j{i}"), &body));
            assert_eq!(status, 200, "round {round}, inbox j{i}");
        }
    }
    // Every rewrite begun has ended.
    let deadline = std::time::Instant::now() + ANSWER;
    while metric(&relay, "httprelay_journal_compacting") > 0 && std::time::Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(10));
    }
    let rewrites = metric(&relay, "httprelay_journal_compactions_total");
    assert!(rewrites >= 3, "only {rewrites} rewrites");
    health(&relay, "after the rewrites");
    // (Under qemu-user, the growth: the emulator's own memory is not the
    // relay's.)
    let (peak, samples) = sampler.finish();
    let peak = bounded_rss_kib(peak.max(relay.rss_kib()), start);
    eprintln!("memory: journaled: peak RSS {peak} KiB over {samples} samples, bound {bound} KiB; {rewrites} rewrites");
    assert!(
        peak <= bound,
        "peak RSS {peak} KiB over the bound {bound} KiB"
    );
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `pairs` link exchanges on unique ids with all their connections open at
/// once (each pair's consumer waiting and its producer connected before any
/// producer sends).
fn pairs_at_once(relay: &Relay, pairs: usize) {
    let ready = Arc::new(Barrier::new(pairs));
    let threads: Vec<_> = (0..pairs)
        .map(|i| {
            let (ready, addr) = (ready.clone(), relay.addr().clone());
            thread::spawn(move || {
                let mut consumer = httprelay_testkit::Conn::open(&addr);
                consumer.set_read_timeout(ANSWER);
                let path = format!("/link/at-once{i}");
                consumer.send(&get(&path));
                let mut producer = httprelay_testkit::Conn::open(&addr);
                producer.set_read_timeout(ANSWER);
                ready.wait();
                let body = format!("pair {i}");
                producer.send(&post(&path, body.as_bytes()));
                let got = consumer.read_response();
                assert_eq!(got.status(), 200, "pair {i}: consumer {:?}", got.head);
                assert_eq!(got.body(), body.as_bytes(), "pair {i}");
                assert_eq!(producer.read_response().status(), 200, "pair {i}: producer");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("every pair exchanged");
    }
}

/// Drives a relay started with `flags` through every kind of traffic that
/// makes it hold memory, sized to its limits, checking its RSS against the
/// bound all along; then `pairs` pairs at once. Returns the peak RSS in KiB.
fn floods(flags: &[&str], pairs: usize) -> u64 {
    let limits = limits_of(flags);
    let bound = bound_kib(&limits);
    let relay = Relay::start_flags(flags);
    let sampler = RssSampler::start(relay.pid());
    let start = relay.rss_kib();
    eprintln!("memory: bound {bound} KiB, RSS at start {start} KiB");

    // A health check every 100 ms all along: the relay answers throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let prober = {
        let (stop, answered, addr) = (stop.clone(), answered.clone(), relay.tcp_addr());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.set_read_timeout(Some(ANSWER)).unwrap();
                s.write_all(b"GET /health HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
                    .unwrap();
                let mut reply = Vec::new();
                let _ = s.read_to_end(&mut reply);
                assert!(
                    reply.starts_with(b"HTTP/1.1 200"),
                    "health check during the floods: {:?}",
                    String::from_utf8_lossy(&reply)
                );
                answered.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // Channels made before the floods: three mcast channels, and a claim.
    for i in 0..3 {
        assert_eq!(
            status_of(&relay, &post(&format!("/mcast/big{i}"), b"")),
            200
        );
    }
    let mut owner = relay.connect();
    owner.set_read_timeout(ANSWER);
    owner.send(&post("/link/mine?wsecret=k", b"first"));
    thread::sleep(PARK);

    // 1. Pairs on unique ids: nothing stays behind.
    for i in 0..3000 {
        super::support::link_exchange(
            relay.addr(),
            &format!("/link/u{i}"),
            &format!("/link/u{i}"),
            b"unique",
            ANSWER,
            "unique-id pair",
        );
    }
    assert_eq!(metric(&relay, "httprelay_channels{method=\"link\"}"), 1);
    check(&relay, bound, "after 3000 pairs on unique ids");

    // 2. Abandoned waiters of every method.
    for i in 0..1500 {
        fire(&relay, &get(&format!("/link/gone{i}")));
        fire(&relay, &get(&format!("/mcast/gone{i}")));
        fire(&relay, &post(&format!("/sync/gone{i}"), b"body"));
        fire(&relay, &req("SERVE", &format!("/proxy/gone{i}"), &[], b""));
        fire(&relay, &post(&format!("/pipe/gone{i}?n=3"), b"body"));
        fire(&relay, &get(&format!("/pipe/left{i}?n=2")));
        fire(&relay, &get(&format!("/inbox/gone{i}")));
    }
    check(&relay, bound, "after 10500 abandoned waiters");
    assert_eq!(
        metric(&relay, "httprelay_channels{method=\"inbox\"}"),
        0,
        "inboxes whose readers left are forgotten"
    );

    // 2b. Inbox messages up to their total, each with waiting writers and readers.
    let size = limits.inbox_max_message.min(250_000);
    let big = vec![b'i'; size];
    let (mut kept, mut inbox_full) = (0, 0);
    let mut inbox_waiters: Vec<Conn> = Vec::new();
    for i in 0..limits.inbox_total / size + 3 {
        match status_of(&relay, &post(&format!("/inbox/full{i}"), &big)) {
            200 => kept += 1,
            503 => inbox_full += 1,
            other => panic!("big inbox post: {other}"),
        }
        for path in [format!("/inbox/full{i}/await"), format!("/inbox/none{i}")] {
            if i < 3 {
                let mut c = relay.connect();
                c.send(&get(&path));
                inbox_waiters.push(c);
            }
        }
    }
    assert!(
        kept > 0 && inbox_full > 0,
        "{kept} kept, {inbox_full} refused"
    );
    check(&relay, bound, "with the inbox total full");
    // Their connections are needed below.
    drop(inbox_waiters);
    assert_eq!(
        metric(&relay, "httprelay_channels{method=\"piping\"}"),
        0,
        "piping paths whose parties left are forgotten"
    );

    // 3. Secret claims by producers that leave, past the cap on remembered channels.
    for i in 0..limits.max_channels + 1000 {
        fire(&relay, &post(&format!("/link/claim{i}?wsecret=s{i}"), b"x"));
    }
    thread::sleep(PARK);
    let remembered = metric(&relay, "httprelay_channels_remembered");
    assert!(
        remembered <= limits.max_channels as u64,
        "{remembered} channels remembered"
    );
    check(&relay, bound, "after claims past the cap");

    // 4. Empty mcast posts on new ids: refused with 503 at the cap.
    let mut poster = relay.connect();
    poster.set_read_timeout(ANSWER);
    let (mut stored, mut refused) = (0, 0);
    for i in 0..2500 {
        match poster
            .exchange(&post(&format!("/mcast/empty{i}"), b""))
            .status()
        {
            200 => stored += 1,
            503 => refused += 1,
            other => panic!("empty mcast post: {other}"),
        }
    }
    assert!(refused > 0, "the cap refused none of {stored} posts");
    assert_eq!(
        status_of(&relay, &post("/mcast/big0", b"more")),
        200,
        "a channel remembered already takes messages at the cap"
    );
    assert_eq!(
        metric(&relay, "httprelay_channels_remembered"),
        limits.max_channels as u64,
        "the cap is full"
    );
    assert!(
        metric(
            &relay,
            "httprelay_limit_refusals_total{limit=\"max-channels\"}"
        ) >= refused,
        "refusals at the cap are counted by their limit"
    );
    check(&relay, bound, "after 2500 empty mcast posts");

    // 5. Proxy jobs with bodies whose clients leave, and big mcast messages and
    // sync bodies up to their totals.
    for i in 0..500 {
        fire(&relay, &post(&format!("/proxy/jobs{i}/x"), &[b'j'; 3000]));
    }
    let big = vec![b'm'; limits.mcast_max_message.min(250_000)];
    let mut full = 0;
    for i in 0..limits.mcast_total / big.len() + 4 {
        // Channels that exist need no place under the cap.
        match status_of(&relay, &post(&format!("/mcast/big{}", i % 3), &big)) {
            200 => {}
            503 => full += 1,
            other => panic!("big mcast post: {other}"),
        }
    }
    assert!(full > 0, "--mcast-total never refused");
    let mut syncs: Vec<Conn> = Vec::new();
    let mut sync_full = 0;
    let size = limits.sync_max_body.min(250_000);
    for i in 0..limits.sync_total / size + 3 {
        let mut c = relay.connect();
        c.set_read_timeout(ANSWER);
        c.send(&post(&format!("/sync/big{i}"), &vec![b's'; size]));
        // A body held waits silently for its peer; past the total, 503.
        if c.is_silent_for(Duration::from_millis(300)) {
            syncs.push(c);
        } else {
            assert_eq!(c.read_head().status, 503, "sync past --sync-total");
            sync_full += 1;
        }
    }
    assert!(sync_full > 0, "--sync-total never refused");
    check(&relay, bound, "with the mcast and sync totals full");

    // 6. Parked producers with bodies, and consumers that do not read, up to
    // the connection limit.
    let mut parked: Vec<Conn> = (0..20)
        .map(|i| {
            let mut c = relay.connect();
            c.send(&post(&format!("/link/parked{i}"), &[b'p'; 3000]));
            c
        })
        .collect();
    let mut stuck: Vec<Conn> = Vec::new();
    for i in 0..10 {
        let mut consumer = relay.connect();
        consumer.send(&get(&format!("/link/stuck{i}")));
        thread::sleep(Duration::from_millis(20));
        let mut producer = relay.connect();
        let head = req(
            "POST",
            &format!("/link/stuck{i}"),
            &[("Content-Length", "10000000")],
            b"",
        );
        producer.send(&head);
        let _ = producer.try_send(&vec![b's'; 1 << 20]);
        stuck.push(consumer);
        stuck.push(producer);
    }
    thread::sleep(Duration::from_millis(300));
    check(&relay, bound, "with parked producers and stuck transfers");

    // The claim made before the floods still holds.
    assert_eq!(
        status_of(&relay, &post("/link/mine?wsecret=wrong", b"x")),
        401,
        "a wrong secret after the floods"
    );
    let mut consumer = relay.connect();
    consumer.set_read_timeout(ANSWER);
    let got = consumer.exchange(&get("/link/mine"));
    assert_eq!(got.body(), b"first", "the owner's transfer still pairs");
    assert_eq!(owner.read_response().status(), 200);

    // With the totals and the channel cap still full, and the connections
    // of the floods gone, real traffic goes on.
    drop((parked.drain(..), stuck, syncs));
    if pairs > 0 {
        // The floods' connections are closed (bounded wait): the pairs get
        // the relay's slots, not the leftovers of a slow machine.
        let deadline = std::time::Instant::now() + ANSWER;
        while metric(&relay, "httprelay_connections_open") > 8
            && std::time::Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(10));
        }
        pairs_at_once(&relay, pairs);
        check(&relay, bound, "after pairs at once");
    }

    stop.store(true, Ordering::Relaxed);
    prober.join().expect("the health checks all passed");
    let (peak, samples) = sampler.finish();
    eprintln!(
        "memory: peak RSS {peak} KiB over {samples} samples, bound {bound} KiB; {} health checks",
        answered.load(Ordering::Relaxed)
    );
    assert!(
        peak <= bound,
        "peak RSS {peak} KiB over the bound {bound} KiB"
    );
    peak
}

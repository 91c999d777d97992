//! The fair share: clients of one address (127.0.0.2, a flooder) cannot take
//! the relay from those of another (127.0.0.3, a bystander). Beyond its share
//! of connections an address gets `429`; when the relay is full, the address
//! holding the most makes room; a trusted proxy's clients count by their
//! forwarded addresses.

use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, Instant};

use httprelay_testkit::Conn;

use super::support::{metric, req, Relay, PARK};
use super::{get, post};

/// Generous: an answer that takes this long is a failure, not slowness.
const ANSWER: Duration = Duration::from_secs(10);

fn from(relay: &Relay, last: u8) -> Conn {
    let mut conn = Conn::open_from(Ipv4Addr::new(127, 0, 0, last), relay.addr());
    conn.set_read_timeout(ANSWER);
    conn
}

/// Waits until the relay has handled `n` requests of a flood, counted as the
/// sum of the samples `names` (each one either waits or was refused), so that
/// what a request got does not depend on how fast the machine is. Bounded.
fn handled(relay: &Relay, names: &[&str], n: u64) {
    let deadline = Instant::now() + ANSWER;
    loop {
        let sum: u64 = names.iter().map(|name| metric(relay, name)).sum();
        if sum >= n || Instant::now() >= deadline {
            assert_eq!(sum, n, "requests handled ({names:?})");
            return;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// What the bystander at 127.0.0.3 does while the flood holds: `/health`, a
/// link transfer, an mcast publish and read on a new channel, a new claim
/// (refusing a wrong secret). Returns each one's latency.
fn bystander(relay: &Relay, tag: &str) -> Vec<(&'static str, Duration)> {
    let mut took = Vec::new();
    let started = Instant::now();
    let mut c = from(relay, 3);
    assert_eq!(
        c.exchange(&get("/health")).status(),
        200,
        "bystander /health"
    );
    took.push(("health", started.elapsed()));

    let started = Instant::now();
    let mut consumer = from(relay, 3);
    consumer.send(&get(&format!("/link/by-{tag}")));
    let mut producer = from(relay, 3);
    assert_eq!(
        producer
            .exchange(&post(&format!("/link/by-{tag}"), b"hello"))
            .status(),
        200
    );
    assert_eq!(consumer.read_response().body(), b"hello");
    took.push(("link transfer", started.elapsed()));

    let started = Instant::now();
    let mut c = from(relay, 3);
    let path = format!("/mcast/news-{tag}");
    assert_eq!(
        c.exchange(&post(&path, b"m1")).status(),
        200,
        "bystander mcast publish"
    );
    let read = c.exchange(&get(&path));
    assert_eq!(
        (read.status(), read.body()),
        (200, &b"m1"[..]),
        "bystander mcast read"
    );
    took.push(("mcast publish and read", started.elapsed()));

    let started = Instant::now();
    let mut owner = from(relay, 3);
    owner.send(&post(&format!("/link/mine-{tag}?wsecret=k"), b"x"));
    thread::sleep(PARK);
    let mut thief = from(relay, 3);
    let wrong = thief.exchange(&post(&format!("/link/mine-{tag}?wsecret=bad"), b"y"));
    assert_eq!(wrong.status(), 401, "the bystander's claim holds");
    took.push(("claim", started.elapsed() - PARK));
    drop(owner);
    took
}

#[test]
fn a_flood_of_waiters_from_one_address_gets_429_past_its_share_and_leaves_room() {
    // 64 connections, 8 per address.
    let relay = Relay::start_fair(&["--max-conns", "64"]);
    let mut parked = Vec::new();
    let (mut refused, mut retry_after) = (0, 0);
    let counts = [
        "httprelay_waiters{method=\"link\"}",
        "httprelay_client_refusals_total",
    ];
    for i in 0..200 {
        let mut c = from(&relay, 2);
        c.send(&get(&format!("/link/flood{i}")));
        handled(&relay, &counts, i + 1);
        if c.is_silent_for(Duration::from_millis(20)) {
            parked.push(c);
        } else {
            let r = c.read_response();
            assert_eq!(r.status(), 429, "flooder beyond its share: {:?}", r.head);
            assert_eq!(r.text(), "429 too many connections from your address\n");
            retry_after += usize::from(r.header("Retry-After") == Some("5"));
            refused += 1;
        }
    }
    assert_eq!(parked.len(), 8, "the flooder's share");
    assert_eq!((refused, retry_after), (192, 192));
    let took = bystander(&relay, "a");
    eprintln!("fair: flood of waiters: 8 parked, {refused} refused; bystander {took:?}");
    assert_eq!(metric(&relay, "httprelay_client_refusals_total"), 192);
    // /health is never refused, even from an address at its share.
    let mut c = from(&relay, 2);
    assert_eq!(c.exchange(&get("/health")).status(), 200);
    drop((parked, c));
    // Closes reach the relay in their own time: wait for them (bounded).
    let deadline = Instant::now() + ANSWER;
    while metric(&relay, "httprelay_clients") != 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        metric(&relay, "httprelay_clients"),
        0,
        "an address that left holds no entry"
    );
}

#[test]
fn when_full_the_address_holding_the_most_makes_room() {
    // 16 waiters and a slot to spare (for the scrapes below, and the
    // bystander's first connection).
    let relay = Relay::start_fair(&["--max-conns", "17", "--max-conns-per-client", "12"]);
    let mut flood: Vec<Conn> = (0..12)
        .map(|i| {
            let mut c = from(&relay, 2);
            c.send(&get(&format!("/link/hog{i}")));
            thread::sleep(Duration::from_millis(20));
            c
        })
        .collect();
    let mut others: Vec<Conn> = (0..4)
        .map(|i| {
            let mut c = from(&relay, 4);
            c.send(&get(&format!("/link/other{i}")));
            c
        })
        .collect();
    handled(&relay, &["httprelay_waiters{method=\"link\"}"], 16);

    // Full: every connection the bystander (and the scrapes, from 127.0.0.1)
    // opens from here on takes the place of one of the hog's waiters.
    let took = bystander(&relay, "b");
    eprintln!("fair: full relay: bystander {took:?}");
    let evicted = metric(&relay, "httprelay_fair_share_evictions_total");
    assert!(evicted >= 2, "{evicted} evictions");
    // The hog's oldest waiters made the room, in order; nobody else's.
    for (i, c) in flood.iter_mut().enumerate().take(evicted as usize) {
        let r = c.read_response();
        assert_eq!(r.status(), 503, "hog{i}: {:?}", r.head);
        assert!(r
            .text()
            .starts_with("503 relay full: your address holds the most"));
    }
    for (i, c) in flood.iter_mut().enumerate().skip(evicted as usize) {
        assert!(
            c.is_silent_for(Duration::from_millis(20)),
            "hog{i} still waits"
        );
    }
    for (i, c) in others.iter_mut().enumerate() {
        assert!(
            c.is_silent_for(Duration::from_millis(20)),
            "other{i} still waits"
        );
        let mut producer = from(&relay, 4);
        producer.send(&post(&format!("/link/other{i}"), b"kept"));
        assert_eq!(
            c.read_response().body(),
            b"kept",
            "other{i} was never evicted"
        );
    }
}

#[test]
fn a_trusted_proxy_s_clients_count_by_their_forwarded_address() {
    let relay = Relay::start_fair(&["--trust-proxy", "127.0.0.1", "--max-conns-per-client", "2"]);
    let forwarded = |ip: &str, path: &str| req("GET", path, &[("X-Real-IP", ip)], b"");
    let mut held = Vec::new();
    for i in 0..2 {
        let mut c = relay.connect();
        c.send(&forwarded("10.0.0.1", &format!("/link/p{i}")));
        held.push(c);
    }
    handled(&relay, &["httprelay_waiters{method=\"link\"}"], 2);
    let mut c = relay.connect();
    assert_eq!(
        c.exchange(&forwarded("10.0.0.1", "/link/p3")).status(),
        429,
        "10.0.0.1 holds its share through the proxy"
    );
    let mut c = relay.connect();
    c.send(&forwarded("10.0.0.2", "/link/q"));
    assert!(
        c.is_silent_for(Duration::from_millis(200)),
        "10.0.0.2 has its own share"
    );
    held.push(c);
    // The proxy itself, without a forwarded address, is a client like any.
    let mut bare = relay.connect();
    bare.send(&get("/link/bare"));
    assert!(bare.is_silent_for(Duration::from_millis(200)));
}

#[test]
fn a_flood_of_claims_from_one_address_gets_429_past_its_share_of_max_channels() {
    // 64 remembered channels, 8 per address.
    let relay = Relay::start_fair(&["--max-channels", "64"]);
    let (mut kept, mut refused) = (0, 0);
    let counts = [
        "httprelay_channels_remembered",
        "httprelay_channels_client_refused_total",
    ];
    for i in 0..100 {
        // A producer claims a new channel with a secret and leaves: the claim
        // stays remembered.
        let mut c = from(&relay, 2);
        c.send(&post(&format!("/link/claim{i}?wsecret=s{i}"), b"x"));
        handled(&relay, &counts, i + 1);
        if c.is_silent_for(Duration::from_millis(20)) {
            kept += 1;
        } else {
            let r = c.read_response();
            assert_eq!(r.status(), 429, "a claim past the share: {:?}", r.head);
            assert_eq!(
                r.text(),
                "429 your address holds its share of remembered channels\n"
            );
            assert_eq!(r.header("Retry-After"), Some("5"));
            refused += 1;
        }
    }
    assert_eq!((kept, refused), (8, 92));
    let mut c = from(&relay, 2);
    let r = c.exchange(&post("/mcast/flood-news", b"m"));
    assert_eq!(
        r.status(),
        429,
        "a new mcast channel counts in the same share"
    );
    let took = bystander(&relay, "c");
    eprintln!("fair: flood of claims: {kept} kept, {refused} refused; bystander {took:?}");
    assert_eq!(
        metric(&relay, "httprelay_channels_client_refused_total"),
        93
    );
    assert_eq!(metric(&relay, "httprelay_channels_remembered"), 8 + 2);
    // The flooder's claims hold: they are claims like any other.
    let mut c = from(&relay, 3);
    assert_eq!(
        c.exchange(&post("/link/claim0?wsecret=bad", b"y")).status(),
        401
    );
}

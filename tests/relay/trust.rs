//! Part B: forwarded headers are honoured only from a trusted reverse proxy
//! (`--trust-proxy`), and idle channels (secrets included) are forgotten
//! (`--idle-expiry`).

use std::thread;
use std::time::{Duration, Instant};

use super::support::{req, req_host, send_waiting, Conn, Relay, RssSampler};
use super::{get, post};

const FAKE_IP: &str = "203.0.113.7";
const FAKE_PORT: &str = "4242";

/// One link transfer where both sides claim a forwarded address. Returns what the
/// consumer learnt about the producer and what the producer learnt about the
/// consumer, as (ip, port) pairs, plus both sockets' local ports.
#[allow(clippy::type_complexity)]
fn link_with_forwarded_addresses(
    relay: &Relay,
    id: &str,
) -> ((String, String), (String, String), (String, String)) {
    let path = format!("/link/{id}");
    let mut producer = relay.connect();
    send_waiting(
        &mut producer,
        &req(
            "POST",
            &path,
            &[("X-Real-IP", FAKE_IP), ("X-Real-Port", FAKE_PORT)],
            b"addr",
        ),
        "a link producer",
    );
    let mut consumer = relay.connect();
    let got = consumer.exchange(&req(
        "GET",
        &path,
        &[("X-Real-IP", "198.51.100.1"), ("X-Real-Port", "1111")],
        b"",
    ));
    let done = producer.read_response();
    assert_eq!(got.body(), b"addr");
    assert_eq!(done.status(), 200);
    let pair = |r: &super::support::Response| {
        (
            r.header("X-Real-IP").unwrap_or_default().to_string(),
            r.header("X-Real-Port").unwrap_or_default().to_string(),
        )
    };
    (
        pair(&got),
        pair(&done),
        (
            producer.local_port().to_string(),
            consumer.local_port().to_string(),
        ),
    )
}

#[test]
fn real_ip_headers_are_ignored_from_untrusted_peers() {
    for flags in [&[][..], &["--trust-proxy", "10.9.8.7,::1"][..]] {
        let relay = Relay::start_flags(flags);
        let (of_producer, of_consumer, (producer_port, consumer_port)) =
            link_with_forwarded_addresses(&relay, "untrusted");
        assert_eq!(
            of_producer,
            ("127.0.0.1".to_string(), producer_port),
            "flags {flags:?}: the consumer must see the producer's socket address"
        );
        assert_eq!(
            of_consumer,
            ("127.0.0.1".to_string(), consumer_port),
            "flags {flags:?}: the producer must see the consumer's socket address"
        );
    }
}

#[test]
fn real_ip_headers_are_used_from_a_trusted_proxy() {
    for list in ["127.0.0.1", "::1,127.0.0.1"] {
        let relay = Relay::start_flags(&["--trust-proxy", list]);
        let (of_producer, of_consumer, _) = link_with_forwarded_addresses(&relay, "trusted");
        assert_eq!(
            of_producer,
            (FAKE_IP.to_string(), FAKE_PORT.to_string()),
            "--trust-proxy {list}"
        );
        assert_eq!(
            of_consumer,
            ("198.51.100.1".to_string(), "1111".to_string()),
            "--trust-proxy {list}"
        );

        // A trusted peer that sends no such headers is described by its socket.
        let mut producer = relay.connect();
        send_waiting(&mut producer, &post("/link/plain", b"p"), "a link producer");
        let mut consumer = relay.connect();
        let got = consumer.exchange(&get("/link/plain"));
        assert_eq!(got.header("X-Real-IP"), Some("127.0.0.1"));
        assert_eq!(
            got.header("X-Real-Port"),
            Some(producer.local_port().to_string().as_str())
        );
        assert_eq!(producer.read_response().status(), 200);
    }
}

/// Attributes of the mcast reader's `SeqId` cookie, lowercased.
fn cookie_attributes(relay: &Relay, id: &str, headers: &[(&str, &str)]) -> Vec<String> {
    let mut producer = relay.connect();
    let done = producer.exchange(&post(&format!("/mcast/{id}"), b"c"));
    assert_eq!(done.status(), 200);
    let mut reader = relay.connect();
    let got = reader.exchange(&req("GET", &format!("/mcast/{id}"), headers, b""));
    assert_eq!(got.status(), 200);
    let line = got
        .head
        .header_all("Set-Cookie")
        .into_iter()
        .find(|v| v.starts_with("SeqId="))
        .unwrap_or_else(|| panic!("no SeqId cookie: {:?}", got.head))
        .to_string();
    line.split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
}

#[test]
fn mcast_cookie_is_secure_only_over_trusted_https() {
    let https = [("X-Forwarded-Proto", "https")];
    let secure = |attrs: &[String]| {
        attrs.iter().any(|a| a == "secure") && attrs.iter().any(|a| a == "samesite=none")
    };
    let insecure = |attrs: &[String]| {
        !attrs.iter().any(|a| a == "secure") && !attrs.iter().any(|a| a == "samesite=none")
    };

    let untrusted = Relay::start();
    let attrs = cookie_attributes(&untrusted, "ck", &https);
    assert!(insecure(&attrs), "untrusted X-Forwarded-Proto: {attrs:?}");

    let trusted = Relay::start_flags(&["--trust-proxy", "127.0.0.1"]);
    let attrs = cookie_attributes(&trusted, "ck", &https);
    assert!(
        secure(&attrs),
        "trusted X-Forwarded-Proto: https: {attrs:?}"
    );
    let attrs = cookie_attributes(&trusted, "ck2", &[("X-Forwarded-Proto", "http")]);
    assert!(
        insecure(&attrs),
        "trusted X-Forwarded-Proto: http: {attrs:?}"
    );
    let attrs = cookie_attributes(&trusted, "ck3", &[]);
    assert!(insecure(&attrs), "trusted peer, plain HTTP: {attrs:?}");
}

/// The `HttpRelay-Proxy-*` url fields a SERVE sees for one forwarded client request.
fn proxy_url_fields(relay: &Relay, id: &str) -> [String; 4] {
    let mut server = relay.connect();
    send_waiting(
        &mut server,
        &req("SERVE", &format!("/proxy/{id}"), &[], b""),
        "a SERVE",
    );
    let mut client = relay.connect();
    client.send(&req_host(
        "GET",
        &format!("/proxy/{id}/p?x=1"),
        "relay.test:8123",
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "public.example"),
            ("X-Forwarded-Port", "8443"),
        ],
        b"",
    ));
    let job = server.read_response();
    assert_eq!(job.status(), 200, "{:?}", job.head);
    let field = |name: &str| {
        job.header(name)
            .unwrap_or_else(|| panic!("job without {name}: {:?}", job.head))
            .to_string()
    };
    let fields = [
        field("HttpRelay-Proxy-Url"),
        field("HttpRelay-Proxy-Scheme"),
        field("HttpRelay-Proxy-Host"),
        field("HttpRelay-Proxy-Port"),
    ];
    let job_id = field("HttpRelay-Proxy-JobId");
    server.send(&req(
        "SERVE",
        &format!("/proxy/{id}"),
        &[("HttpRelay-Proxy-JobId", &job_id)],
        b"",
    ));
    assert_eq!(client.read_response().status(), 200);
    fields
}

#[test]
fn proxy_forwarded_headers_only_from_a_trusted_peer() {
    let untrusted = Relay::start();
    assert_eq!(
        proxy_url_fields(&untrusted, "fw"),
        [
            "http://relay.test:8123/proxy/fw/p?x=1",
            "http",
            "relay.test",
            "8123"
        ],
        "X-Forwarded-* from an untrusted peer must be ignored"
    );
    let trusted = Relay::start_flags(&["--trust-proxy", "127.0.0.1"]);
    assert_eq!(
        proxy_url_fields(&trusted, "fw"),
        [
            "https://public.example:8443/proxy/fw/p?x=1",
            "https",
            "public.example",
            "8443"
        ],
        "X-Forwarded-* from a trusted peer must be used"
    );
}

/// Link transfers on distinct channel ids, each producer claiming its channel with a
/// write secret, over `pairs` keep-alive connection pairs in parallel.
fn many_link_channels(relay: &Relay, prefix: &str, count: usize, pairs: usize) {
    let padding = "p".repeat(120);
    let workers: Vec<_> = (0..pairs)
        .map(|w| {
            let addr = relay.addr().clone();
            let prefix = prefix.to_string();
            let padding = padding.clone();
            thread::spawn(move || {
                let mut producer = Conn::open(&addr);
                let mut consumer = Conn::open(&addr);
                for i in (w..count).step_by(pairs) {
                    let path = format!("/link/{prefix}-{i}-{padding}");
                    producer.send(&post(
                        &format!("{path}?wsecret=secret-of-channel-{i}-0123456789abcdef"),
                        b"m",
                    ));
                    consumer.send(&get(&path));
                    let got = consumer.read_response();
                    assert_eq!(got.status(), 200, "transfer {i}: {:?}", got.head);
                    assert_eq!(got.body(), b"m", "transfer {i}");
                    let done = producer.read_response();
                    assert_eq!(done.status(), 200, "transfer {i}: {:?}", done.head);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("link worker");
    }
}

#[test]
fn memory_returns_to_baseline_after_100k_idle_channels_expire() {
    const CHANNELS: usize = 100_000;
    const PAIRS: usize = 8;
    // Without expiry the same run grows the relay by over 30 MiB; a few MiB of
    // slack absorbs allocator fragmentation when other tests load the machine.
    const SLACK_KIB: u64 = 4 * 1024;
    let relay = Relay::start_flags(&["--idle-expiry", "0.2"]);

    // Warm up (allocator arenas, buffers, tables), let it expire, then measure.
    many_link_channels(&relay, "warm", 5_000, PAIRS);
    thread::sleep(Duration::from_millis(1000));
    let baseline = relay.rss_kib();

    let sampler = RssSampler::start(relay.pid());
    let started = Instant::now();
    many_link_channels(&relay, "mem", CHANNELS, PAIRS);
    let elapsed = started.elapsed();
    let (peak, _) = sampler.finish();
    let alive = relay.rss_kib();

    // The relay still answers.
    let mut conn = relay.connect();
    assert_eq!(conn.exchange(&get("/health")).status(), 200);

    // Wait for expiry (no timing assertion: poll until close to baseline or give up).
    thread::sleep(Duration::from_millis(1000));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = relay.rss_kib();
    while after > baseline + SLACK_KIB && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        after = relay.rss_kib();
    }
    eprintln!(
        "{CHANNELS} channels in {elapsed:?}: RSS baseline {baseline} KiB, peak {peak} KiB, \
         right after {alive} KiB, after expiry {after} KiB"
    );

    // Forgotten means forgotten: the secret that claimed a used channel is gone, so
    // a different secret is accepted.
    let path = format!("/link/mem-0-{}", "p".repeat(120));
    let mut consumer = relay.connect();
    send_waiting(
        &mut consumer,
        &get(&path),
        "a consumer of an expired channel",
    );
    let mut producer = relay.connect();
    let done = producer.exchange(&post(&format!("{path}?wsecret=another"), b"again"));
    assert_eq!(
        done.status(),
        200,
        "an expired channel's secret must be forgotten: {:?}",
        done.head
    );
    assert_eq!(consumer.read_response().body(), b"again");

    assert!(
        after <= baseline + SLACK_KIB,
        "RSS {after} KiB after the channels expired, baseline {baseline} KiB \
         (peak {peak} KiB): idle channels are not forgotten"
    );
}

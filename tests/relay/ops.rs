//! Operators' view: `/metrics` counts exactly the traffic a test made, and the
//! access log has one line per completed request.

use std::thread;
use std::time::Duration;

use crate::support::{req, Relay, PARK};

/// The value of one sample line (`name` including labels) in a scrape.
fn sample(scrape: &str, name: &str) -> u64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in\n{scrape}"))
        .parse()
        .unwrap_or_else(|_| panic!("sample {name} is not a number"))
}

fn scrape(relay: &Relay) -> String {
    let mut conn = relay.connect();
    let r = conn.exchange(&req("GET", "/metrics", &[], b""));
    assert_eq!(r.status(), 200);
    assert!(
        r.header("Content-Type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r.head
    );
    r.text()
}

#[test]
fn metrics_count_the_traffic_made() {
    let relay = Relay::start();
    let mut connections = 0;
    let mut relayed = 0u64;

    // Two link transfers (5 and 7 bytes), on keep-alive connections.
    let mut consumer = relay.connect();
    let mut producer = relay.connect();
    connections += 2;
    for body in [&b"hello"[..], b"goodbye"] {
        consumer.send(&req("GET", "/link/m", &[], b""));
        thread::sleep(PARK);
        producer.send(&req("POST", "/link/m", &[], body));
        assert_eq!(consumer.read_response().body(), body);
        assert_eq!(producer.read_response().status(), 200);
        relayed += body.len() as u64;
    }

    // One mcast message (11 bytes) read by two readers.
    let mut publisher = relay.connect();
    connections += 1;
    let stored = publisher.exchange(&req("POST", "/mcast/m", &[], b"to everyone"));
    assert_eq!(stored.status(), 200);
    let mut readers = Vec::new();
    for _ in 0..2 {
        let mut reader = relay.connect();
        connections += 1;
        assert_eq!(
            reader
                .exchange(&req("GET", "/mcast/m?seqid=0", &[], b""))
                .body(),
            b"to everyone"
        );
        relayed += 11;
        readers.push(reader);
    }

    // One sync pair (3 and 4 bytes, each delivered to the other).
    let mut a = relay.connect();
    let mut b = relay.connect();
    connections += 2;
    a.send(&req("POST", "/sync/m", &[], b"abc"));
    thread::sleep(PARK);
    b.send(&req("POST", "/sync/m", &[], b"defg"));
    assert_eq!(a.read_response().body(), b"defg");
    assert_eq!(b.read_response().body(), b"abc");
    relayed += 7;

    // One proxy round trip: the job body (2 bytes) to the server, the result
    // (6 bytes) to the client.
    let mut server = relay.connect();
    let mut client = relay.connect();
    connections += 2;
    server.send(&req("SERVE", "/proxy/m", &[], b""));
    thread::sleep(PARK);
    client.send(&req("POST", "/proxy/m/x", &[], b"hi"));
    let job = server.read_response();
    assert_eq!(job.body(), b"hi");
    let job_id = job.header("HttpRelay-Proxy-JobId").unwrap().to_string();
    server.send(&req(
        "SERVE",
        "/proxy/m",
        &[("HttpRelay-Proxy-JobId", &job_id)],
        b"answer",
    ));
    assert_eq!(client.read_response().body(), b"answer");
    relayed += 8;
    // That SERVE now waits for the next job: one proxy waiter.

    // Rejections: a 404 and a 405; and one link consumer left waiting.
    let mut errors = relay.connect();
    connections += 1;
    assert_eq!(
        errors.exchange(&req("GET", "/nowhere", &[], b"")).status(),
        404
    );
    assert_eq!(
        errors
            .exchange(&req("DELETE", "/link/m", &[], b""))
            .status(),
        405
    );
    let mut waiting = relay.connect();
    connections += 1;
    waiting.send(&req("GET", "/link/waits", &[], b""));
    thread::sleep(PARK);

    let scraped = scrape(&relay);
    connections += 1; // the scrape's own connection
    assert_eq!(
        sample(&scraped, "httprelay_connections_accepted_total"),
        connections
    );
    assert_eq!(sample(&scraped, "httprelay_connections_open"), connections);
    assert_eq!(
        sample(&scraped, "httprelay_transfers_total{method=\"link\"}"),
        2
    );
    assert_eq!(
        sample(&scraped, "httprelay_transfers_total{method=\"mcast\"}"),
        2
    );
    assert_eq!(
        sample(&scraped, "httprelay_transfers_total{method=\"sync\"}"),
        1
    );
    assert_eq!(
        sample(&scraped, "httprelay_transfers_total{method=\"proxy\"}"),
        1
    );
    assert_eq!(sample(&scraped, "httprelay_mcast_messages_total"), 1);
    assert_eq!(sample(&scraped, "httprelay_relayed_bytes_total"), relayed);
    assert_eq!(
        sample(&scraped, "httprelay_rejections_total{status=\"404\"}"),
        1
    );
    assert_eq!(
        sample(&scraped, "httprelay_rejections_total{status=\"405\"}"),
        1
    );
    assert_eq!(
        sample(&scraped, "httprelay_rejections_total{status=\"401\"}"),
        0
    );
    assert_eq!(sample(&scraped, "httprelay_waiters{method=\"link\"}"), 1);
    assert_eq!(sample(&scraped, "httprelay_waiters{method=\"proxy\"}"), 1);
    assert_eq!(sample(&scraped, "httprelay_waiters{method=\"sync\"}"), 0);
    // The message's 11 bytes, its method (4) and the 256 a message costs beyond.
    assert_eq!(
        sample(&scraped, "httprelay_held_bytes{method=\"mcast\"}"),
        11 + 4 + 256
    );
    assert_eq!(sample(&scraped, "httprelay_held_bytes{method=\"sync\"}"), 0);
    assert_eq!(
        sample(&scraped, "httprelay_build_info{version=\"0.1.0\"}"),
        1
    );
    // Channels that hold something: the link waiter's, the mcast message's and
    // the waiting SERVE's. Finished link and sync pairs leave nothing behind.
    assert_eq!(sample(&scraped, "httprelay_channels{method=\"link\"}"), 1);
    assert_eq!(sample(&scraped, "httprelay_channels{method=\"mcast\"}"), 1);
    assert_eq!(sample(&scraped, "httprelay_channels{method=\"sync\"}"), 0);
    assert_eq!(sample(&scraped, "httprelay_channels{method=\"proxy\"}"), 1);
    assert_eq!(sample(&scraped, "httprelay_channels_remembered"), 1);
    assert_eq!(sample(&scraped, "httprelay_channels_refused_total"), 0);

    // Closing the waiter is seen at once.
    drop(waiting);
    thread::sleep(PARK);
    let scraped = scrape(&relay);
    assert_eq!(sample(&scraped, "httprelay_waiters{method=\"link\"}"), 0);
    assert_eq!(
        sample(&scraped, "httprelay_connections_accepted_total"),
        connections + 1
    );
}

#[test]
fn access_log_has_a_line_per_request_without_the_query() {
    let relay = Relay::start_flags(&["--access-log"]);
    let mut conn = relay.connect();
    assert_eq!(
        conn.exchange(&req("GET", "/health", &[], b"")).status(),
        200
    );
    assert_eq!(
        conn.exchange(&req("GET", "/nope?wsecret=hidden", &[], b""))
            .status(),
        404
    );
    let mut consumer = relay.connect();
    consumer.send(&req("GET", "/link/log?wsecret=hidden", &[], b""));
    thread::sleep(PARK);
    let mut producer = relay.connect();
    assert_eq!(
        producer
            .exchange(&req("PUT", "/link/log", &[], b"12345"))
            .status(),
        200
    );
    assert_eq!(consumer.read_response().body(), b"12345");
    thread::sleep(Duration::from_millis(100));

    let log = relay.output();
    let lines: Vec<&str> = log
        .lines()
        .map(|l| l.strip_prefix("[stderr] ").unwrap_or(l))
        .filter(|l| l.contains(" 127.0.0.1:") && l.ends_with("ms"))
        .collect();
    assert_eq!(lines.len(), 4, "one line per request:\n{log}");
    let find = |needle: &str| {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}:\n{log}"))
            .split(' ')
            .collect::<Vec<_>>()
    };
    // time client method path status bytes duration
    let health = find("GET /health ");
    assert_eq!(health.len(), 7, "{health:?}");
    assert!(
        health[0].ends_with('Z') && health[0].contains('T'),
        "{health:?}"
    );
    assert_eq!(health[4], "200");
    assert!(health[6].ends_with("ms"));
    assert_eq!(find("GET /nope ")[4], "404");
    let put = find("PUT /link/log ");
    assert_eq!(put[4], "200");
    let get = find("GET /link/log ");
    assert_eq!(get[4], "200");
    assert!(
        get[5].parse::<u64>().unwrap() > 5,
        "bytes sent include the head and the body"
    );
    assert!(
        !log.contains("hidden"),
        "the query (and its secret) is never logged:\n{log}"
    );
}

#[test]
fn health_check_flag_exits_0_only_when_the_relay_answers() {
    let relay = Relay::start();
    let crate::support::Addr::Tcp(addr) = relay.addr().clone() else {
        panic!("a TCP relay")
    };
    let check = |port: u16| {
        std::process::Command::new(crate::support::binary())
            .args(["--health-check", "-a", "127.0.0.1", "-p", &port.to_string()])
            .output()
            .expect("run httprelay --health-check")
    };
    let up = check(addr.port());
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    drop(relay);
    thread::sleep(PARK);
    let down = check(addr.port());
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("health check failed"));
}

#[test]
fn at_the_channel_cap_new_claims_get_503_logged_and_counted() {
    let relay = Relay::start_flags(&["--access-log", "--max-channels", "2"]);
    let mut conn = relay.connect();
    // Two remembered channels: a claim and an mcast message.
    let mut owner = relay.connect();
    owner.send(&req("POST", "/link/owned?wsecret=k", &[], b"mine"));
    thread::sleep(PARK);
    assert_eq!(
        conn.exchange(&req("POST", "/mcast/news", &[], b"m"))
            .status(),
        200
    );
    // A third would need memory past the cap.
    for (method, target) in [
        ("POST", "/link/other?wsecret=x"),
        ("POST", "/mcast/other"),
        ("SERVE", "/proxy/other?wsecret=x"),
    ] {
        let mut c = relay.connect();
        let got = c.exchange(&req(method, target, &[], b""));
        assert_eq!(got.status(), 503, "{method} {target}: {:?}", got.head);
        assert_eq!(got.text(), "503 relay remembers too many channels\n");
    }
    // What needs no remembering still works, and so do the channels kept.
    super::support::link_exchange(
        relay.addr(),
        "/link/free",
        "/link/free",
        b"ok",
        Duration::from_secs(10),
        "a transfer without a secret at the cap",
    );
    assert_eq!(
        conn.exchange(&req("POST", "/mcast/news", &[], b"n"))
            .status(),
        200
    );
    assert_eq!(
        conn.exchange(&req("POST", "/link/owned?wsecret=bad", &[], b"x"))
            .status(),
        401
    );
    let scraped = scrape(&relay);
    assert_eq!(sample(&scraped, "httprelay_channels_remembered"), 2);
    assert_eq!(sample(&scraped, "httprelay_channels_refused_total"), 3);
    assert_eq!(sample(&scraped, "httprelay_channels{method=\"link\"}"), 1);
    assert_eq!(sample(&scraped, "httprelay_channels{method=\"mcast\"}"), 1);
    assert_eq!(
        sample(&scraped, "httprelay_rejections_total{status=\"503\"}"),
        3
    );
    thread::sleep(Duration::from_millis(100));
    let log = relay.output();
    let refused = log
        .lines()
        .filter(|l| l.contains(" /link/other ") || l.contains(" /mcast/other "))
        .filter(|l| l.split(' ').any(|field| field == "503"))
        .count();
    assert_eq!(refused, 2, "the 503s in the access log:\n{log}");
    assert!(
        log.lines()
            .filter(|l| l.contains(" /link/other ") || l.contains(" /mcast/other "))
            .all(|l| l.ends_with(" limit=max-channels")),
        "the access log names the limit:\n{log}"
    );
    assert_eq!(
        sample(
            &scraped,
            "httprelay_limit_refusals_total{limit=\"max-channels\"}"
        ),
        3
    );
    drop(owner);
}

/// The relay's output once it holds its startup lines (bounded wait).
fn startup_output(relay: &Relay) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = relay.output();
        if log.contains("worst-case memory for these flags") || std::time::Instant::now() > deadline
        {
            return log;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The startup lines: the budget and where it came from, then the bound.
fn budget_lines(log: &str) -> (&str, &str) {
    let lines = || {
        log.lines()
            .map(|l| l.strip_prefix("[stderr] ").unwrap_or(l))
    };
    let budget = lines()
        .find(|l| l.starts_with("httprelay: memory budget "))
        .unwrap_or_else(|| panic!("no budget line in\n{log}"));
    let bound = lines()
        .find(|l| l.starts_with("httprelay: worst-case memory for these flags: "))
        .unwrap_or_else(|| panic!("no bound line in\n{log}"));
    (budget, bound)
}

#[test]
fn a_memory_budget_sets_the_limits_and_metrics_show_it_and_its_refusals() {
    use httprelay::budget::{fit, Budget};
    let relay = Relay::start_flags(&["--memory", "48M", "--access-log"]);
    let mut expected = match httprelay::config::parse(["--memory", "48M"].map(Into::into), None) {
        Ok(httprelay::config::Command::Run(c)) => *c,
        other => panic!("{other:?}"),
    };
    let fitted = fit(&mut expected, Budget::flag(48 << 20));
    let log = startup_output(&relay);
    let (budget, bound) = budget_lines(&log);
    assert_eq!(
        budget,
        format!("httprelay: {}", fitted.startup_line(&expected))
    );
    assert!(budget.starts_with("httprelay: memory budget 48 MiB (--memory): --max-conns "));
    assert_eq!(
        bound,
        format!(
            "httprelay: worst-case memory for these flags: {}",
            fitted.bound
        )
    );

    // A body over the derived --sync-max-body, a head over --max-head.
    let over = expected.sync_max_body + 1;
    let mut conn = relay.connect();
    let head = req(
        "POST",
        "/sync/big",
        &[("Content-Length", &over.to_string())],
        b"",
    );
    let got = conn.exchange(&head);
    assert_eq!(got.status(), 413, "{:?}", got.head);
    let long = "x".repeat(expected.max_head);
    let mut conn = relay.connect();
    let got = conn.exchange(&req("GET", "/link/a", &[("X-Long", &long)], b""));
    assert_eq!(got.status(), 431, "{:?}", got.head);

    let scraped = scrape(&relay);
    assert_eq!(
        sample(&scraped, "httprelay_memory_budget_bytes{source=\"flag\"}"),
        48 << 20
    );
    assert_eq!(
        sample(&scraped, "httprelay_memory_bound_bytes"),
        fitted.bound.total()
    );
    let resident = sample(&scraped, "process_resident_memory_bytes");
    let rss = relay.rss_kib() * 1024;
    assert!(
        resident > 1 << 20 && resident.abs_diff(rss) < 4 << 20,
        "resident {resident}, /proc says {rss}"
    );
    for (limit, n) in [("sync-max-body", 1), ("max-head", 1), ("sync-total", 0)] {
        let name = format!("httprelay_limit_refusals_total{{limit=\"{limit}\"}}");
        assert_eq!(sample(&scraped, &name), n, "{name}");
    }
    thread::sleep(Duration::from_millis(100));
    let log = relay.output();
    assert!(
        log.lines()
            .any(|l| l.contains(" POST /sync/big 413 ") && l.ends_with(" limit=sync-max-body")),
        "{log}"
    );
}

#[test]
fn without_memory_the_budget_is_read_from_the_machine() {
    use httprelay::budget::machine::Machine;
    let relay = Relay::start();
    let machine = Machine::read();
    let budget = httprelay::budget::Budget::for_machine(machine.cgroup_limit, machine.mem_total);
    let log = startup_output(&relay);
    let (line, _) = budget_lines(&log);
    assert!(
        line.starts_with(&format!("httprelay: memory budget {budget}: --max-conns ")),
        "{line}"
    );
    let source = match budget.source {
        httprelay::budget::Source::Cgroup { .. } => "cgroup",
        httprelay::budget::Source::Meminfo { .. } => "meminfo",
        other => panic!("this machine has /proc: {other:?}"),
    };
    let name = format!("httprelay_memory_budget_bytes{{source=\"{source}\"}}");
    assert_eq!(sample(&scrape(&relay), &name), budget.bytes);
}

#[test]
fn limits_past_an_explicit_budget_stop_the_relay_with_one_line() {
    let out = std::process::Command::new(crate::support::binary())
        .args([
            "--memory",
            "32M",
            "--max-conns",
            "3000",
            "-a",
            "127.0.0.1",
            "-p",
            "0",
        ])
        .output()
        .expect("run httprelay");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("httprelay: --max-conns 3000 need up to ")
            && err.contains("more than the budget: 32 MiB (--memory)"),
        "{err}"
    );
}

/// A child of the test's own memory cgroup with `limit_in_bytes`, where the
/// machine lets the test make one (root, a writable v1 memory hierarchy or a
/// v2 one with the memory controller); `None` elsewhere.
fn child_cgroup(limit: u64) -> Option<(std::path::PathBuf, &'static str)> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let (base, file) = if controllers.split(',').any(|c| c == "memory") {
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
        } else if controllers.is_empty() {
            ("/sys/fs/cgroup", "memory.max")
        } else {
            continue;
        };
        let dir = std::path::PathBuf::from(format!(
            "{base}{}/httprelay-test-{}",
            path.trim_end_matches('/'),
            std::process::id()
        ));
        if std::fs::create_dir(&dir).is_err() {
            continue;
        }
        if std::fs::write(dir.join(file), limit.to_string()).is_ok() {
            return Some((dir, file));
        }
        let _ = std::fs::remove_dir(&dir);
    }
    None
}

#[test]
fn a_cgroup_memory_limit_is_the_budget_s_source() {
    let Some((dir, file)) = child_cgroup(100 << 20) else {
        eprintln!("no child memory cgroup can be made here: the cgroup reading is checked by the unit tests' fixtures only");
        return;
    };
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec {} -a 127.0.0.1 -p 0",
        dir.display(),
        crate::support::binary().display()
    );
    let mut relay = std::process::Command::new("sh")
        .args(["-c", &script])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the relay in the cgroup");
    let mut first = String::new();
    let stderr = relay.stderr.take().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stderr), &mut first).unwrap();
    let _ = relay.kill();
    let _ = relay.wait();
    let _ = std::fs::remove_dir(&dir);
    assert!(
        first.starts_with(
            "httprelay: memory budget 50 MiB (half of the cgroup's limit of 100 MiB): "
        ),
        "{file}: {first}"
    );
}

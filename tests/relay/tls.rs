//! HTTPS in the same loop (`--features tls`): every method over TLS, a large
//! transfer byte for byte, TLS and plain ends mixed, stalled handshakes,
//! plain HTTP on the TLS port, certificate reload on SIGHUP, key kinds.
//! Certificates are made by a test CA when each test runs; curl is the
//! client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use super::get;
use super::support::tls::{
    curl, eventually, finish, run, served_serial, spawn, start_tls, tls_binary, tls_relay, KeyKind,
    Pki,
};
use super::support::{body_for, Relay, PARK};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A counter's value in the relay's metrics, read over HTTPS.
fn metric(ca: &std::path::Path, addr: std::net::SocketAddr, line: &str) -> u64 {
    let page = text(&run(curl(ca, addr, "/metrics", &[])).stdout);
    page.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line} not in /metrics:\n{page}"))
}

#[test]
fn every_method_works_over_tls() {
    let Some((pki, relay, https)) = tls_relay("methods", 1001, &["--piping"]) else {
        return;
    };
    let ca = &pki.ca;

    // /health, with ALPN settling on HTTP/1.1.
    let health = run(curl(ca, https, "/health", &["-v"]));
    assert_eq!(text(&health.stdout), super::VERSION);
    assert!(
        text(&health.stderr).contains("ALPN: server accepted http/1.1"),
        "{}",
        text(&health.stderr)
    );

    // link: a consumer waits, a producer delivers.
    let consumer = spawn(curl(ca, https, "/link/a", &[]));
    std::thread::sleep(PARK);
    run(curl(ca, https, "/link/a", &["--data-binary", "over tls"]));
    assert_eq!(text(&finish(consumer).stdout), "over tls");

    // mcast: a stored message, and the live stream.
    run(curl(ca, https, "/mcast/m", &["--data-binary", "one"]));
    assert_eq!(text(&run(curl(ca, https, "/mcast/m", &[])).stdout), "one");
    let mut stream = spawn(curl(
        ca,
        https,
        "/mcast/live",
        &["-N", "-H", "Accept: text/event-stream", "--max-time", "3"],
    ));
    std::thread::sleep(PARK);
    run(curl(ca, https, "/mcast/live", &["--data-binary", "two"]));
    let _ = stream.wait();
    let mut events = String::new();
    stream
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut events)
        .expect("the stream's bytes");
    assert!(events.contains("data: two"), "{events}");

    // sync: two requests swap bodies.
    let left = spawn(curl(ca, https, "/sync/s", &["--data-binary", "left"]));
    std::thread::sleep(PARK);
    let right = run(curl(ca, https, "/sync/s", &["--data-binary", "right"]));
    assert_eq!(text(&right.stdout), "left");
    assert_eq!(text(&finish(left).stdout), "right");

    // proxy: a server's SERVE loop answers a client, all over TLS.
    let serve = spawn(curl(ca, https, "/proxy/srv", &["-X", "SERVE", "-D", "-"]));
    std::thread::sleep(PARK);
    let client = spawn(curl(ca, https, "/proxy/srv/items?id=3", &["-i"]));
    let job = text(&finish(serve).stdout);
    let job_id = job
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("HttpRelay-Proxy-JobId")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no job id in {job}"));
    let mut answer = spawn(curl(
        ca,
        https,
        "/proxy/srv",
        &[
            "-X",
            "SERVE",
            "-H",
            &format!("HttpRelay-Proxy-JobId: {job_id}"),
            "-H",
            "HttpRelay-Proxy-Status: 201",
            "--data-binary",
            "item three",
            "--max-time",
            "3",
        ],
    ));
    let got = text(&finish(client).stdout);
    assert!(got.starts_with("HTTP/1.1 201"), "{got}");
    assert!(got.ends_with("item three"), "{got}");
    let _ = answer.kill();
    let _ = answer.wait();

    // inbox: stored, read, acknowledged.
    run(curl(ca, https, "/inbox/i", &["--data-binary", "msg"]));
    assert_eq!(text(&run(curl(ca, https, "/inbox/i", &[])).stdout), "msg");
    run(curl(ca, https, "/inbox/i", &["-X", "DELETE", "-f"]));
    assert_eq!(
        text(&run(curl(ca, https, "/inbox/i/ack", &[])).stdout),
        "true"
    );

    // piping: a sender and a receiver on a path of their own.
    let receiver = spawn(curl(ca, https, "/some/pipe", &[]));
    std::thread::sleep(PARK);
    run(curl(
        ca,
        https,
        "/some/pipe",
        &["-X", "PUT", "--data-binary", "piped"],
    ));
    assert_eq!(text(&finish(receiver).stdout), "piped");

    // HTTP/1.0, whose ALPN offers `http/1.0` alone, and a body to it that
    // only the end of the connection delimits.
    let old = run(curl(ca, https, "/health", &["--http1.0"]));
    assert_eq!(text(&old.stdout), super::VERSION);
    let receiver = spawn(curl(ca, https, "/old/pipe", &["--http1.0"]));
    std::thread::sleep(PARK);
    run(curl(
        ca,
        https,
        "/old/pipe",
        &[
            "-X",
            "PUT",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "to the end",
        ],
    ));
    assert_eq!(text(&finish(receiver).stdout), "to the end");

    // A response after which the relay closes ends with close_notify, so
    // that a client reading to the end sees a whole response (OpenSSL 3
    // reports "unexpected eof" otherwise).
    let mut s_client = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-msg",
            "-servername",
            "localhost",
            "-connect",
        ])
        .arg(format!("127.0.0.1:{}", https.port()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    s_client
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"GET /health HTTP/1.0\r\n\r\n")
        .expect("the request");
    let said = s_client.wait_with_output().expect("s_client ends");
    let said = text(&said.stdout) + &text(&said.stderr);
    assert!(said.contains("close_notify"), "{said}");
    assert!(!said.contains("unexpected eof"), "{said}");

    // /metrics, which counted the handshakes.
    assert!(metric(ca, https, "httprelay_tls_handshakes_total{result=\"done\"}") >= 10);
    // Plain HTTP beside it goes on as before.
    assert_eq!(get_text(&relay, "/health"), super::VERSION);
}

fn get_text(relay: &Relay, path: &str) -> String {
    let mut c = relay.connect();
    text(c.exchange(&get(path)).body.bytes())
}

/// A file of `len` bytes (a whole number of MiB), each MiB a different
/// pseudo-random block (`body_for`), so that a misplaced block shows.
fn pattern_file(dir: &std::path::Path, len: usize) -> std::path::PathBuf {
    let path = dir.join(format!("pattern-{len}.bin"));
    let mut f = std::fs::File::create(&path).expect("pattern file");
    for block in 0..len >> 20 {
        f.write_all(&body_for(block as u64, 1 << 20))
            .expect("write");
    }
    path
}

fn same_files(a: &std::path::Path, b: &std::path::Path) -> bool {
    let (mut a, mut b) = (
        std::io::BufReader::new(std::fs::File::open(a).expect("a")),
        std::io::BufReader::new(std::fs::File::open(b).expect("b")),
    );
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x).expect("read a");
        let mut m = 0;
        while m < n {
            let k = b.read(&mut y[m..n]).expect("read b");
            if k == 0 {
                return false;
            }
            m += k;
        }
        if n == 0 {
            return b.read(&mut y).expect("read b") == 0;
        }
        if x[..n] != y[..n] {
            return false;
        }
    }
}

#[test]
fn a_256_mib_link_transfer_over_tls_arrives_byte_for_byte() {
    let Some((pki, relay, https)) = tls_relay("large", 7, &[]) else {
        return;
    };
    let ca = &pki.ca;
    let sent = pattern_file(&pki.dir, 256 << 20);
    let got = pki.dir.join("got.bin");
    let got_arg = got.to_str().expect("utf-8");
    let consumer = spawn(curl(ca, https, "/link/big", &["-o", got_arg]));
    std::thread::sleep(PARK);
    run(curl(
        ca,
        https,
        "/link/big",
        &["-T", sent.to_str().expect("utf-8")],
    ));
    finish(consumer);
    assert_eq!(std::fs::metadata(&got).expect("got").len(), 256 << 20);
    assert!(same_files(&sent, &got), "the 256 MiB arrived changed");
    // Over TLS nothing is spliced or passed: every byte went through the
    // sessions.
    let page = get_text(&relay, "/metrics");
    for zero_copy in [
        "httprelay_spliced_bytes_total 0",
        "httprelay_passed_bytes_total 0",
    ] {
        assert!(page.contains(zero_copy), "{zero_copy} expected:\n{page}");
    }
}

#[test]
fn transfers_between_tls_and_plain_ends_arrive_whole() {
    let Some((pki, relay, https)) = tls_relay("mixed", 8, &[]) else {
        return;
    };
    let ca = &pki.ca;
    let plain = relay.tcp_addr();
    let sent = pattern_file(&pki.dir, 32 << 20);
    let sent_arg = sent.to_str().expect("utf-8");
    for (n, (producer_tls, chunked)) in [(true, false), (false, false), (true, true), (false, true)]
        .into_iter()
        .enumerate()
    {
        let got = pki.dir.join(format!("got-{n}.bin"));
        let got_arg = got.to_str().expect("utf-8");
        let path = format!("/link/mixed{n}");
        // The consumer on the other kind of port.
        let consumer = if producer_tls {
            let mut c = Command::new("curl");
            c.args(["-sS", "-o", got_arg])
                .arg(format!("http://127.0.0.1:{}{path}", plain.port()));
            spawn(c)
        } else {
            spawn(curl(ca, https, &path, &["-o", got_arg]))
        };
        std::thread::sleep(PARK);
        let mut upload = vec!["-T", sent_arg];
        if chunked {
            upload.extend(["-H", "Transfer-Encoding: chunked"]);
        }
        if producer_tls {
            run(curl(ca, https, &path, &upload));
        } else {
            let mut c = Command::new("curl");
            c.arg("-sS")
                .args(&upload)
                .arg(format!("http://127.0.0.1:{}{path}", plain.port()));
            run(c);
        }
        finish(consumer);
        assert!(
            same_files(&sent, &got),
            "producer over {}, {}: the body arrived changed",
            if producer_tls { "TLS" } else { "plain HTTP" },
            if chunked { "chunked" } else { "Content-Length" }
        );
    }
}

#[test]
fn stalled_handshakes_are_closed_while_other_clients_are_served() {
    let Some((pki, relay, https)) = tls_relay(
        "slowloris",
        9,
        &["--tls-handshake-timeout", "1", "--max-conns", "64"],
    ) else {
        return;
    };
    let ca = &pki.ca;
    // 100 clients open TLS and stall: a record header promising a client
    // hello of 512 bytes, and 10 of them.
    let mut stalled: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(https).expect("connect");
            s.write_all(&[0x16, 3, 1, 2, 0, 1, 0, 1, 252, 3, 3, 0, 0, 0, 0])
                .expect("a partial hello");
            s
        })
        .collect();
    // Meanwhile others are served: over TLS (taking the place of stalled
    // ones, evicted at the connection limit) and over plain HTTP.
    assert_eq!(
        text(&run(curl(ca, https, "/health", &[])).stdout),
        super::VERSION
    );
    let mut plain = relay.connect();
    assert_eq!(plain.exchange(&get("/health")).status(), 200);
    // Every stalled client is closed within the handshake timeout (or was
    // evicted first), none answered.
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("a stalled handshake got {n} bytes"),
        }
    }
    let timed_out = metric(
        ca,
        https,
        "httprelay_timeouts_total{timeout=\"tls_handshake\"}",
    );
    let evicted = metric(ca, https, "httprelay_connections_evicted_total");
    assert_eq!(
        timed_out + evicted,
        100,
        "timed out {timed_out}, evicted {evicted}"
    );
    assert!(timed_out > 0);
    assert!(
        metric(
            ca,
            https,
            "httprelay_tls_handshakes_total{result=\"failed\"}"
        ) >= 100
    );
}

#[test]
fn plain_http_on_the_tls_port_gets_a_400_and_a_clean_close() {
    let Some((pki, _relay, https)) = tls_relay("plain", 10, &[]) else {
        return;
    };
    let mut s = TcpStream::connect(https).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .expect("the answer, then the end (not a reset)");
    let answer = text(&answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.ends_with("\r\n\r\n400 this port speaks HTTPS, not HTTP\n"),
        "{answer}"
    );
    // The relay goes on.
    assert_eq!(
        text(&run(curl(&pki.ca, https, "/health", &[])).stdout),
        super::VERSION
    );
}

#[test]
fn sighup_reloads_the_certificate_for_new_handshakes() {
    let Some(bin) = tls_binary() else { return };
    let pki = Pki::new("reload");
    let (cert, key) = pki.leaf("relay", 1001, KeyKind::EcdsaPkcs8);
    let (next_cert, next_key) = pki.leaf("next", 1002, KeyKind::EcdsaPkcs8);
    let (relay, https) = start_tls(&bin, &cert, &key, &[]);
    let ca = &pki.ca;
    assert_eq!(served_serial(https), "03E9");
    // A connection open across the reload goes on: a consumer waits.
    let consumer = spawn(curl(ca, https, "/link/across", &[]));
    std::thread::sleep(PARK);
    std::fs::copy(&next_cert, &cert).expect("new chain in place");
    std::fs::copy(&next_key, &key).expect("new key in place");
    let hup = |relay: &Relay| {
        // SAFETY: kill(2) on the relay's pid.
        assert_eq!(unsafe { libc::kill(relay.pid() as i32, libc::SIGHUP) }, 0);
    };
    hup(&relay);
    assert!(
        eventually(Duration::from_secs(5), || served_serial(https) == "03EA"),
        "a new handshake still gets {}",
        served_serial(https)
    );
    run(curl(
        ca,
        https,
        "/link/across",
        &["--data-binary", "still here"],
    ));
    assert_eq!(text(&finish(consumer).stdout), "still here");
    // A bad file keeps the pair in use, and says why.
    std::fs::write(&cert, "not a certificate").expect("garbage");
    hup(&relay);
    assert!(eventually(Duration::from_secs(5), || relay
        .output()
        .contains("the certificate in use stays")));
    assert_eq!(served_serial(https), "03EA");
    assert_eq!(
        metric(ca, https, "httprelay_tls_reloads_total{result=\"failed\"}"),
        1
    );
    assert_eq!(
        metric(ca, https, "httprelay_tls_reloads_total{result=\"done\"}"),
        1
    );
}

#[test]
fn rsa_ed25519_and_sec1_keys_serve_and_a_mismatched_key_is_refused() {
    let Some(bin) = tls_binary() else { return };
    let pki = Pki::new("kinds");
    for (n, kind) in [KeyKind::RsaPkcs1, KeyKind::Ed25519, KeyKind::EcdsaSec1]
        .into_iter()
        .enumerate()
    {
        let (cert, key) = pki.leaf(&format!("k{n}"), 20 + n as u32, kind);
        let (_relay, https) = start_tls(&bin, &cert, &key, &[]);
        assert_eq!(
            text(&run(curl(&pki.ca, https, "/health", &[])).stdout),
            super::VERSION,
            "{kind:?}"
        );
    }
    let (cert, _) = pki.leaf("a", 30, KeyKind::EcdsaPkcs8);
    let (_, other_key) = pki.leaf("b", 31, KeyKind::EcdsaPkcs8);
    let out = Command::new(&bin)
        .args([
            "-a",
            "127.0.0.1",
            "-p",
            "0",
            "--tls-port",
            "0",
            "--tls-cert",
        ])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&other_key)
        .output()
        .expect("the relay runs");
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stderr);
    assert!(said.contains("cannot serve HTTPS"), "{said}");
}

#[test]
fn a_tls_only_relay_has_no_plain_listener() {
    let Some((pki, relay, https)) = tls_relay("only", 40, &["--tls-only"]) else {
        return;
    };
    assert!(!relay.output().contains("listening on 127.0.0.1:"));
    assert_eq!(relay.tcp_addr(), https);
    let consumer = spawn(curl(&pki.ca, https, "/link/x", &[]));
    std::thread::sleep(PARK);
    post_tls(&pki, https, "/link/x", "alone");
    assert_eq!(text(&finish(consumer).stdout), "alone");
}

fn post_tls(pki: &Pki, addr: std::net::SocketAddr, path: &str, body: &str) {
    run(curl(&pki.ca, addr, path, &["--data-binary", body]));
}

/// A TLS client that stops reading: openssl's s_client with its output
/// never read (it stops reading the socket once its pipe is full) and its
/// input `request` (kept open).
fn stalled_tls_client(addr: std::net::SocketAddr, request: &[u8]) -> std::process::Child {
    use std::process::Stdio;
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-servername", "localhost", "-connect"])
        .arg(format!("127.0.0.1:{}", addr.port()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client starts");
    child
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(request)
        .expect("the request");
    child
}

#[test]
fn tls_sessions_stay_within_their_term_of_the_memory_bound() {
    use httprelay::bound::{CONNECTION_RECORD, HEADS_PER_CONNECTION, OUTPUT_BUF_SIZE, TLS_SESSION};
    let max_head = 1024u64;
    let Some((pki, relay, https)) = tls_relay(
        "memory",
        60,
        &[
            "--max-conns",
            "400",
            "--max-head",
            "1024",
            "--mcast-total",
            "1M",
            "--sync-total",
            "1M",
            "--inbox-total",
            "1M",
            "--max-channels",
            "64",
        ],
    ) else {
        return;
    };
    let ca = &pki.ca;
    let per_connection =
        OUTPUT_BUF_SIZE as u64 + HEADS_PER_CONNECTION * max_head + CONNECTION_RECORD + TLS_SESSION;
    let bound_kib = metric(ca, https, "httprelay_memory_bound_bytes") / 1024;
    let settle = || std::thread::sleep(Duration::from_millis(1500));
    let mut peak = 0;
    // A connection may cost what the bound counts for it; one that holds
    // no buffer of the relay's (a handshake) only its record and session.
    let mut grown = |before: u64, n: u64, what: &str, limit: u64| {
        settle();
        let now = relay.rss_kib();
        peak = peak.max(now);
        let each = (now.saturating_sub(before)) * 1024 / n;
        println!("{what}: {each} B each (counted: {limit} B)");
        assert!(
            each <= limit,
            "{what}: {each} B each, more than the {limit} B the bound counts"
        );
        now
    };
    let start = relay.rss_kib();

    // 100 handshakes stalled with 15 KiB of a record in the session.
    let mut handshakes: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(https).expect("connect");
            let mut hello = vec![0x16, 3, 1, 0x3e, 0x80, 1, 0, 0x3e, 0x7c];
            hello.resize(15_000, 0);
            s.write_all(&hello).expect("a large partial hello");
            s
        })
        .collect();
    let after = grown(
        start,
        100,
        "a stalled handshake holding 15 KiB",
        TLS_SESSION + CONNECTION_RECORD,
    );

    // 50 TLS consumers that stop reading, each sent 4 MiB by a plain producer.
    let body = vec![b'x'; 4 << 20];
    let consumers: Vec<_> = (0..50)
        .map(|n| {
            stalled_tls_client(
                https,
                format!("GET /link/out{n} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            )
        })
        .collect();
    std::thread::sleep(PARK * 4);
    let producers: Vec<_> = (0..50)
        .map(|n| {
            let mut s = TcpStream::connect(relay.tcp_addr()).expect("connect");
            s.set_write_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            let body = body.clone();
            std::thread::spawn(move || {
                let head = format!(
                    "POST /link/out{n} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&body);
                s
            })
        })
        .collect();
    let after = grown(
        after,
        100,
        "a TLS consumer that stopped reading, and its producer",
        per_connection,
    );

    // 50 TLS producers whose plain consumers do not read.
    let mut plain_consumers: Vec<TcpStream> = (0..50)
        .map(|n| {
            let mut s = TcpStream::connect(relay.tcp_addr()).expect("connect");
            s.write_all(format!("GET /link/in{n} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .expect("a consumer");
            s
        })
        .collect();
    std::thread::sleep(PARK);
    let mut upload = Vec::new();
    let senders: Vec<_> = (0..50)
        .map(|n| {
            upload.clear();
            upload.extend_from_slice(
                format!("POST /link/in{n} HTTP/1.1\r\nHost: x\r\nContent-Length: 4194304\r\n\r\n")
                    .as_bytes(),
            );
            upload.extend_from_slice(&body[..1 << 20]);
            stalled_tls_client(https, &upload)
        })
        .collect();
    grown(
        after,
        100,
        "a TLS producer whose consumer does not read, and its consumer",
        per_connection,
    );

    println!("peak {peak} KiB against the bound's {bound_kib} KiB");
    assert!(
        super::support::bounded_rss_kib(peak, start) <= bound_kib,
        "peak RSS {peak} KiB passed the bound of {bound_kib} KiB"
    );
    for mut child in consumers.into_iter().chain(senders) {
        let _ = child.kill();
        let _ = child.wait();
    }
    drop(relay);
    handshakes.clear();
    plain_consumers.clear();
    for p in producers {
        let _ = p.join();
    }
}

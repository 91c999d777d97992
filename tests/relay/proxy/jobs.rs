//! Jobs: a round trip, SERVE loops sharing many jobs, clients that leave, late,
//! unknown and unauthorised results, SERVEs without a job id.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Barrier};
use std::thread;

use super::{answer, ask, assert_relay_fields_once, is_job_id, read_job, result, serve, Job};
use crate::support::{chunked, req, req_host, send_waiting, Conn, Relay, PARK};

#[test]
fn proxy_single_round_trip() {
    let relay = Relay::start();
    let mut server = relay.connect();
    send_waiting(&mut server, &serve("/proxy/srv"), "a SERVE with no client");

    let mut client = relay.connect();
    client.send(&req_host(
        "GET",
        "/proxy/srv/some/path?q=1",
        "relay.test:8123",
        &[("X-Client", "yes"), ("Content-Type", "text/x-client")],
        b"client body",
    ));

    let job = read_job(&mut server);
    assert_eq!(job.body, b"client body");
    assert_eq!(job.header("X-Client"), "yes");
    assert_eq!(job.header("Content-Type"), "text/x-client");
    assert_eq!(job.header("HttpRelay-Proxy-ServerId"), "srv");
    assert!(is_job_id(&job.id()), "job id {:?}", job.id());
    assert_eq!(
        job.header("HttpRelay-Proxy-Url"),
        "http://relay.test:8123/proxy/srv/some/path?q=1"
    );
    assert_eq!(job.header("HttpRelay-Proxy-Method"), "GET");
    assert_eq!(job.header("HttpRelay-Proxy-Scheme"), "http");
    assert_eq!(job.header("HttpRelay-Proxy-Host"), "relay.test");
    assert_eq!(job.header("HttpRelay-Proxy-Port"), "8123");
    assert_eq!(job.header("HttpRelay-Proxy-Path"), "/some/path");
    assert_eq!(job.header("HttpRelay-Proxy-Query"), "q=1");

    // The client is still waiting for the result.
    assert!(
        client.is_silent_for(PARK),
        "client answered before a result"
    );

    server.send(&result(
        "/proxy/srv",
        &job.id(),
        &[
            ("HttpRelay-Proxy-Status", "201"),
            ("Content-Type", "application/json"),
            ("HttpRelay-Proxy-Headers", "X-Custom"),
            ("X-Custom", "v"),
            ("X-Not-Listed", "no"),
        ],
        b"{\"created\":true}",
    ));
    let got = answer(&mut client);
    assert_eq!(got.status(), 201, "{:?}", got.head);
    assert_eq!(got.header("Content-Type"), Some("application/json"));
    assert_eq!(got.header("X-Custom"), Some("v"));
    assert_eq!(got.header("X-Not-Listed"), None, "only listed headers");
    assert_eq!(got.body(), b"{\"created\":true}");
    assert!(
        got.head
            .header_has_token("Access-Control-Expose-Headers", "*"),
        "proxy responses expose every header: {:?}",
        got.head
    );

    // The SERVE that carried the result now waits for the next job.
    assert!(
        server.is_silent_for(PARK),
        "the result SERVE must wait for the next job"
    );
    // Its response is the next job.
    client.send(&req_host(
        "POST",
        "/proxy/srv?z=9&a=%2F+x&wsecret=w",
        "relay.test:8123",
        &[],
        b"second",
    ));
    let job = read_job(&mut server);
    assert_eq!(job.body, b"second");
    assert_eq!(job.header("HttpRelay-Proxy-Method"), "POST");
    assert_eq!(job.header("HttpRelay-Proxy-Path"), "/");
    assert_eq!(
        job.header("HttpRelay-Proxy-Query"),
        "z=9&a=%2F+x&wsecret=w",
        "the query is passed on raw"
    );
    server.send(&result("/proxy/srv", &job.id(), &[], b"done"));
    let got = answer(&mut client);
    assert_eq!(got.status(), 200);
    assert_eq!(got.body(), b"done");
}

#[test]
fn proxy_four_serve_loops_share_fifty_jobs() {
    const LOOPS: usize = 4;
    const CLIENT_THREADS: usize = 10;
    const PER_THREAD: usize = 5;
    let relay = Relay::start();

    let mut handles = Vec::new();
    let loops: Vec<_> = (0..LOOPS)
        .map(|k| {
            let mut conn = relay.connect();
            handles.push(conn.handle());
            thread::spawn(move || {
                conn.send(&serve("/proxy/pool"));
                let mut handled = Vec::new();
                // Ends when the test shuts the socket down.
                while let Some(head) = conn.try_read_head() {
                    assert_eq!(head.status, 200, "loop {k}: {head:?}");
                    assert_relay_fields_once(&head);
                    let body = conn.read_body(&head, false);
                    let job = Job {
                        body: body.bytes().to_vec(),
                        head,
                    };
                    assert!(body.is_complete(), "loop {k}: truncated job");
                    let id = job.id();
                    let path = job.header("HttpRelay-Proxy-Path").to_string();
                    let client_body = String::from_utf8(job.body.clone()).expect("utf-8");
                    let answer = format!("loop {k}: {client_body} at {path}");
                    let k_text = k.to_string();
                    conn.send(&result(
                        "/proxy/pool",
                        &id,
                        &[
                            ("HttpRelay-Proxy-Status", "202"),
                            ("HttpRelay-Proxy-Headers", "X-Loop"),
                            ("X-Loop", &k_text),
                            ("Content-Type", "text/plain"),
                        ],
                        answer.as_bytes(),
                    ));
                    handled.push((id, client_body));
                }
                handled
            })
        })
        .collect();
    thread::sleep(PARK);

    let start = Arc::new(Barrier::new(CLIENT_THREADS));
    let clients: Vec<_> = (0..CLIENT_THREADS)
        .map(|t| {
            let addr = relay.addr().clone();
            let start = start.clone();
            thread::spawn(move || {
                let mut conn = Conn::open(&addr);
                start.wait();
                let mut seen = Vec::new();
                for i in 0..PER_THREAD {
                    let body = format!("client {t} request {i}");
                    let path = format!("/c{t}/r{i}");
                    let got = ask(
                        &mut conn,
                        &req("POST", &format!("/proxy/pool{path}"), &[], body.as_bytes()),
                    );
                    assert_eq!(got.status(), 202, "{body}: {:?}", got.head);
                    let k: usize = got
                        .header("X-Loop")
                        .unwrap_or_else(|| panic!("{body}: no X-Loop: {:?}", got.head))
                        .parse()
                        .expect("loop number");
                    assert_eq!(
                        got.text(),
                        format!("loop {k}: {body} at {path}"),
                        "{body}: answered by the wrong job"
                    );
                    seen.push((body, k));
                }
                seen
            })
        })
        .collect();

    let mut answered_by: HashMap<String, usize> = HashMap::new();
    for c in clients {
        for (body, k) in c.join().expect("client thread") {
            assert!(answered_by.insert(body, k).is_none());
        }
    }
    for h in &handles {
        h.shutdown();
    }
    let mut ids = HashSet::new();
    let mut handled_by: HashMap<String, usize> = HashMap::new();
    for (k, l) in loops.into_iter().enumerate() {
        let handled = l.join().expect("serve loop");
        eprintln!("serve loop {k} handled {} jobs", handled.len());
        for (id, body) in handled {
            assert!(is_job_id(&id), "job id {id:?}");
            assert!(ids.insert(id.clone()), "job id {id} handed out twice");
            assert!(
                handled_by.insert(body.clone(), k).is_none(),
                "{body} was handled by two loops"
            );
        }
    }
    assert_eq!(answered_by.len(), CLIENT_THREADS * PER_THREAD);
    assert_eq!(
        handled_by, answered_by,
        "each job is handled by exactly one loop, the one that answered it"
    );
}

#[test]
fn proxy_late_result_after_client_left_is_406() {
    let relay = Relay::start();
    let mut server = relay.connect();
    send_waiting(&mut server, &serve("/proxy/late"), "a SERVE with no client");
    let mut client = relay.connect();
    client.send(&req("GET", "/proxy/late/x", &[], b""));
    let job = read_job(&mut server);
    drop(client);
    thread::sleep(PARK);

    server.send(&result("/proxy/late", &job.id(), &[], b"too late"));
    let r = answer(&mut server);
    assert_eq!(r.status(), 406, "late result: {:?}", r.head);
}

#[test]
fn proxy_client_leaving_before_pickup_removes_its_job() {
    let relay = Relay::start();
    let mut gone = relay.connect();
    gone.send(&req("POST", "/proxy/gone/stale", &[], b"stale"));
    thread::sleep(PARK);
    drop(gone);
    thread::sleep(PARK);

    let mut server = relay.connect();
    // Any path after the server id is fine for SERVE.
    send_waiting(
        &mut server,
        &serve("/proxy/gone/serve/path"),
        "a SERVE whose only client left",
    );
    let mut client = relay.connect();
    client.send(&req("POST", "/proxy/gone/fresh", &[], b"fresh"));
    let job = read_job(&mut server);
    assert_eq!(job.body, b"fresh");
    assert_eq!(job.header("HttpRelay-Proxy-Path"), "/fresh");
    server.send(&result("/proxy/gone", &job.id(), &[], b"ok"));
    let got = answer(&mut client);
    assert_eq!(got.status(), 200);
    assert_eq!(got.body(), b"ok");

    // The same job id cannot be answered twice.
    let mut again = relay.connect();
    let r = ask(&mut again, &result("/proxy/gone", &job.id(), &[], b"again"));
    assert_eq!(r.status(), 406, "already answered job: {:?}", r.head);
}

#[test]
fn proxy_unknown_job_id_is_406() {
    let relay = Relay::start();
    let mut server = relay.connect();
    let r = ask(
        &mut server,
        &result(
            "/proxy/unk",
            "zzzzzzzz",
            &[("HttpRelay-Proxy-Status", "200")],
            b"result for nobody",
        ),
    );
    assert_eq!(r.status(), 406, "unknown job: {:?}", r.head);

    // A 406 hands out no job: a client request afterwards waits for a SERVE.
    let mut client = relay.connect();
    send_waiting(
        &mut client,
        &req("GET", "/proxy/unk/x", &[], b""),
        "a client with no SERVE waiting",
    );
}

#[test]
fn proxy_wrong_secret_is_401() {
    let relay = Relay::start();
    let mut server = relay.connect();
    send_waiting(
        &mut server,
        &serve("/proxy/sec?wsecret=key"),
        "a SERVE claiming the server id",
    );
    let refused = |request: Vec<u8>, what: &str| {
        let mut other = relay.connect();
        let r = ask(&mut other, &request);
        assert_eq!(r.status(), 401, "{what}: {:?}", r.head);
    };
    refused(serve("/proxy/sec"), "SERVE without the secret");
    refused(
        serve("/proxy/sec?wsecret=nope"),
        "SERVE with a wrong secret",
    );
    refused(
        req("SERVE", "/proxy/sec", &[("HttpRelay-WSecret", "nope")], b""),
        "SERVE with a wrong header secret",
    );

    // Clients need no secret; the claiming SERVE gets the job.
    let mut client = relay.connect();
    client.send(&req("GET", "/proxy/sec/page", &[], b""));
    let job = read_job(&mut server);
    assert_eq!(job.header("HttpRelay-Proxy-Path"), "/page");
    // A result with the wrong secret is refused and the client keeps waiting.
    refused(
        result(
            "/proxy/sec?wsecret=nope",
            &job.id(),
            &[],
            b"from an impostor",
        ),
        "result with a wrong secret",
    );
    assert!(
        client.is_silent_for(PARK),
        "refused result reached the client"
    );
    server.send(&result(
        "/proxy/sec",
        &job.id(),
        &[("HttpRelay-WSecret", "key")],
        b"genuine",
    ));
    let got = answer(&mut client);
    assert_eq!(got.status(), 200);
    assert_eq!(got.body(), b"genuine");
}

#[test]
fn proxy_empty_job_id_is_a_serve_without_one() {
    let relay = Relay::start();
    let mut server = relay.connect();
    send_waiting(
        &mut server,
        &req(
            "SERVE",
            "/proxy/empty",
            &[("HttpRelay-Proxy-JobId", "")],
            b"",
        ),
        "a SERVE with an empty job id",
    );
    let mut client = relay.connect();
    client.send(&req("POST", "/proxy/empty/p", &[], b"to the empty id"));
    let job = read_job(&mut server);
    assert_eq!(job.body, b"to the empty id");
    server.send(&result("/proxy/empty", &job.id(), &[], b"answered"));
    let got = answer(&mut client);
    assert_eq!(got.status(), 200);
    assert_eq!(got.body(), b"answered");

    // Blank counts as empty; a non-empty unknown id is still refused.
    let mut blank = relay.connect();
    send_waiting(
        &mut blank,
        &req(
            "SERVE",
            "/proxy/empty",
            &[("HttpRelay-Proxy-JobId", "  ")],
            b"",
        ),
        "a SERVE with a blank job id",
    );
    let mut other = relay.connect();
    let r = ask(&mut other, &result("/proxy/empty", "x", &[], b""));
    assert_eq!(r.status(), 406, "short unknown job id: {:?}", r.head);
}

#[test]
fn proxy_serve_without_job_id_drops_its_body() {
    let relay = Relay::start();
    let mut server = relay.connect();
    let mut client = relay.connect();
    let mut chunked_serve = req(
        "SERVE",
        "/proxy/drop",
        &[("Transfer-Encoding", "chunked")],
        b"",
    );
    chunked_serve.extend_from_slice(&chunked(&[b"ignored ", b"in chunks"], true));
    let rounds: [(&str, Vec<u8>); 3] = [
        (
            "Content-Length",
            req("SERVE", "/proxy/drop", &[], b"ignored body"),
        ),
        ("chunked", chunked_serve),
        (
            "an empty job id",
            req(
                "SERVE",
                "/proxy/drop",
                &[("HttpRelay-Proxy-JobId", "")],
                b"ignored too",
            ),
        ),
    ];
    // One SERVE connection throughout: after each dropped body it still
    // waits for, and takes, the next job.
    for (what, request) in rounds {
        send_waiting(&mut server, &request, what);
        client.send(&req("POST", "/proxy/drop/q", &[], what.as_bytes()));
        let job = read_job(&mut server);
        assert_eq!(job.body, what.as_bytes(), "{what}");
        // Answered from another connection, which then leaves, so that the
        // SERVE connection is free for the next round.
        let mut other = relay.connect();
        other.send(&result("/proxy/drop", &job.id(), &[], b"answer"));
        let got = answer(&mut client);
        assert_eq!(got.status(), 200, "{what}: {:?}", got.head);
        assert_eq!(got.body(), b"answer", "{what}");
        drop(other);
    }

    // With `Expect: 100-continue` the body is asked for, then dropped; the
    // result comes from the same connection this time.
    server.send(
        b"SERVE /proxy/drop HTTP/1.1\r\nHost: relay.test\r\nExpect: 100-continue\r\n\
Content-Length: 5\r\n\r\n",
    );
    let interim = server.read_head();
    assert_eq!(interim.status, 100, "{interim:?}");
    send_waiting(&mut server, b"hello", "a SERVE after its expected body");
    client.send(&req("GET", "/proxy/drop/expect", &[], b""));
    let job = read_job(&mut server);
    assert_eq!(job.header("HttpRelay-Proxy-Path"), "/expect");
    server.send(&result("/proxy/drop", &job.id(), &[], b"from the same"));
    assert_eq!(answer(&mut client).body(), b"from the same");
}

#[test]
fn proxy_serve_without_job_id_streams_a_large_body_away() {
    const BODY: usize = 64 << 20;
    let relay = Relay::start();
    let mut server = relay.connect();
    let rss_before = relay.rss_kib();
    server.send(
        format!("SERVE /proxy/big HTTP/1.1\r\nHost: relay.test\r\nContent-Length: {BODY}\r\n\r\n")
            .as_bytes(),
    );
    let piece = vec![b'x'; 1 << 20];
    for _ in 0..BODY / piece.len() {
        server.send(&piece);
    }
    assert!(
        server.is_silent_for(PARK),
        "a SERVE whose body was dropped waits"
    );
    let grown = relay.rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 16 << 10,
        "dropping a {BODY}-byte body grew the relay by {grown} KiB"
    );
    let mut client = relay.connect();
    client.send(&req("GET", "/proxy/big/after", &[], b""));
    let job = read_job(&mut server);
    server.send(&result("/proxy/big", &job.id(), &[], b"done"));
    assert_eq!(answer(&mut client).body(), b"done");
}

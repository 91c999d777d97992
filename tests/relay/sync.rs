//! sync: two peers swap their request bodies (PROTOCOL.md, sync).

use std::thread;
use std::time::Duration;

use super::support::{chunked, req, send_waiting, Conn, Relay, Response};
use super::{get, park, post, VERSION};

fn port(conn: &Conn) -> String {
    conn.local_port().to_string()
}

/// Asserts `got` is a completed pairing carrying the counterpart's body and metadata.
fn assert_swapped(
    got: &Response,
    body: &[u8],
    content_type: Option<&str>,
    method: &str,
    query: Option<&str>,
    counterpart_port: &str,
    what: &str,
) {
    assert_eq!(got.status(), 200, "{what}: {:?}", got.head);
    assert_eq!(
        String::from_utf8_lossy(got.body()),
        String::from_utf8_lossy(body),
        "{what}: body"
    );
    assert_eq!(
        got.head.content_length().unwrap_or(body.len() as u64),
        body.len() as u64,
        "{what}: Content-Length"
    );
    assert_eq!(
        got.header("Content-Type"),
        content_type,
        "{what}: Content-Type"
    );
    assert_eq!(
        got.header("HttpRelay-Method"),
        Some(method),
        "{what}: method"
    );
    assert_eq!(got.header("HttpRelay-Query"), query, "{what}: query");
    assert_eq!(got.header("X-Real-IP"), Some("127.0.0.1"), "{what}: IP");
    assert_eq!(
        got.header("X-Real-Port"),
        Some(counterpart_port),
        "{what}: port"
    );
    assert_eq!(got.header("HttpRelay-Version"), Some(VERSION), "{what}");
}

#[test]
fn sync_pair_swaps_bodies_metadata_and_content_type() {
    let relay = Relay::start();

    // Both sides with bodies.
    let mut first = relay.connect();
    send_waiting(
        &mut first,
        &req(
            "POST",
            "/sync/s?x=1&wsecret=ignored",
            &[("Content-Type", "text/x-first")],
            b"from the first",
        ),
        "the first sync peer",
    );
    let mut second = relay.connect();
    second.send(&req(
        "PUT",
        "/sync/s?y=2",
        &[("Content-Type", "application/x-second")],
        b"from the second peer",
    ));
    let to_second = second.read_response();
    let to_first = first.read_response();
    assert_swapped(
        &to_first,
        b"from the second peer",
        Some("application/x-second"),
        "PUT",
        Some("y=2"),
        &port(&second),
        "first peer",
    );
    assert_swapped(
        &to_second,
        b"from the first",
        Some("text/x-first"),
        "POST",
        Some("x=1"),
        &port(&first),
        "second peer",
    );
    // Each side's Your-Time is the other's Time.
    assert_eq!(
        to_first.header("HttpRelay-Your-Time"),
        to_second.header("HttpRelay-Time")
    );
    assert_eq!(
        to_first.header("HttpRelay-Time"),
        to_second.header("HttpRelay-Your-Time")
    );

    // A body-less GET first, then a POST with a body; and the reverse.
    for get_first in [true, false] {
        let path = format!("/sync/g-{get_first}");
        let mut getter = relay.connect();
        let mut poster = relay.connect();
        let get_req = get(&format!("{path}?who=getter"));
        let post_req = req("POST", &path, &[("Content-Type", "text/plain")], b"posted");
        if get_first {
            send_waiting(&mut getter, &get_req, "a waiting sync GET");
            poster.send(&post_req);
        } else {
            send_waiting(&mut poster, &post_req, "a waiting sync POST");
            getter.send(&get_req);
        }
        let to_getter = getter.read_response();
        let to_poster = poster.read_response();
        let what = if get_first { "GET first" } else { "POST first" };
        assert_swapped(
            &to_getter,
            b"posted",
            Some("text/plain"),
            "POST",
            None,
            &port(&poster),
            &format!("{what}: getter"),
        );
        assert_swapped(
            &to_poster,
            b"",
            None,
            "GET",
            Some("who=getter"),
            &port(&getter),
            &format!("{what}: poster"),
        );
    }
}

#[test]
fn sync_third_request_starts_a_new_pair() {
    let relay = Relay::start();
    let mut peers: Vec<Conn> = (0..4).map(|_| relay.connect()).collect();
    let bodies = [&b"one"[..], b"two", b"three", b"four"];

    send_waiting(&mut peers[0], &post("/sync/three", bodies[0]), "peer 1");
    peers[1].send(&post("/sync/three", bodies[1]));
    assert_eq!(peers[1].read_response().body(), bodies[0]);
    assert_eq!(peers[0].read_response().body(), bodies[1]);

    // The third request finds nobody waiting.
    send_waiting(&mut peers[2], &post("/sync/three", bodies[2]), "peer 3");
    peers[3].send(&post("/sync/three", bodies[3]));
    assert_eq!(peers[3].read_response().body(), bodies[2]);
    assert_eq!(peers[2].read_response().body(), bodies[3]);
}

/// `len` bytes of a pattern that depends on `seed`.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

#[test]
fn sync_two_5_mib_bodies_written_whole_before_reading() {
    const LEN: usize = 5 * 1024 * 1024;
    let relay = Relay::start();
    let peer = |seed: u8| {
        let addr = relay.addr().clone();
        thread::spawn(move || {
            let body = pattern(LEN, seed);
            let mut conn = Conn::open(&addr);
            conn.set_write_timeout(Duration::from_secs(30));
            conn.set_read_timeout(Duration::from_secs(30));
            // The whole request goes out before anything is read.
            conn.send(&req(
                "POST",
                "/sync/big",
                &[("Content-Type", "application/octet-stream")],
                &body,
            ));
            conn.read_response()
        })
    };
    let a = peer(1);
    let b = peer(2);
    let to_a = a.join().expect("peer a");
    let to_b = b.join().expect("peer b");
    for (got, seed, name) in [(&to_a, 2, "a"), (&to_b, 1, "b")] {
        assert_eq!(got.status(), 200, "peer {name}: {:?}", got.head);
        let body = got.body();
        assert_eq!(body.len(), LEN, "peer {name}: body length");
        assert!(
            body == pattern(LEN, seed).as_slice(),
            "peer {name} did not get the other's body intact"
        );
    }
}

#[test]
fn sync_413_over_the_limit() {
    let relay = Relay::start_flags(&["--sync-max-body", "1000"]);

    let mut big = relay.connect();
    let r = big.exchange(&post("/sync/lim", &[b'x'; 1001]));
    assert_eq!(r.status(), 413, "1001 bytes: {:?}", r.head);

    // Chunked, crossing the maximum.
    let mut big = relay.connect();
    big.send(&req(
        "POST",
        "/sync/lim",
        &[("Transfer-Encoding", "chunked")],
        &chunked(&[&[b'a'; 600]], false),
    ));
    park();
    let _ = big.try_send(&chunked(&[&[b'b'; 600]], true));
    match big.try_read_head() {
        Some(head) => assert_eq!(head.status, 413, "chunked 1200 bytes: {head:?}"),
        None => panic!("chunked 1200 bytes: connection closed without a 413"),
    }

    // Neither refused request became a waiting peer; exactly the maximum pairs.
    let exact = vec![b'e'; 1000];
    let mut first = relay.connect();
    send_waiting(&mut first, &post("/sync/lim", &exact), "a sync peer");
    let mut second = relay.connect();
    let got = second.exchange(&post("/sync/lim", b"small"));
    assert_eq!(got.status(), 200);
    assert_eq!(got.body(), exact.as_slice());
    assert_eq!(first.read_response().body(), b"small");
}

#[test]
fn sync_waiting_peer_that_disconnects_is_not_paired() {
    let relay = Relay::start();
    let mut gone = relay.connect();
    gone.send(&post("/sync/leave", b"stale"));
    park();
    drop(gone);
    park();

    let mut peer = relay.connect();
    send_waiting(
        &mut peer,
        &post("/sync/leave", b"fresh 1"),
        "the peer after a disconnected one",
    );
    let mut other = relay.connect();
    let got = other.exchange(&post("/sync/leave", b"fresh 2"));
    assert_eq!(got.body(), b"fresh 1");
    assert_eq!(peer.read_response().body(), b"fresh 2");
}

#[test]
fn sync_head_too_large_for_the_peer_is_500_for_both() {
    // `*` is re-encoded as `%2A` in HttpRelay-Query: a 24,000-byte query becomes
    // 72,000 bytes in the peer's response head, more than one output buffer.
    let relay = Relay::start_flags(&["--max-head", "24576"]);
    let query = "*".repeat(24_000);
    let mut a = relay.connect();
    send_waiting(
        &mut a,
        &req("POST", &format!("/sync/huge?q={query}"), &[], b"from a"),
        "a",
    );
    let mut b = relay.connect();
    b.send(&req("POST", "/sync/huge", &[], b"from b"));
    for (conn, who) in [(&mut a, "a"), (&mut b, "b")] {
        let r = conn.read_response();
        assert_eq!(r.status(), 500, "{who}: {:?}", r.head);
        assert!(r.text().starts_with("500 "), "{who}: one-line body");
        assert!(
            conn.is_closed_by_peer(),
            "{who}: nothing may follow the refusal"
        );
    }
    // The pair is gone, the held bodies given back: a new pair works.
    let mut c = relay.connect();
    send_waiting(&mut c, &post("/sync/huge", b"c"), "c");
    let mut d = relay.connect();
    assert_eq!(d.exchange(&post("/sync/huge", b"d")).body(), b"c");
    assert_eq!(c.read_response().body(), b"d");
}

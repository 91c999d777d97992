//! Piping Server paths behind HAProxy: the key is the whole path without the
//! query, so every party of a path meets on one relay (a sender's `?n=1` or
//! `?n=2` must not move it), and paths that share their last segment still
//! spread (a last-segment key would put every `/p/.../file` on one relay).

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use super::super::get;
use super::super::support::{body_for, chunked, req, Addr, Conn, Head, Relay};
use super::{connect, spread, transfers_per_relay, wait_until, RELAYS};

/// What the transfers on many paths came to.
pub(super) struct PipingRun {
    pub took: Duration,
    /// Piping transfers counted by each relay.
    pub counts: Vec<u64>,
    pub transfers: Vec<Piping>,
    /// Each path's relay (index) and the requests it logged there.
    pub served: HashMap<String, (usize, usize)>,
}

/// Piping paths used.
pub(super) const PIPING_PATHS: usize = 60;
/// The sender's last line after a complete transfer.
const ALL_RECEIVED: &str = "[INFO] All receiver(s) was/were received successfully.";

/// Transfers on [`PIPING_PATHS`] paths under `/p/{run}/` through `front`;
/// checks that each path met on one relay and that the paths spread. Returns
/// what they came to.
pub(super) fn transfers_on_many_paths(
    front: &Addr,
    relays: &[Relay],
    run: &str,
    seed: u64,
) -> PipingRun {
    // 8. Piping Server paths: the key is the whole path without the query, so every
    //    party of a path meets on one relay (a sender's `?n=1` or `?n=2` must not
    //    move it), and paths that share their last segment still spread (a last-
    //    segment key would put every `/p/.../file` on one relay).
    let prefix = format!("/p/{run}/");
    let transfers: Vec<Piping> = (0..PIPING_PATHS).map(|k| Piping::nth(run, k)).collect();
    let piping_started = Instant::now();
    spread(PIPING_PATHS, |k| {
        let p = &transfers[k];
        let len = match k % 7 {
            0 => 0,
            1 => 200_000 + k * 13,
            _ => (k * 997) % 20_000 + 1,
        };
        let body = body_for(seed ^ 0x7069 ^ k as u64, len);
        piping(
            front,
            p,
            &body,
            &format!("piping {k} on {} (seed {seed})", p.path),
        );
    });
    let after_piping = piping_started.elapsed();
    let piping_counts = transfers_per_relay(relays, "piping", PIPING_PATHS);
    // Every party of a path in one relay's access log: the sender and its receivers.
    let mut served = HashMap::new();
    wait_until(Duration::from_secs(3), "every piping party logged", || {
        served = paths_served(relays, &prefix);
        let requests: usize = served.values().map(|&(_, n)| n).sum();
        served.len() == PIPING_PATHS
            && requests == transfers.iter().map(|p| 1 + p.receivers).sum::<usize>()
    });
    for p in &transfers {
        let (at, requests) = served[&p.path];
        assert_eq!(
            requests,
            1 + p.receivers,
            "path {} on relay{}: {requests} requests logged",
            p.path,
            at + 1
        );
    }
    let mut paths_per_relay = vec![0u64; RELAYS];
    for &(at, _) in served.values() {
        paths_per_relay[at] += 1;
    }
    assert_eq!(
        paths_per_relay, piping_counts,
        "paths per relay in the access logs against each relay's piping transfers"
    );
    assert!(
        paths_per_relay.iter().all(|&n| n > 0),
        "the piping paths did not spread over every relay: {paths_per_relay:?} (seed {seed})"
    );
    PipingRun {
        took: after_piping,
        counts: piping_counts,
        transfers,
        served,
    }
}

/// How one Piping Server transfer is made.
pub(super) struct Piping {
    /// The meeting point (the whole path, without the query).
    pub path: String,
    /// The sender's query and the receivers' (`?n=2`, or nothing).
    pub sender_query: &'static str,
    pub receiver_query: &'static str,
    pub receivers: usize,
    /// `POST` or `PUT`.
    pub method: &'static str,
    /// The sender's head goes first, its response head is awaited, then the
    /// receivers come and only then the body; otherwise the receivers come first.
    pub sender_first: bool,
    /// The sender asks `Expect: 100-continue` (it then always goes first).
    pub expect: bool,
    /// A chunked upload instead of `Content-Length`.
    pub chunked: bool,
}

impl Piping {
    /// The transfer for path number `k` of a run (`run` makes the paths new).
    fn nth(run: &str, k: usize) -> Piping {
        let receivers = if k % 10 == 3 { 2 } else { 1 };
        let (sender_query, receiver_query) = match (receivers, k % 4) {
            (2, _) => ("?n=2", "?n=2"),
            (_, 1) => ("?n=1", ""),
            (_, 2) => ("", "?n=1"),
            _ => ("", ""),
        };
        let expect = k % 5 == 4;
        Piping {
            path: if k % 8 == 7 {
                format!("/p/{run}/{k}/my%20file")
            } else {
                format!("/p/{run}/{k}/file")
            },
            sender_query,
            receiver_query,
            receivers,
            method: if k % 2 == 0 { "POST" } else { "PUT" },
            sender_first: expect || k % 3 == 0,
            expect,
            chunked: k % 6 == 5,
        }
    }
}

/// A response head after any interim (`1xx`) ones.
fn final_head(conn: &mut Conn) -> Head {
    loop {
        let head = conn.read_head();
        if head.status >= 200 {
            return head;
        }
    }
}

/// One Piping Server transfer through HAProxy: the receivers (each on its own
/// connection and thread) must get `body` whole, and the sender a `200` whose
/// progress lines end with [`ALL_RECEIVED`].
pub(super) fn piping(front: &Addr, p: &Piping, body: &[u8], what: &str) {
    let mut headers = Vec::new();
    if p.expect {
        headers.push(("Expect", "100-continue"));
    }
    let length = body.len().to_string();
    let payload = if p.chunked {
        headers.push(("Transfer-Encoding", "chunked"));
        chunked(&body.chunks(7000).collect::<Vec<_>>(), true)
    } else {
        headers.push(("Content-Length", length.as_str()));
        body.to_vec()
    };
    let sender_target = format!("{}{}", p.path, p.sender_query);
    let receiver_target = format!("{}{}", p.path, p.receiver_query);
    thread::scope(|scope| {
        let start_receivers = || {
            (0..p.receivers)
                .map(|_| {
                    let target = receiver_target.as_str();
                    scope.spawn(move || connect(front).exchange(&get(target)))
                })
                .collect::<Vec<_>>()
        };
        let mut sender = connect(front);
        let (head, receivers) = if p.sender_first {
            sender.send(&req(p.method, &sender_target, &headers, b""));
            let head = final_head(&mut sender);
            let receivers = start_receivers();
            sender.send(&payload);
            (head, receivers)
        } else {
            let receivers = start_receivers();
            sender.send(&req(p.method, &sender_target, &headers, &payload));
            (final_head(&mut sender), receivers)
        };
        assert_eq!(head.status, 200, "{what}: sender {head:?}");
        let said = sender.read_body(&head, false);
        let text = String::from_utf8_lossy(said.bytes());
        assert!(
            said.is_complete() && text.lines().last() == Some(ALL_RECEIVED),
            "{what}: the sender's progress lines end otherwise (complete: {}):\n{text}",
            said.is_complete()
        );
        for (r, receiver) in receivers.into_iter().enumerate() {
            let got = receiver.join().expect("receiver thread");
            assert_eq!(got.status(), 200, "{what}: receiver {r} {:?}", got.head);
            assert!(
                got.body.is_complete() && got.body() == body,
                "{what}: receiver {r} got {} bytes of {} (complete: {}), or they differ",
                got.body().len(),
                body.len(),
                got.body.is_complete()
            );
        }
    });
}

/// Which relay served each path starting with `prefix` and how many requests it
/// logged there, from the relays' access logs (`... PUT /p/... ...`). Panics if a
/// path shows up on two relays (its parties did not meet).
fn paths_served(relays: &[Relay], prefix: &str) -> HashMap<String, (usize, usize)> {
    let mut served: HashMap<String, (usize, usize)> = HashMap::new();
    for (i, relay) in relays.iter().enumerate() {
        for line in relay.output().lines() {
            let Some(path) = line.split_whitespace().find(|t| t.starts_with(prefix)) else {
                continue;
            };
            let (at, requests) = served.entry(path.to_string()).or_insert((i, 0));
            assert_eq!(
                *at,
                i,
                "path {path} was served by relay{} and relay{}",
                *at + 1,
                i + 1
            );
            *requests += 1;
        }
    }
    served
}

//! Inbox paths behind HAProxy: `/inbox/{id}`, `/inbox/{id}/ack` and
//! `/inbox/{id}/await` are keyed by the segment after `/inbox/`, percent-decoded
//! (a `%2F` in it belongs to the id), so every request of one inbox reaches the
//! same relay. Checked by routing alone: each request is answered at once
//! (`DELETE` on any of the three paths), and the relays' access logs say
//! which relay got it.

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use super::super::support::{req, Addr, Relay};
use super::{connect, spread};

/// The requests sent for one id: an id that is also a link channel must land
/// on the link channel's relay (the key is the id itself), the other spellings
/// of it with it.
fn targets(id: &str) -> Vec<String> {
    let first = id.as_bytes()[0];
    vec![
        format!("/inbox/{id}"),
        format!("/inbox/{id}/ack"),
        format!("/inbox/{id}/await"),
        format!("/inbox/%{first:02X}{}/ack", &id[1..]),
        // The access log leaves the query out: this one is logged as the first,
        // and `logged` fails if it reached another relay.
        format!("/inbox/{id}/await?after=1"),
    ]
}

/// Ids with a slash in them (`%2F`, `%2f`): their requests meet, though not
/// on the relay of any link channel.
fn slash_targets(id: &str) -> Vec<String> {
    vec![
        format!("/inbox/in%2F{id}"),
        format!("/inbox/in%2f{id}/ack"),
        format!("/inbox/in%2F{id}/await"),
    ]
}

/// Sends `DELETE` to every inbox spelling of `ids` through `front` and checks
/// from the access logs that all requests for one id reached one relay, the
/// relay `shard` says owns the link channel of that id.
pub(super) fn routing(
    front: &Addr,
    relays: &[Relay],
    ids: &[&String],
    shard: &HashMap<String, usize>,
) {
    let sent: Vec<(usize, bool, String)> = ids
        .iter()
        .enumerate()
        .flat_map(|(k, id)| {
            let same = targets(id).into_iter().map(move |t| (k, true, t));
            let slash = slash_targets(id).into_iter().map(move |t| (k, false, t));
            same.chain(slash)
        })
        .collect();
    spread(sent.len(), |i| {
        let target = &sent[i].2;
        let mut conn = connect(front);
        let r = conn.exchange(&req("DELETE", target, &[], b""));
        assert!(
            !matches!(r.status(), 502..=504),
            "DELETE {target} through HAProxy: {:?} {:?}",
            r.head,
            r.text()
        );
    });
    let deadline = Instant::now() + Duration::from_secs(3);
    let at = loop {
        let at = logged(relays, "/inbox/");
        let missing: Vec<&String> = sent
            .iter()
            .map(|(_, _, t)| t)
            .filter(|t| !at.contains_key(without_query(t)))
            .collect();
        if missing.is_empty() {
            break at;
        }
        assert!(
            Instant::now() < deadline,
            "inbox requests not in any access log: {missing:?}"
        );
        thread::sleep(Duration::from_millis(50));
    };
    let mut slash_shard: HashMap<usize, usize> = HashMap::new();
    for (k, same, target) in &sent {
        let relay = at[without_query(target)];
        if *same {
            assert_eq!(
                relay,
                shard[ids[*k].as_str()],
                "{target} reached relay{}, /link/{} is on relay{}",
                relay + 1,
                ids[*k],
                shard[ids[*k].as_str()] + 1
            );
        } else {
            let first = *slash_shard.entry(*k).or_insert(relay);
            assert_eq!(
                relay,
                first,
                "{target} reached relay{}, another request of its inbox relay{}",
                relay + 1,
                first + 1
            );
        }
    }
    let mut spread_over = slash_shard.values().copied().collect::<Vec<_>>();
    spread_over.sort_unstable();
    spread_over.dedup();
    assert!(
        spread_over.len() > 1,
        "inbox ids with a slash all went to one relay"
    );
}

/// The request targets under `prefix` in each relay's access log
/// (`... METHOD TARGET STATUS ...`), with the relay that logged them.
fn logged(relays: &[Relay], prefix: &str) -> HashMap<String, usize> {
    let mut at = HashMap::new();
    for (i, relay) in relays.iter().enumerate() {
        for line in relay.output().lines() {
            if let Some(target) = line.split_whitespace().find(|t| t.starts_with(prefix)) {
                if let Some(other) = at.insert(target.to_string(), i) {
                    assert_eq!(
                        other,
                        i,
                        "{target} logged by relay{} and relay{}",
                        other + 1,
                        i + 1
                    );
                }
            }
        }
    }
    at
}

/// A message through HAProxy: `POST`, then `GET`, `/ack`, `DELETE` and
/// `/await` on other spellings of the id, each answered by the inbox's relay.
pub(super) fn exchange(front: &Addr, id: &str) {
    let first = id.as_bytes()[0];
    let encoded = format!("%{first:02X}{}", &id[1..]);
    let mut c = connect(front);
    let r = c.exchange(&req(
        "POST",
        &format!("/inbox/{id}"),
        &[("Content-Type", "text/plain")],
        b"for the inbox",
    ));
    assert_eq!(r.status(), 200, "POST /inbox/{id}: {:?}", r.head);
    let r = c.exchange(&req("GET", &format!("/inbox/{encoded}"), &[], b""));
    assert_eq!((r.status(), r.text()), (200, "for the inbox".to_string()));
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    let r = c.exchange(&req("GET", &format!("/inbox/{id}/ack"), &[], b""));
    assert_eq!((r.status(), r.text()), (200, "false".to_string()));
    let r = c.exchange(&req("DELETE", &format!("/inbox/{encoded}?x=1"), &[], b""));
    assert_eq!(r.status(), 200, "DELETE: {:?}", r.head);
    let r = c.exchange(&req("GET", &format!("/inbox/{encoded}/await"), &[], b""));
    assert_eq!(r.status(), 200, "await after DELETE: {:?}", r.head);
    let r = c.exchange(&req("GET", &format!("/inbox/{id}/ack"), &[], b""));
    assert_eq!((r.status(), r.text()), (200, "true".to_string()));
}

fn without_query(target: &str) -> &str {
    target.split('?').next().unwrap_or(target)
}

//! `--data-dir`: what the relay acknowledged survives SIGKILL. A writer posts
//! inbox messages, acknowledges some and claims mcast channels as fast as it
//! can while the relay is killed at random moments; after each restart every
//! message that got `200` reads back byte for byte with its type, every
//! acknowledgement holds, every claim refuses a wrong secret. Then a torn
//! tail, a flipped byte, and an entry whose TTL ran out while the relay was
//! down.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::support::{req, unix_ms, Relay};
use super::{get, post};

const ANSWER: Duration = Duration::from_secs(10);

fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "httprelay-journal-{name}-{}-{}",
        std::process::id(),
        unix_ms()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn start(dir: &Path, extra: &[&str]) -> Relay {
    let dir = dir.to_str().expect("utf-8 path");
    let mut flags = vec!["--data-dir", dir];
    flags.extend_from_slice(extra);
    Relay::start_flags(&flags)
}

/// What the writer got `200` for.
#[derive(Default)]
struct Acknowledged {
    /// Inbox id → (content type, body).
    messages: BTreeMap<String, (String, Vec<u8>)>,
    acked: Vec<String>,
    /// Acknowledgements sent whose answer did not come (the relay died): the
    /// message may be acknowledged or not.
    ack_tried: Vec<String>,
    claims: Vec<String>,
}

/// A pseudo-random byte string for message `n`.
fn body(n: u64) -> Vec<u8> {
    let mut state = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let len = (state % 3000) as usize;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Writes until `stop`, or until the relay dies; records what got `200`.
fn writer(
    relay_addr: httprelay_testkit::Addr,
    round: u64,
    stop: Arc<AtomicBool>,
    got: Arc<Mutex<Acknowledged>>,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut c) = httprelay_testkit::Conn::try_open(&relay_addr, 1 << 16, ANSWER) else {
            return;
        };
        n += 1;
        let id = format!("r{round}m{n}");
        let kind = format!("application/x-test-{}", n % 7);
        let bytes = body(round * 1_000_000 + n);
        let request = req(
            "POST",
            &format!("/inbox/{id}"),
            &[("Content-Type", &kind)],
            &bytes,
        );
        if c.try_send(&request).is_err() {
            return;
        }
        let Some(head) = c.try_read_head() else {
            return;
        };
        if head.status != 200 {
            return;
        }
        got.lock()
            .unwrap()
            .messages
            .insert(id.clone(), (kind, bytes));
        if n % 3 == 0 {
            let Ok(mut c) = httprelay_testkit::Conn::try_open(&relay_addr, 1 << 16, ANSWER) else {
                return;
            };
            got.lock().unwrap().ack_tried.push(id.clone());
            if c.try_send(&req("DELETE", &format!("/inbox/{id}"), &[], b""))
                .is_err()
            {
                return;
            }
            match c.try_read_head() {
                Some(h) if h.status == 200 => got.lock().unwrap().acked.push(id.clone()),
                _ => return,
            }
        }
        if n % 5 == 0 {
            let channel = format!("r{round}c{n}");
            let Ok(mut c) = httprelay_testkit::Conn::try_open(&relay_addr, 1 << 16, ANSWER) else {
                return;
            };
            let target = format!("/mcast/{channel}?wsecret=s{channel}");
            if c.try_send(&post(&target, b"claim")).is_err() {
                return;
            }
            match c.try_read_head() {
                Some(h) if h.status == 200 => got.lock().unwrap().claims.push(channel),
                _ => return,
            }
        }
    }
}

/// Checks what `got` says against the relay: messages (those of `only` when
/// given), acknowledgements, claims. Returns how many were checked.
fn verify(relay: &Relay, got: &Acknowledged, only: Option<&str>) -> usize {
    let mut checked = 0;
    let wanted = |id: &str| only.is_none_or(|p| id.starts_with(p));
    for (id, (kind, bytes)) in got.messages.iter().filter(|(id, _)| wanted(id)) {
        if got.acked.contains(id) {
            continue;
        }
        if got.ack_tried.contains(id) {
            let mut c = relay.connect();
            let r = c.exchange(&get(&format!("/inbox/{id}/ack")));
            if r.text() == "true" {
                continue;
            }
        }
        let mut c = relay.connect();
        c.set_read_timeout(Duration::from_secs(2));
        c.send(&get(&format!("/inbox/{id}")));
        if c.is_silent_for(Duration::from_millis(500)) {
            let mut a = relay.connect();
            let ack = a.exchange(&get(&format!("/inbox/{id}/ack")));
            panic!(
                "message {id} ({} bytes, ack tried {}) is not there after the restart: /ack says {} {:?}\n{}",
                bytes.len(),
                got.ack_tried.contains(id),
                ack.status(),
                ack.text(),
                relay.output()
            );
        }
        let Some(head) = c.try_read_head() else {
            panic!("message {id}: the relay closed");
        };
        let body = c.read_body(&head, false);
        let r = httprelay_testkit::Response { head, body };
        assert_eq!(r.status(), 200, "message {id} after the restart");
        assert_eq!(r.header("Content-Type"), Some(kind.as_str()), "{id}'s type");
        assert!(r.body() == bytes.as_slice(), "{id}'s bytes");
        checked += 1;
    }
    for id in got.acked.iter().filter(|id| wanted(id)) {
        let mut c = relay.connect();
        let r = c.exchange(&get(&format!("/inbox/{id}/ack")));
        assert_eq!(
            (r.status(), r.text()),
            (200, "true".into()),
            "{id} stays acknowledged"
        );
        checked += 1;
    }
    for channel in got.claims.iter().filter(|c| wanted(c)) {
        let mut c = relay.connect();
        let r = c.exchange(&post(&format!("/mcast/{channel}?wsecret=wrong"), b"x"));
        assert_eq!(r.status(), 401, "claim {channel} after the restart");
        checked += 1;
    }
    checked
}

#[test]
fn what_got_200_survives_sigkill_at_random_moments() {
    let dir = data_dir("crash");
    let got = Arc::new(Mutex::new(Acknowledged::default()));
    let mut relay = start(&dir, &[]);
    let mut state = unix_ms() | 1;
    let rounds = 100;
    let started = Instant::now();
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (addr, stop, got) = (relay.addr().clone(), stop.clone(), got.clone());
            thread::spawn(move || writer(addr, round, stop, got))
        };
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        thread::sleep(Duration::from_millis(5 + state % 40));
        relay.kill();
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("the writer");
        relay = start(&dir, &[]);
        let got = got.lock().unwrap();
        verify(&relay, &got, Some(&format!("r{round}")));
    }
    let got = got.lock().unwrap();
    let checked = verify(&relay, &got, None);
    eprintln!(
        "journal: {rounds} SIGKILLs in {:.1} s: {} messages ({} acknowledged), {} claims got 200; {checked} checked after the last restart, none lost",
        started.elapsed().as_secs_f64(),
        got.messages.len(),
        got.acked.len(),
        got.claims.len()
    );
    assert!(got.messages.len() > rounds as usize, "the writer wrote");
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_torn_tail_and_a_flipped_byte_lose_only_their_records() {
    let dir = data_dir("damage");
    let mut relay = start(&dir, &[]);
    for (id, text) in [("a", "first"), ("b", "second message"), ("c", "third")] {
        let mut c = relay.connect();
        assert_eq!(
            c.exchange(&post(&format!("/inbox/{id}"), text.as_bytes()))
                .status(),
            200
        );
    }
    relay.kill();
    let journal = dir.join("journal");
    let whole = std::fs::read(&journal).unwrap();
    // A torn write: half a record's header at the end.
    let mut torn = whole.clone();
    torn.extend_from_slice(&[7, 0, 0, 0, 1, 2]);
    std::fs::write(&journal, &torn).unwrap();
    let relay = start(&dir, &[]);
    thread::sleep(Duration::from_millis(100));
    assert!(
        relay
            .output()
            .contains("6 bytes of torn or corrupt tail cut"),
        "{}",
        relay.output()
    );
    for (id, text) in [("a", "first"), ("b", "second message"), ("c", "third")] {
        let mut c = relay.connect();
        assert_eq!(c.exchange(&get(&format!("/inbox/{id}"))).text(), text);
    }
    drop(relay);
    // Started from what was good: the torn bytes are gone (the journal was
    // rewritten with its live records).
    let rewritten = std::fs::read(&journal).unwrap();
    assert!(rewritten.len() <= whole.len(), "the tail was cut");
    // A flipped byte inside the second message: only it is lost.
    let at = whole
        .windows(b"second message".len())
        .position(|w| w == b"second message")
        .unwrap();
    let mut flipped = whole.clone();
    flipped[at + 3] ^= 0x20;
    std::fs::write(&journal, &flipped).unwrap();
    let relay = start(&dir, &[]);
    thread::sleep(Duration::from_millis(100));
    assert!(
        relay.output().contains("1 corrupt stretches skipped"),
        "{}",
        relay.output()
    );
    for (id, text) in [("a", "first"), ("c", "third")] {
        let mut c = relay.connect();
        assert_eq!(c.exchange(&get(&format!("/inbox/{id}"))).text(), text);
    }
    let mut c = relay.connect();
    assert_eq!(
        c.exchange(&get("/inbox/b/ack")).status(),
        404,
        "the damaged one is gone"
    );
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_entry_whose_ttl_ran_out_while_the_relay_was_down_is_gone() {
    let dir = data_dir("ttl");
    let mut relay = start(&dir, &["--inbox-ttl", "1"]);
    let mut c = relay.connect();
    assert_eq!(
        c.exchange(&post("/inbox/short", b"soon gone")).status(),
        200
    );
    assert_eq!(c.exchange(&post("/inbox/short2", b"also")).status(), 200);
    relay.kill();
    thread::sleep(Duration::from_millis(1200));
    let relay = start(&dir, &["--inbox-ttl", "1"]);
    thread::sleep(Duration::from_millis(100));
    assert!(
        relay
            .output()
            .contains("0 inbox messages, 0 acknowledged, 0 claims restored; 2 expired while down"),
        "{}",
        relay.output()
    );
    let mut c = relay.connect();
    assert_eq!(c.exchange(&get("/inbox/short/ack")).status(), 404);
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits (at most 20 s) until no rewrite of the journal runs and at least
/// one has ended; the rewrites done.
fn rewrites_settled(relay: &Relay) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let done = super::support::metric(relay, "httprelay_journal_compactions_total");
        let running = super::support::metric(relay, "httprelay_journal_compacting");
        if (done > 0 && running == 0) || Instant::now() > deadline {
            return done;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn superseded_writes_are_compacted_away_and_the_live_ones_kept() {
    let dir = data_dir("compact");
    let relay = start(&dir, &[]);
    let mut c = relay.connect();
    for i in 0..600u64 {
        let text = format!("version {i} {}", "x".repeat(3000));
        assert_eq!(
            c.exchange(&post("/inbox/hot", text.as_bytes())).status(),
            200
        );
    }
    assert_eq!(c.exchange(&post("/inbox/cold", b"kept")).status(), 200);
    assert_eq!(
        c.exchange(&req("DELETE", "/inbox/cold", &[], b"")).status(),
        200
    );
    let compactions = rewrites_settled(&relay);
    let bytes = super::support::metric(&relay, "httprelay_journal_bytes");
    eprintln!(
        "journal: 600 writes of 3 KB to one inbox: {compactions} compactions, {bytes} bytes left"
    );
    assert!(compactions >= 1, "the journal was rewritten");
    assert!(
        bytes < 1_200_000,
        "{bytes} bytes: superseded writes were dropped"
    );
    drop(relay);
    let relay = start(&dir, &[]);
    let mut c = relay.connect();
    let hot = c.exchange(&get("/inbox/hot")).text();
    assert!(
        hot.starts_with("version 599 "),
        "the last write is the one kept"
    );
    assert_eq!(c.exchange(&get("/inbox/cold/ack")).text(), "true");
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_full_disk_refuses_with_507_and_keeps_what_it_acknowledged() {
    let dir = data_dir("full");
    let flags = ["--data-dir", dir.to_str().unwrap()];
    // Room for the header and a few messages of 2 KB.
    let relay = Relay::start_fsize(8 * 1024, &flags);
    let (mut kept, mut refused) = (Vec::new(), 0);
    for i in 0..10 {
        let mut c = relay.connect();
        let r = c.exchange(&post(&format!("/inbox/full{i}"), &[b'f'; 2000]));
        match r.status() {
            200 => kept.push(i),
            507 => {
                assert_eq!(r.text(), "507 relay storage failed: not kept, try again\n");
                refused += 1;
            }
            other => panic!("a message on a full disk: {other}"),
        }
    }
    assert!(
        !kept.is_empty() && refused > 0,
        "{} kept, {refused} refused",
        kept.len()
    );
    assert!(super::support::metric(&relay, "httprelay_store_failures_total") >= 1);
    // What does not need the disk goes on.
    super::support::link_exchange(
        relay.addr(),
        "/link/still",
        "/link/still",
        b"up",
        ANSWER,
        "a transfer beside a full disk",
    );
    drop(relay);
    let relay = start(&dir, &[]);
    for i in &kept {
        let mut c = relay.connect();
        assert_eq!(
            c.exchange(&get(&format!("/inbox/full{i}"))).body(),
            &[b'f'; 2000][..]
        );
    }
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_rewrite_cut_short_by_a_crash_leaves_the_journal_whole() {
    let dir = data_dir("rewrite");
    let relay = start(&dir, &[]);
    let mut c = relay.connect();
    assert_eq!(
        c.exchange(&post("/inbox/kept", b"still here")).status(),
        200
    );
    drop(relay);
    // A rewrite killed before its rename leaves a partial journal.new.
    std::fs::write(dir.join("journal.new"), b"half a rewrite").unwrap();
    let relay = start(&dir, &[]);
    let mut c = relay.connect();
    assert_eq!(c.exchange(&get("/inbox/kept")).text(), "still here");
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_rewrite_stuck_on_its_disk_blocks_nothing_and_loses_nothing() {
    let dir = data_dir("stuck");
    let mut relay = start(&dir, &[]);
    // The rewrite's file is a FIFO nobody reads: opening it for writing
    // blocks the rewrite's thread until a reader comes.
    let fifo = dir.join("journal.new");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let mut c = relay.connect();
    for i in 0..400u64 {
        let text = format!("version {i} {}", "x".repeat(5000));
        assert_eq!(
            c.exchange(&post("/inbox/hot", text.as_bytes())).status(),
            200
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while super::support::metric(&relay, "httprelay_journal_compacting") == 0 {
        assert!(Instant::now() < deadline, "no rewrite began");
        thread::sleep(Duration::from_millis(10));
    }
    // The loop goes on: writes are acknowledged (and kept), reads answered.
    for i in 0..50u64 {
        let text = format!("during {i}");
        assert_eq!(
            c.exchange(&post(&format!("/inbox/during{i}"), text.as_bytes()))
                .status(),
            200
        );
    }
    assert!(c
        .exchange(&get("/inbox/hot"))
        .text()
        .starts_with("version 399 "));
    assert_eq!(
        super::support::metric(&relay, "httprelay_journal_compacting"),
        1,
        "the rewrite is still stuck"
    );
    // A reader comes: the rewrite writes into the FIFO, cannot make it
    // durable, and fails; the journal stays as it was.
    let reader = thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::fs::File::open(&fifo).unwrap(), &mut sink);
        sink.len()
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while super::support::metric(&relay, "httprelay_journal_compacting") == 1 {
        assert!(Instant::now() < deadline, "the rewrite never ended");
        thread::sleep(Duration::from_millis(10));
    }
    assert!(reader.join().unwrap() > 0, "the rewrite wrote its snapshot");
    assert_eq!(
        super::support::metric(&relay, "httprelay_journal_compactions_total"),
        0
    );
    assert!(
        relay
            .output()
            .contains("compaction failed (the journal is as it was)"),
        "{}",
        relay.output()
    );
    assert!(
        !dir.join("journal.new").exists(),
        "the failed rewrite's file is removed"
    );
    relay.kill();
    let relay = start(&dir, &[]);
    let mut c = relay.connect();
    assert!(c
        .exchange(&get("/inbox/hot"))
        .text()
        .starts_with("version 399 "));
    for i in 0..50u64 {
        assert_eq!(
            c.exchange(&get(&format!("/inbox/during{i}"))).text(),
            format!("during {i}")
        );
    }
    // With the disk back, the rewrite at start succeeds.
    assert_eq!(rewrites_settled(&relay), 1);
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn data_max_caps_the_journal_and_refuses_messages_past_it_with_507() {
    let dir = data_dir("max");
    // 64 KiB of it are kept for acknowledgements and claims.
    let relay = start(&dir, &["--data-max", "100K"]);
    let (mut kept, mut refused) = (Vec::new(), 0);
    for i in 0..40 {
        let mut c = relay.connect();
        let r = c.exchange(&post(&format!("/inbox/m{i}"), &[b'm'; 2000]));
        match r.status() {
            200 => kept.push(i),
            507 => {
                assert_eq!(r.text(), "507 relay storage full: not kept\n");
                refused += 1;
            }
            other => panic!("a message past --data-max: {other}"),
        }
    }
    assert!(
        kept.len() >= 10 && refused > 0,
        "{} kept, {refused} refused",
        kept.len()
    );
    assert_eq!(
        super::support::metric(&relay, "httprelay_store_full_total"),
        refused
    );
    // Acknowledged messages give their room back (their bodies are gone).
    for i in &kept[..5] {
        let mut c = relay.connect();
        let ack = req("DELETE", &format!("/inbox/m{i}"), &[], b"");
        assert_eq!(c.exchange(&ack).status(), 200);
    }
    // The first refusal begins a rewrite to what is live, which makes room:
    // the answer says to try again in a second.
    let mut tries = 0;
    loop {
        let mut c = relay.connect();
        let r = c.exchange(&post("/inbox/after", &[b'a'; 2000]));
        tries += 1;
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 507);
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(tries < 100, "no room made after {tries} tries");
        thread::sleep(Duration::from_millis(50));
    }
    let bytes = super::support::metric(&relay, "httprelay_journal_bytes");
    assert!(bytes <= 100 * 1024, "{bytes} bytes");
    drop(relay);
    let relay = start(&dir, &["--data-max", "100K"]);
    for i in &kept[5..] {
        let mut c = relay.connect();
        assert_eq!(
            c.exchange(&get(&format!("/inbox/m{i}"))).body(),
            &[b'm'; 2000][..]
        );
    }
    for i in &kept[..5] {
        let mut c = relay.connect();
        assert_eq!(c.exchange(&get(&format!("/inbox/m{i}/ack"))).text(), "true");
    }
    let mut c = relay.connect();
    assert_eq!(c.exchange(&get("/inbox/after")).body(), &[b'a'; 2000][..]);
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kills_during_rewrites_keep_the_last_acknowledged_write() {
    let dir = data_dir("rewrites");
    let mut relay = start(&dir, &[]);
    let mut state = unix_ms() | 1;
    let mut last_acked: Option<u64> = None;
    let mut version = 0u64;
    let mut rewrites = 0;
    for round in 0..30 {
        // 20 KB writes to one inbox: the journal doubles every hundred or so,
        // and is rewritten (on the compaction thread, switched in the loop) while the kill may land.
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(last_acked));
        let writer = {
            let (addr, stop, acked) = (relay.addr().clone(), stop.clone(), acked.clone());
            let first = version;
            thread::spawn(move || {
                let mut v = first;
                while !stop.load(Ordering::Relaxed) {
                    v += 1;
                    let Ok(mut c) = httprelay_testkit::Conn::try_open(&addr, 1 << 16, ANSWER)
                    else {
                        return v;
                    };
                    let text = format!("version {v:08} {}", "v".repeat(20_000));
                    if c.try_send(&post("/inbox/hot", text.as_bytes())).is_err() {
                        return v;
                    }
                    match c.try_read_head() {
                        Some(h) if h.status == 200 => *acked.lock().unwrap() = Some(v),
                        _ => return v,
                    }
                }
                v
            })
        };
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        thread::sleep(Duration::from_millis(20 + state % 80));
        rewrites += super::support::metric(&relay, "httprelay_journal_compactions_total");
        relay.kill();
        stop.store(true, Ordering::Relaxed);
        version = writer.join().expect("the writer");
        last_acked = *acked.lock().unwrap();
        relay = start(&dir, &[]);
        if let Some(acked) = last_acked {
            let mut c = relay.connect();
            let text = c.exchange(&get("/inbox/hot")).text();
            let kept: u64 = text["version ".len().."version ".len() + 8]
                .parse()
                .unwrap();
            // A write the relay kept but could not answer may be newer.
            assert!(
                kept >= acked,
                "round {round}: version {kept} kept, {acked} acknowledged"
            );
        }
    }
    eprintln!("journal: 30 kills among {version} writes and {rewrites} rewrites: the last acknowledged write kept every time");
    assert!(rewrites > 0, "the writes made the journal rewrite itself");
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}

//! Piping Server transfers (`--piping`): side by side with the reference
//! server, and a large transfer to several receivers.

use std::thread;

use super::streaming::{expected_checksum, send_pattern, PatternCheck};
use super::support::{bounded_rss_kib, req, unavailable, Comparison, Conn, End, Relay, RssSampler};

const REFERENCE: &str = "tests/piping/node_modules/.bin/piping-server";

/// Skips (loudly) or, with `HTTPRELAY_REQUIRE_PIPING=1`, fails.
fn reference_unavailable(reason: &str) {
    unavailable(
        "PIPING REFERENCE",
        "HTTPRELAY_REQUIRE_PIPING",
        reason,
        "The relay was not compared with piping-server 1.12.9.",
        "Run scripts/install-piping-server.sh (Node.js, npm, python3)",
    );
}

#[test]
fn piping_answers_every_exchange_as_the_reference_server_does() {
    let comparison = Comparison {
        reference: REFERENCE,
        reference_args: &["--host", "127.0.0.1", "--http-port", "{port}"],
        relay_flags: &["--piping"],
        script: "scripts/piping-compare.py",
    };
    let compared = match comparison.run() {
        Ok(compared) => compared,
        Err(missing) => return reference_unavailable(&missing),
    };
    let (same, report) = (compared.same, compared.report);
    assert!(
        same,
        "the relay and piping-server differ beyond the documented differences:\n{report}"
    );
    assert!(
        report.lines().count() >= 25,
        "every scenario ran:\n{report}"
    );
}

#[test]
fn piping_three_receivers_get_64_mib_intact_in_bounded_memory() {
    const TOTAL: u64 = 64 * 1024 * 1024;
    let relay = Relay::start_flags(&["--piping"]);
    let receivers: Vec<_> = (0..3)
        .map(|_| {
            let addr = relay.addr().clone();
            thread::spawn(move || {
                let mut conn = Conn::open(&addr);
                conn.send(&req("GET", "/big?n=3", &[], b""));
                let head = conn.read_head();
                assert_eq!(head.status, 200);
                assert_eq!(head.content_length(), Some(TOTAL));
                let mut check = PatternCheck::new();
                let (end, received) = conn.stream_body(&head, false, 64 * 1024, |piece| {
                    check.feed(piece);
                });
                (end, received, check.first_mismatch, check.checksum())
            })
        })
        .collect();
    let before_kib = relay.rss_kib();
    let sampler = RssSampler::start(relay.pid());
    let mut sender = relay.connect();
    let length = TOTAL.to_string();
    sender.send(&req("PUT", "/big?n=3", &[("Content-Length", &length)], b""));
    send_pattern(&mut sender, TOTAL);
    let said = sender.read_response();
    let (peak_kib, _) = sampler.finish();
    for receiver in receivers {
        let (end, received, mismatch, checksum) = receiver.join().expect("receiver thread");
        assert_eq!(end, End::Complete);
        assert_eq!(received, TOTAL);
        assert_eq!(mismatch, None, "first corrupted byte offset");
        assert_eq!(checksum, expected_checksum(TOTAL));
    }
    assert_eq!(said.status(), 200);
    let text = said.text();
    assert!(
        text.ends_with(
            "[INFO] Start sending to 3 receiver(s)!\n[INFO] Sent successfully!\n\
             [INFO] All receiver(s) was/were received successfully.\n"
        ),
        "{text}"
    );
    let peak_kib = bounded_rss_kib(peak_kib, before_kib);
    assert!(
        peak_kib < 16 * 1024,
        "relay RSS peaked at {peak_kib} KiB broadcasting 64 MiB to 3 receivers"
    );
}

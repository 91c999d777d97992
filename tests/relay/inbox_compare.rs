//! `/inbox/{id}` side by side with pubky's http-relay 0.7.0, the reference
//! implementation: `scripts/inbox-compare.py` runs the same exchanges against
//! both with a 2-second inbox timeout and a 4-second TTL.

use super::support::{unavailable, Comparison};

const REFERENCE: &str = "target/http-relay-ref/bin/http-relay";

/// Skips (loudly) or, with `HTTPRELAY_REQUIRE_INBOX_REF=1`, fails.
fn reference_unavailable(reason: &str) {
    unavailable(
        "INBOX REFERENCE",
        "HTTPRELAY_REQUIRE_INBOX_REF",
        reason,
        "The inbox was not compared with http-relay 0.7.0.",
        "Run scripts/install-http-relay.sh (cargo, python3)",
    );
}

#[test]
fn inbox_answers_every_exchange_as_the_reference_relay_does() {
    let comparison = Comparison {
        reference: REFERENCE,
        reference_args: &[
            "--port",
            "{port}",
            "--inbox-timeout",
            "2",
            "--inbox-cache-ttl",
            "4",
            "--max-body-size",
            "2048",
        ],
        relay_flags: &[
            "--inbox-timeout",
            "2",
            "--inbox-ttl",
            "4",
            "--inbox-max-message",
            "2048",
        ],
        script: "scripts/inbox-compare.py",
    };
    let compared = match comparison.run() {
        Ok(compared) => compared,
        Err(missing) => return reference_unavailable(&missing),
    };
    let (same, report) = (compared.same, compared.report);
    assert!(
        same,
        "the relay and http-relay 0.7.0 differ beyond the documented differences:\n{report}"
    );
    assert!(
        report.lines().count() >= 33,
        "every scenario ran:\n{report}"
    );
}

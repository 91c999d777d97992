//! `/inbox/{id}` side by side with pubky's http-relay 0.7.0, the reference
//! implementation: `scripts/inbox-compare.py` runs the same exchanges against
//! both with a 2-second inbox timeout and a 4-second TTL.

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::support::{free_port, unavailable, Relay};

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

/// A process killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn inbox_answers_every_exchange_as_the_reference_relay_does() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if !root.join(REFERENCE).exists() {
        return reference_unavailable("target/http-relay-ref has no http-relay");
    }
    if Command::new("python3").arg("--version").output().is_err() {
        return reference_unavailable("python3 is missing");
    }
    let port = free_port();
    let reference = Child(
        Command::new(root.join(REFERENCE))
            .args(["--port", &port.to_string()])
            .args(["--inbox-timeout", "2", "--inbox-cache-ttl", "4"])
            .args(["--max-body-size", "2048"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start http-relay"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "http-relay did not listen");
        thread::sleep(Duration::from_millis(50));
    }
    let relay = Relay::start_flags(&[
        "--inbox-timeout",
        "2",
        "--inbox-ttl",
        "4",
        "--inbox-max-message",
        "2048",
    ]);
    let ours = relay.tcp_addr().port();
    let compared = Command::new("python3")
        .arg(root.join("scripts/inbox-compare.py"))
        .args([port.to_string(), ours.to_string()])
        .output()
        .expect("run scripts/inbox-compare.py");
    let report = String::from_utf8_lossy(&compared.stdout);
    eprintln!("{report}{}", String::from_utf8_lossy(&compared.stderr));
    drop(reference);
    assert!(
        compared.status.success(),
        "the relay and http-relay 0.7.0 differ beyond the documented differences:\n{report}"
    );
    assert!(
        report.lines().count() >= 33,
        "every scenario ran:\n{report}"
    );
}

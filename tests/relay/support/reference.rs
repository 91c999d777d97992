//! A reference server beside the relay, and the script that runs the same
//! exchanges against both (`scripts/*-compare.py REF_PORT OURS_PORT`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{free_port, Relay};

/// What a comparison runs.
pub struct Comparison<'a> {
    /// The reference's executable, from the crate root.
    pub reference: &'a str,
    /// The reference's arguments; `{port}` stands for the port it must use.
    pub reference_args: &'a [&'a str],
    /// The relay's flags.
    pub relay_flags: &'a [&'a str],
    /// The comparison script, from the crate root.
    pub script: &'a str,
}

/// The script's verdict and its report.
pub struct Compared {
    pub same: bool,
    pub report: String,
}

/// A process killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Comparison<'_> {
    /// Starts the reference and the relay and runs the script; `Err` names
    /// what is missing (the reference, or python3).
    pub fn run(&self) -> Result<Compared, String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        if !root.join(self.reference).exists() {
            return Err(format!("{} is missing", self.reference));
        }
        if Command::new("python3").arg("--version").output().is_err() {
            return Err("python3 is missing".into());
        }
        let port = free_port();
        let args = self
            .reference_args
            .iter()
            .map(|a| a.replace("{port}", &port.to_string()));
        let reference = Child(
            Command::new(root.join(self.reference))
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", self.reference)),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{} did not listen",
                self.reference
            );
            thread::sleep(Duration::from_millis(50));
        }
        let relay = Relay::start_flags(self.relay_flags);
        let ours = relay.tcp_addr().port();
        let compared = Command::new("python3")
            .arg(root.join(self.script))
            .args([port.to_string(), ours.to_string()])
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", self.script));
        let report = String::from_utf8_lossy(&compared.stdout).into_owned();
        eprintln!("{report}{}", String::from_utf8_lossy(&compared.stderr));
        drop(reference);
        Ok(Compared {
            same: compared.status.success(),
            report,
        })
    }
}

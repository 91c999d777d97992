//! The relay binary this crate builds, started the ways the suites need.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};

use httprelay_testkit::{Launch, RelayProcess};

/// A running `httprelay` of this build; everything but starting it is the
/// testkit's [`RelayProcess`]. Killed when dropped.
pub struct Relay(RelayProcess);

impl Relay {
    /// Starts the relay on 127.0.0.1 with an OS-chosen port.
    pub fn start() -> Relay {
        Relay::start_with(&["-a", "127.0.0.1", "-p", "0"])
    }

    /// Starts the relay on 127.0.0.1 with an OS-chosen port and extra flags.
    pub fn start_flags(extra: &[&str]) -> Relay {
        Relay::start_with(&loopback_with(extra))
    }

    /// Starts the relay on a Unix socket at `path`.
    pub fn start_unix(path: &Path) -> Relay {
        let path = path.to_str().expect("utf-8 socket path");
        Relay::start_with(&["-u", path])
    }

    /// Starts the relay with the given flags and waits for its `listening on ADDR` line.
    /// The suites' clients all come from one address, so the shares per
    /// address are lifted unless `args` set them: the fair share is tested on
    /// its own (`fair.rs`, with [`Relay::start_fair`]).
    pub fn start_with(args: &[&str]) -> Relay {
        Relay::launch(Launch::new(&binary(), &unshared(args)))
    }

    /// Like `start_flags`, with the fair share as the flags leave it (its
    /// default unless they set it).
    pub fn start_fair(extra: &[&str]) -> Relay {
        Relay::launch(Launch::new(&binary(), &loopback_with(extra)))
    }

    /// Like `start_flags`, with the files the relay writes limited to
    /// `bytes` (RLIMIT_FSIZE): a full disk.
    pub fn start_fsize(bytes: u64, extra: &[&str]) -> Relay {
        let args = unshared(&loopback_with(extra));
        Relay::launch(Launch::new(&binary(), &args).fsize(bytes))
    }

    /// Like `start_flags`, with the relay's descriptor limit (RLIMIT_NOFILE, soft and
    /// hard) set to `nofile`: only the relay process is limited.
    pub fn start_nofile(nofile: u64, extra: &[&str]) -> Relay {
        let args = unshared(&loopback_with(extra));
        Relay::launch(Launch::new(&binary(), &args).nofile(nofile))
    }

    /// Starts the relay as `launch` says (its own binary and flags).
    pub fn from_launch(launch: Launch) -> Relay {
        Relay::launch(launch)
    }

    fn launch(launch: Launch) -> Relay {
        Relay(launch.start().unwrap_or_else(|e| panic!("{e}")))
    }
}

impl Deref for Relay {
    type Target = RelayProcess;

    fn deref(&self) -> &RelayProcess {
        &self.0
    }
}

impl DerefMut for Relay {
    fn deref_mut(&mut self) -> &mut RelayProcess {
        &mut self.0
    }
}

/// The program the suites start as the relay: this build's binary, or the one
/// `HTTPRELAY_TEST_BIN` names, such as a wrapper that runs a cross-built binary
/// under qemu-user (`scripts/test-arm64.sh`).
pub fn binary() -> PathBuf {
    match std::env::var_os("HTTPRELAY_TEST_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => PathBuf::from(env!("CARGO_BIN_EXE_httprelay")),
    }
}

/// `args` with the shares per client address lifted where they do not set them.
fn unshared<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut args = args.to_vec();
    for share in ["--max-conns-per-client", "--max-channels-per-client"] {
        if !args.contains(&share) {
            args.extend([share, "1000000"]);
        }
    }
    args
}

fn loopback_with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["-a", "127.0.0.1", "-p", "0"];
    args.extend_from_slice(extra);
    args
}

/// Whether the relay runs under an emulator (`HTTPRELAY_TEST_EMULATED=1`, which
/// `scripts/test-arm64.sh` sets): qemu-user runs it inside its own process, so
/// the pid's RSS includes the emulator's (about 15 MiB).
fn emulated() -> bool {
    std::env::var("HTTPRELAY_TEST_EMULATED").is_ok_and(|v| v == "1")
}

/// A peak RSS in KiB as an absolute bound on the relay means it: `peak`, or under
/// emulation its growth over `before`, since the emulator's memory is not the
/// relay's.
pub fn bounded_rss_kib(peak: u64, before: u64) -> u64 {
    if emulated() {
        peak.saturating_sub(before)
    } else {
        peak
    }
}

//! The relay binary this crate builds, started the ways the suites need.

use std::ops::{Deref, DerefMut};
use std::path::Path;

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
    pub fn start_with(args: &[&str]) -> Relay {
        Relay::launch(Launch::new(binary(), args))
    }

    /// Like `start_flags`, with the relay's descriptor limit (RLIMIT_NOFILE, soft and
    /// hard) set to `nofile`: only the relay process is limited.
    pub fn start_nofile(nofile: u64, extra: &[&str]) -> Relay {
        Relay::launch(Launch::new(binary(), &loopback_with(extra)).nofile(nofile))
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

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_httprelay"))
}

fn loopback_with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["-a", "127.0.0.1", "-p", "0"];
    args.extend_from_slice(extra);
    args
}

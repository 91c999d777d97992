//! HTTPS for the suites: a relay built with the `tls` feature, a test CA
//! and certificates made when the test runs (openssl), and curl as the
//! client. No TLS library enters the test build: the default build's
//! dependency tree stays the relay's five crates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use httprelay_testkit::Launch;

use super::{unavailable, Relay};

/// The relay binary with TLS: `HTTPRELAY_TEST_TLS_BIN` (a cross-built one
/// under qemu, `scripts/test-arm64.sh`), this build's when the suite itself
/// is built `--features tls`, else one built once here into the test's
/// target directory (`cargo build --release --features tls`). `None` (after
/// saying so, or failing under `HTTPRELAY_REQUIRE_TLS=1`) when there is none
/// or openssl and curl are missing.
pub fn tls_binary() -> Option<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = BUILT.get_or_init(|| {
        for tool in ["openssl", "curl"] {
            let ran = Command::new(tool).arg("version").output();
            let ran = match tool {
                "curl" => Command::new(tool).arg("--version").output(),
                _ => ran,
            };
            if !ran.is_ok_and(|o| o.status.success()) {
                return Err(format!("{tool} is not installed"));
            }
        }
        if let Some(bin) = std::env::var_os("HTTPRELAY_TEST_TLS_BIN") {
            return Ok(PathBuf::from(bin));
        }
        if cfg!(feature = "tls") && std::env::var_os("HTTPRELAY_TEST_BIN").is_none() {
            return Ok(PathBuf::from(env!("CARGO_BIN_EXE_httprelay")));
        }
        build_with_tls()
    });
    match found {
        Ok(bin) => Some(bin.clone()),
        Err(reason) => {
            unavailable(
                "TLS",
                "HTTPRELAY_REQUIRE_TLS",
                reason,
                "HTTPS (the tls build feature) went untested.",
                "Install openssl and curl (scripts/install-tls-tools.sh)",
            );
            None
        }
    }
}

fn build_with_tls() -> Result<PathBuf, String> {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tls-build");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--release", "--locked", "--features", "tls"])
        .args(["--bin", "httprelay", "--target-dir"])
        .arg(&target)
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build --features tls failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(target.join("release/httprelay"))
}

/// The kinds of key a certificate is made with.
#[derive(Clone, Copy, Debug)]
pub enum KeyKind {
    /// ECDSA P-256, PKCS#8.
    EcdsaPkcs8,
    /// ECDSA P-256, SEC1 ("EC PRIVATE KEY").
    EcdsaSec1,
    /// RSA 2048, PKCS#1 ("RSA PRIVATE KEY").
    RsaPkcs1,
    /// Ed25519, PKCS#8.
    Ed25519,
}

/// A test CA in a directory of its own, and the certificates it signs
/// (for `localhost` and 127.0.0.1).
pub struct Pki {
    pub dir: PathBuf,
    /// The CA's certificate: what clients trust.
    pub ca: PathBuf,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("httprelay-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory for the test CA");
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=httprelay test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        let ca = dir.join("ca.pem");
        Pki { dir, ca }
    }

    /// A certificate chain (leaf, then the CA) and its key, named `name`, with
    /// serial number `serial`: the paths of the chain and of the key.
    pub fn leaf(&self, name: &str, serial: u32, kind: KeyKind) -> (PathBuf, PathBuf) {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let newkey: &[&str] = match kind {
            KeyKind::EcdsaPkcs8 | KeyKind::EcdsaSec1 => {
                &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
            }
            KeyKind::RsaPkcs1 => &["-newkey", "rsa:2048"],
            KeyKind::Ed25519 => &["-newkey", "ed25519"],
        };
        let mut args = vec!["req", "-new", "-nodes", "-keyout", &key, "-out", &csr];
        args.extend(newkey);
        args.extend(["-subj", "/CN=localhost"]);
        openssl(&self.dir, &args);
        match kind {
            KeyKind::EcdsaSec1 => openssl(&self.dir, &["ec", "-in", &key, "-out", &key]),
            KeyKind::RsaPkcs1 => {
                openssl(
                    &self.dir,
                    &["rsa", "-traditional", "-in", &key, "-out", &key],
                );
            }
            _ => {}
        }
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             extendedKeyUsage=serverAuth\n",
        )
        .expect("extensions file");
        let leaf = format!("{name}.leaf.pem");
        let serial = serial.to_string();
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &serial,
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &leaf,
            ],
        );
        let mut chain = std::fs::read(self.dir.join(&leaf)).expect("leaf");
        chain.extend(std::fs::read(&self.ca).expect("ca"));
        let chain_path = self.dir.join(format!("{name}.pem"));
        std::fs::write(&chain_path, chain).expect("chain");
        (chain_path, self.dir.join(key))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let mut c = Command::new("openssl");
    c.current_dir(dir).args(args);
    run(c);
}

/// A test CA named `name`, and a relay (with flags `extra`) serving HTTPS
/// with an ECDSA certificate of serial `serial` that it signed; `None` when
/// there is no tls build to test ([`tls_binary`] said why).
pub fn tls_relay(name: &str, serial: u32, extra: &[&str]) -> Option<(Pki, Relay, SocketAddr)> {
    let bin = tls_binary()?;
    let pki = Pki::new(name);
    let (cert, key) = pki.leaf("relay", serial, KeyKind::EcdsaPkcs8);
    let (relay, https) = start_tls(&bin, &cert, &key, extra);
    Some((pki, relay, https))
}

/// A relay serving HTTPS with `cert` and `key` on an OS-chosen port beside
/// plain HTTP, and its HTTPS address.
pub fn start_tls(bin: &Path, cert: &Path, key: &Path, extra: &[&str]) -> (Relay, SocketAddr) {
    let (cert, key) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    let mut args = vec!["-a", "127.0.0.1", "-p", "0", "--tls-port", "0"];
    args.extend(["--tls-cert", cert, "--tls-key", key]);
    args.extend(["--max-conns-per-client", "1000000"]);
    args.extend(["--max-channels-per-client", "1000000"]);
    args.extend_from_slice(extra);
    let relay = Relay::from_launch(Launch::new(bin, &args));
    let https = tls_addr(&relay.output()).expect("the relay shows its https:// address");
    (relay, https)
}

/// The address after `https://` in the relay's `listening on` line.
pub fn tls_addr(output: &str) -> Option<SocketAddr> {
    let at = output.find("https://")? + "https://".len();
    output[at..].split_whitespace().next()?.parse().ok()
}

/// curl over HTTPS to `addr`, trusting `ca`: `-sS --http1.1` and `args`,
/// the URL's path and query given as `path`.
pub fn curl(ca: &Path, addr: SocketAddr, path: &str, args: &[&str]) -> Command {
    let mut c = Command::new("curl");
    c.args(["-sS", "--http1.1", "--max-time", "60", "--cacert"])
        .arg(ca)
        .args(args)
        .arg(format!("https://localhost:{}{path}", addr.port()))
        .args(["--resolve", &format!("localhost:{}:127.0.0.1", addr.port())]);
    c
}

/// Runs a command to its end and returns what it printed; fails the test
/// if it failed.
pub fn run(c: Command) -> Output {
    let what = format!("{c:?}");
    finish_as(spawn(c), &what)
}

/// Starts a command with its output captured and no input.
pub fn spawn(mut c: Command) -> Child {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts")
}

/// Waits for a spawned command and returns its output; fails the test if
/// it failed.
pub fn finish(child: Child) -> Output {
    finish_as(child, "a command")
}

fn finish_as(child: Child, what: &str) -> Output {
    let out = child.wait_with_output().expect("the command ends");
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The serial number (hex, as openssl prints it) of the certificate a new
/// handshake with `addr` is given.
pub fn served_serial(addr: SocketAddr) -> String {
    let connect = format!("127.0.0.1:{}", addr.port());
    let shown = Command::new("openssl")
        .args(["s_client", "-connect", &connect, "-servername", "localhost"])
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client runs");
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl x509 runs");
    use std::io::Write;
    let _ = x509.stdin.take().expect("stdin").write_all(&shown.stdout);
    let out = x509.wait_with_output().expect("openssl x509 ends");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_string()
}

/// Waits until `done` holds, up to `limit`.
pub fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

//! A real browser against the relay: headless Chromium, driven by
//! `tests/browser/e2e.mjs` (Node.js + playwright-core), loads pages from one origin
//! (a tiny static file server in this test) and talks to the relay on another, so
//! every request is a genuine cross-origin `fetch` under the browser's CORS rules.
//!
//! Needs `/usr/bin/chromium` (or `$HTTPRELAY_CHROMIUM`), `node` >= 20 and the npm
//! dependencies (`scripts/install-browser.sh` installs all three). Without them the
//! test prints a loud `BROWSER TEST SKIPPED` banner and passes, unless
//! `HTTPRELAY_REQUIRE_BROWSER=1` (as in CI), which turns the skip into a failure.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::support::Relay;

/// The whole node run (Chromium start, every check) must finish within this.
const NODE_TIMEOUT: Duration = Duration::from_secs(180);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Skips (loudly) or, with `HTTPRELAY_REQUIRE_BROWSER=1`, fails.
fn unavailable(reason: &str) {
    super::support::unavailable(
        "BROWSER",
        "HTTPRELAY_REQUIRE_BROWSER",
        reason,
        "tests/relay/browser.rs did NOT run: the relay was not tried in a real browser.",
        "Run scripts/install-browser.sh (Chromium + Node.js deps)",
    );
}

/// Checks for Chromium, Node.js and the npm dependencies (running `npm ci` when only
/// those are missing). Returns the Chromium path, or why the test cannot run.
fn prerequisites() -> Result<PathBuf, String> {
    let chromium = std::env::var_os("HTTPRELAY_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.is_file() {
        return Err(format!("no Chromium at {}", chromium.display()));
    }
    let version = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `node`: {e}"))?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 20 {
        return Err(format!(
            "Node.js 20 or newer is needed (playwright-core), `node --version` says {version:?}"
        ));
    }
    let dir = root().join("tests/browser");
    if !dir
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        super::support::loud(
            "browser test: tests/browser/node_modules is missing, running `npm ci`\n",
        );
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("node_modules missing and cannot run `npm ci`: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "node_modules missing and `npm ci --prefix tests/browser` failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(chromium)
}

/// A static file server on 127.0.0.1 (a different origin from the relay): `/test/...`
/// is `tests/browser/pages/`, everything else `examples/`. One thread per connection,
/// one request per connection.
struct StaticServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl StaticServer {
    fn start() -> StaticServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the page server");
        let addr = listener.local_addr().expect("page server address");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let accept = thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    thread::spawn(move || {
                        let _ = serve_file(stream);
                    });
                }
            }
        });
        StaticServer {
            addr,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("md" | "txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Maps a request path to a file under `examples/` or `tests/browser/pages/`.
fn resolve(target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let (base, rest) = match path.strip_prefix("/test/") {
        Some(rest) => (root().join("tests/browser/pages"), rest),
        None => (root().join("examples"), path.trim_start_matches('/')),
    };
    let rest = Path::new(rest);
    if rest
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return None;
    }
    let file = base.join(rest);
    file.is_file().then_some(file)
}

fn serve_file(stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Read (and ignore) the header fields; browsers send no body with GET.
    loop {
        let mut field = String::new();
        if reader.read_line(&mut field)? == 0 || field == "\r\n" || field == "\n" {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let mut out = stream;
    let (status, kind, body) = match (method, resolve(target)) {
        ("GET" | "HEAD", Some(file)) => ("200 OK", content_type(&file), fs::read(&file)?),
        ("GET" | "HEAD", None) => ("404 Not Found", "text/plain", b"not found\n".to_vec()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            b"GET only\n".to_vec(),
        ),
    };
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        out.write_all(&body)?;
    }
    out.flush()
}

/// Copies a child's output pipe line by line to our stderr (prefixed) and into `log`.
fn forward(pipe: impl Read + Send + 'static, log: Arc<Mutex<String>>) -> JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            super::support::loud(&format!("[browser] {line}\n"));
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    })
}

fn wait_or_kill(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a node script (from the repository's root) to its end or
/// [`NODE_TIMEOUT`]: its exit status (`None`: killed) and everything it
/// printed, echoed as it comes.
fn run_node(mut node: Command) -> (Option<std::process::ExitStatus>, String) {
    let mut node = node
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    let log = Arc::new(Mutex::new(String::new()));
    let out = forward(node.stdout.take().expect("stdout"), log.clone());
    let err = forward(node.stderr.take().expect("stderr"), log.clone());
    let status = wait_or_kill(&mut node, NODE_TIMEOUT);
    let _ = out.join();
    let _ = err.join();
    let log = log.lock().unwrap().clone();
    (status, log)
}

#[test]
fn browser_end_to_end() {
    let chromium = match prerequisites() {
        Ok(path) => path,
        Err(reason) => return unavailable(&reason),
    };
    let relay = Relay::start_flags(&["--piping"]);
    let pages = StaticServer::start();
    let screenshot = root().join("target/browser-e2e.png");
    let _ = fs::remove_file(&screenshot);

    let started = Instant::now();
    let mut node = Command::new("node");
    node.arg(root().join("tests/browser/e2e.mjs"))
        .arg("--relay")
        .arg(format!("http://{}", relay.tcp_addr()))
        .arg("--pages")
        .arg(format!("http://{}", pages.addr))
        .arg("--screenshot")
        .arg(&screenshot)
        .arg("--chromium")
        .arg(&chromium);
    let (status, log) = run_node(node);

    let Some(status) = status else {
        panic!(
            "browser test: node did not finish within {NODE_TIMEOUT:?} and was killed; its \
             output:\n{log}\nrelay output:\n{}",
            relay.output()
        );
    };
    assert!(
        status.success(),
        "browser test: e2e.mjs exited with {status} (see the FAIL lines); its output:\n{log}\n\
         relay output:\n{}",
        relay.output()
    );
    assert!(
        !log.contains("\nFAIL ") && log.contains("PASS "),
        "browser test: unexpected output from e2e.mjs:\n{log}"
    );
    assert!(
        screenshot.is_file(),
        "browser test: no screenshot at {}",
        screenshot.display()
    );
    super::support::loud(&format!(
        "browser test: passed in {:.1} s; screenshot {}\n",
        started.elapsed().as_secs_f64(),
        screenshot.display()
    ));
}

/// The relay over HTTPS in the browser: a page served over HTTPS from one
/// origin uses the relay's HTTPS port on another (link and mcast both ways,
/// a live stream), with the test CA trusted through an NSS database of the
/// browser's own (`tests/browser/https.mjs`).
#[test]
fn browser_over_https() {
    use super::support::tls::{tls_relay, KeyKind};
    let chromium = match prerequisites() {
        Ok(path) => path,
        Err(reason) => return unavailable(&reason),
    };
    if !Command::new("certutil")
        .arg("-H")
        .output()
        .is_ok_and(|o| !o.stdout.is_empty() || !o.stderr.is_empty())
    {
        return unavailable("certutil (libnss3-tools) is not installed");
    }
    let Some((pki, relay, https)) = tls_relay("browser", 50, &[]) else {
        return;
    };
    let (page_cert, page_key) = pki.leaf("page", 51, KeyKind::EcdsaPkcs8);
    let home = pki.dir.join("home");
    let nssdb = home.join(".pki/nssdb");
    fs::create_dir_all(&nssdb).expect("the browser's NSS database");
    let db = format!("sql:{}", nssdb.display());
    for args in [
        vec!["-N", "-d", &db, "--empty-password"],
        vec![
            "-A",
            "-d",
            &db,
            "-t",
            "C,,",
            "-n",
            "httprelay test CA",
            "-i",
        ],
    ] {
        let mut certutil = Command::new("certutil");
        certutil.args(&args);
        if args[0] == "-A" {
            certutil.arg(&pki.ca);
        }
        let out = certutil.output().expect("certutil runs");
        assert!(
            out.status.success(),
            "certutil {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut node = Command::new("node");
    node.arg(root().join("tests/browser/https.mjs"))
        .arg("--relay")
        .arg(format!("https://localhost:{}", https.port()))
        .arg("--cert")
        .arg(&page_cert)
        .arg("--key")
        .arg(&page_key)
        .arg("--home")
        .arg(&home)
        .arg("--chromium")
        .arg(&chromium);
    let (status, log) = run_node(node);
    let status = status.unwrap_or_else(|| {
        panic!(
            "https.mjs did not finish within {NODE_TIMEOUT:?}; its output:\n{log}\nrelay:\n{}",
            relay.output()
        )
    });
    assert!(
        status.success() && !log.contains("\nFAIL ") && log.contains("PASS link over HTTPS"),
        "https.mjs exited with {status}; its output:\n{log}\nrelay:\n{}",
        relay.output()
    );
}

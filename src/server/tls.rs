//! HTTPS in the loop (`--features tls`): the certificate pair, loaded at start
//! and again on SIGHUP, and a TLS session over a client's TCP socket that
//! keeps the edge-triggered rules of a plain socket (`stream.rs`).
//!
//! rustls is a state machine without IO of its own: the session feeds it the
//! bytes read from the socket and writes out the records it produces, so the
//! same loop, timers and readiness drive TLS connections and plain ones.
//!
//! Two rules make a session look like a plain socket to the shell:
//! - a read returns less than asked only once the socket said `WouldBlock`
//!   (or ended) and every decrypted byte was handed over, so "a short read
//!   drained the socket" still holds and no plaintext waits unseen;
//! - a write reports bytes as sent only once their records are in the
//!   kernel. A record the socket did not take whole stays in the session and
//!   the write says `WouldBlock`; the caller offers the same bytes again (its
//!   output buffer still holds them) and they are reported once the record is
//!   out. So a response the shell thinks complete is complete on the wire,
//!   and the session holds at most one record of output.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// Most plaintext encrypted into one record per write: the TLS maximum, so
/// the session holds at most one full record of output.
const RECORD_PLAINTEXT: usize = 16 * 1024;
/// Most bytes a client may send before its handshake completes. A client
/// hello is 0.5-2 KiB (with a post-quantum key share); more is a client
/// making the session buffer a large handshake message.
const HANDSHAKE_INPUT_MAX: usize = 16 * 1024;
/// The first byte of a TLS record carrying a handshake message: anything
/// else first on the TLS port is not TLS.
const HANDSHAKE_RECORD: u8 = 0x16;
/// Most bytes of a plain HTTP request read before it is answered.
const PLAIN_READ_MAX: usize = 64 * 1024;
/// The answer to plain HTTP on the TLS port, written as it is.
const PLAIN_ON_TLS_PORT: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 37\r\n\
Connection: close\r\n\
\r\n\
400 this port speaks HTTPS, not HTTP\n";

/// Why a certificate pair could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// A file could not be read or its PEM could not be parsed.
    Read(PathBuf, String),
    /// The certificate file holds no certificate.
    NoCertificate(PathBuf),
    /// The key file holds no private key.
    NoKey(PathBuf),
    /// rustls refused the pair (a key of a kind it cannot sign with, or one
    /// that does not match the certificate).
    Refused(String),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Read(path, e) => write!(f, "cannot read {}: {e}", path.display()),
            LoadError::NoCertificate(path) => {
                write!(f, "no PEM certificate in {}", path.display())
            }
            LoadError::NoKey(path) => write!(f, "no PEM private key in {}", path.display()),
            LoadError::Refused(e) => write!(f, "certificate and key refused: {e}"),
        }
    }
}

/// Where the certificate pair is read from, and the server settings made
/// from it. New handshakes use the current settings; a reload replaces them
/// and sessions already open keep the ones they began with.
pub struct Identity {
    cert: PathBuf,
    key: PathBuf,
    config: Arc<ServerConfig>,
}

impl Identity {
    /// Loads the pair (PEM: the certificate chain, leaf first; a PKCS#8,
    /// PKCS#1 or SEC1 key: RSA, ECDSA or Ed25519).
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, LoadError> {
        Ok(Identity {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            config: server_config(cert, key)?,
        })
    }

    /// Reads the files again; on any error the pair in use stays.
    pub fn reload(&mut self) -> Result<(), LoadError> {
        self.config = server_config(&self.cert, &self.key)?;
        Ok(())
    }

    /// A session for a client just accepted.
    pub fn accept(&self, tcp: TcpStream) -> Result<Session, rustls::Error> {
        Ok(Session {
            tcp,
            tls: rustls::ServerConnection::new(Arc::clone(&self.config))?,
            in_flight: 0,
            handshake_input: 0,
            counted: false,
        })
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, LoadError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| LoadError::Read(path.to_path_buf(), e.to_string()))
    };
    let cert_pem = read(cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LoadError::Read(cert.to_path_buf(), e.to_string()))?;
    if chain.is_empty() {
        return Err(LoadError::NoCertificate(cert.to_path_buf()));
    }
    let key_pem = read(key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => LoadError::NoKey(key.to_path_buf()),
        e => LoadError::Read(key.to_path_buf(), e.to_string()),
    })?;
    // ring rather than aws-lc-rs: no C++ or CMake to cross-build, and a
    // smaller static binary; the cost is no post-quantum key exchange
    // (rustls marks ring's provider deprecated for that reason alone).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LoadError::Refused(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| LoadError::Refused(e.to_string()))?;
    // Both versions the relay speaks: a client that offers only `http/1.0`
    // (curl --http1.0) would otherwise be refused with no_application_protocol.
    config.alpn_protocols = vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    // Resumption by stateless tickets (the key rotates; nothing is kept per
    // client), and no session cache: memory stays per connection.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| LoadError::Refused(e.to_string()))?;
    Ok(Arc::new(config))
}

/// A TLS session over an accepted TCP socket.
pub struct Session {
    tcp: TcpStream,
    tls: rustls::ServerConnection,
    /// Plaintext taken by the last write whose record is not all in the
    /// kernel yet: reported as written once it is (see the module's notes).
    in_flight: usize,
    /// Bytes read while the handshake is under way.
    handshake_input: usize,
    /// The completed handshake was counted.
    counted: bool,
}

impl Session {
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    pub fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// Whether the handshake completed since this was last asked (once).
    pub fn take_handshake_done(&mut self) -> bool {
        let done = !self.counted && !self.tls.is_handshaking();
        self.counted |= done;
        done
    }

    /// Writes out the records the session holds. `Ok(true)`: none left.
    pub fn flush_records(&mut self) -> io::Result<bool> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.tcp) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Says goodbye (`close_notify`) as far as the socket takes it.
    pub fn close_notify(&mut self) {
        self.tls.send_close_notify();
        let _ = self.flush_records();
    }

    /// Hands over decrypted bytes, reading and decrypting records until `buf`
    /// is full or the socket has nothing more (see the module's notes).
    fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        loop {
            filled += self.take_plaintext(&mut buf[filled..])?;
            if filled == buf.len() {
                return Ok(filled);
            }
            if self.tls.is_handshaking() && self.handshake_input == 0 {
                self.refuse_plain_http()?;
            }
            let read = match self.tls.read_tls(&mut self.tcp) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if filled > 0 && e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(filled);
                }
                Err(e) => return Err(e),
            };
            if self.tls.is_handshaking() {
                self.handshake_input += read;
                if self.handshake_input > HANDSHAKE_INPUT_MAX {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "handshake too large",
                    ));
                }
            }
            let processed = self.tls.process_new_packets();
            // Handshake messages, an alert for what was refused, a reply to a
            // key update: out as far as the socket takes them (the writable
            // event sends the rest, `Stream::flush_records`).
            let flushed = self.flush_records();
            if let Err(e) = processed {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            flushed?;
            if read == 0 {
                // The peer's end (with or without close_notify: HTTP frames
                // its own messages): what is decrypted, then the end.
                filled += self.take_plaintext(&mut buf[filled..])?;
                return Ok(filled);
            }
        }
    }

    /// Copies decrypted bytes the session holds into `buf`.
    fn take_plaintext(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut taken = 0;
        while taken < buf.len() {
            match self.tls.reader().read(&mut buf[taken..]) {
                Ok(0) => break,
                Ok(n) => taken += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // The socket ended without close_notify: an end like any.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
        }
        Ok(taken)
    }

    /// Before the first byte of a session: a client speaking plain HTTP gets
    /// a plain `400` and the end, rather than a TLS alert it cannot read.
    fn refuse_plain_http(&mut self) -> io::Result<()> {
        let mut first = [0u8; 1];
        match self.tcp.peek(&mut first) {
            Ok(1) if first[0] != HANDSHAKE_RECORD => {}
            _ => return Ok(()),
        }
        // Its request is read first (a head's worth: a client that keeps
        // sending does not keep the loop), so that closing does not reset
        // the answer in flight.
        let mut scratch = [0u8; 4096];
        for _ in 0..PLAIN_READ_MAX / scratch.len() {
            if !matches!(self.tcp.read(&mut scratch), Ok(n) if n > 0) {
                break;
            }
        }
        let _ = self.tcp.write(PLAIN_ON_TLS_PORT);
        let _ = self.tcp.shutdown(std::net::Shutdown::Write);
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "plain HTTP on the TLS port",
        ))
    }

    /// Encrypts and sends `buf` a record at a time, reporting bytes as
    /// written once their record is all in the kernel.
    fn write_plain(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.flush_records()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // The record in flight went out: its bytes are the first of `buf`
        // (the caller offers what it has not seen written; should it offer
        // fewer, the rest is reported at its next offer).
        let mut written = self.in_flight.min(buf.len());
        self.in_flight -= written;
        if self.in_flight > 0 {
            return Ok(written);
        }
        while written < buf.len() {
            let piece = &buf[written..][..(buf.len() - written).min(RECORD_PLAINTEXT)];
            let taken = self.tls.writer().write(piece)?;
            if taken == 0 {
                break;
            }
            if !self.flush_records()? {
                self.in_flight = taken;
                break;
            }
            written += taken;
        }
        if written == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(written)
    }
}

impl Read for Session {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_plain(buf)
    }
}

impl Write for Session {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_plain(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_records().map(|_| ())
    }
}

/// The HTTPS listener and the certificate pair its handshakes use.
pub struct Https {
    pub listener: mio::net::TcpListener,
    pub identity: Identity,
    /// The address it is shown as.
    pub shown: String,
}

impl Https {
    /// Loads the pair and listens on `tls.addr` at `tls.port`, registered
    /// as `token`.
    pub fn open(
        tls: &crate::config::Tls,
        registry: &mio::Registry,
        token: mio::Token,
    ) -> Result<Https, super::ServerError> {
        use super::ServerError;
        let identity = Identity::load(&tls.cert, &tls.key).map_err(ServerError::Tls)?;
        let (mut listener, shown) = super::listen::bind_tcp(&tls.addr, tls.port)?;
        registry
            .register(&mut listener, token, mio::Interest::READABLE)
            .map_err(ServerError::Poll)?;
        Ok(Https {
            listener,
            identity,
            shown,
        })
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.listener.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_to_plain_http_has_its_own_length() {
        let text = std::str::from_utf8(PLAIN_ON_TLS_PORT).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert_eq!(body.lines().count(), 1, "one line");
        assert!(body.ends_with('\n'));
    }
}

//! Shorthands every suite uses: the version the relay reports, the headers its
//! CORS answers expose, and plain requests.

use std::thread;

use super::support::{req, Conn, PARK};

pub const VERSION: &str = "0.1.0";
pub const EXPOSE: &str = "Content-Length, X-Real-IP, X-Real-Port, HttpRelay-Version, \
HttpRelay-Time, HttpRelay-Your-Time, HttpRelay-Method, HttpRelay-Query";

pub fn park() {
    thread::sleep(PARK);
}

pub fn get(path: &str) -> Vec<u8> {
    req("GET", path, &[], b"")
}

pub fn post(path: &str, body: &[u8]) -> Vec<u8> {
    req("POST", path, &[], body)
}

/// Sends `request` and checks that no response arrives while it is parked.
pub fn send_parked(conn: &mut Conn, request: &[u8]) {
    conn.send(request);
    assert!(
        conn.is_silent_for(PARK),
        "a lone link party must wait for its counterpart, but the relay answered"
    );
}

//! What the load generators share: reading a relay response.

use std::io::{self, BufRead};

/// Reads one response head (up to the empty line) and its `Content-Length`
/// body into `body`; returns the status. Chunked responses are not expected.
pub fn read_response<R: BufRead>(reader: &mut R, body: &mut Vec<u8>) -> io::Result<u16> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(bad("connection closed before a response"));
    }
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let mut length = None;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad("connection closed in the head"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(bad("chunked response (not expected here)"));
            }
        }
    }
    let length = length.ok_or_else(|| bad("response without Content-Length"))?;
    body.resize(length, 0);
    reader.read_exact(body)?;
    Ok(status)
}

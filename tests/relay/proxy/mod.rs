//! proxy: a SERVE long-poll loop answers clients' requests through the relay
//! (PROTOCOL.md, proxy).

mod fields;
mod jobs;

use super::support::{req, Conn, Head, Response};

/// The job a SERVE response hands over.
struct Job {
    head: Head,
    body: Vec<u8>,
}

impl Job {
    fn id(&self) -> String {
        self.header("HttpRelay-Proxy-JobId").to_string()
    }

    fn header(&self, name: &str) -> &str {
        self.head
            .header(name)
            .unwrap_or_else(|| panic!("job without {name}: {:?}", self.head))
    }
}

/// Fields the relay writes on its responses itself: none may appear twice in
/// a response, whatever a client or a proxy result sends.
const RELAY_FIELDS: [&str; 11] = [
    "Date",
    "HttpRelay-Version",
    "Access-Control-Allow-Origin",
    "Access-Control-Expose-Headers",
    "Access-Control-Allow-Credentials",
    "Vary",
    "Content-Type",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Keep-Alive",
];

fn assert_relay_fields_once(head: &Head) {
    for name in RELAY_FIELDS {
        let lines = head.header_all(name);
        assert!(lines.len() <= 1, "{name} repeated ({lines:?}): {head:?}");
    }
}

/// Reads a response, which must repeat no relay field.
fn answer(conn: &mut Conn) -> Response {
    let got = conn.read_response();
    assert_relay_fields_once(&got.head);
    got
}

/// Sends a request and reads its response, which must repeat no relay field.
fn ask(conn: &mut Conn, request: &[u8]) -> Response {
    conn.send(request);
    answer(conn)
}

fn read_job(serve: &mut Conn) -> Job {
    let got = answer(serve);
    assert_eq!(got.status(), 200, "SERVE response: {:?}", got.head);
    Job {
        body: got.body().to_vec(),
        head: got.head,
    }
}

fn serve(target: &str) -> Vec<u8> {
    req("SERVE", target, &[], b"")
}

/// A SERVE request carrying the result of `job_id`.
fn result(target: &str, job_id: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut all = vec![("HttpRelay-Proxy-JobId", job_id)];
    all.extend_from_slice(headers);
    req("SERVE", target, &all, body)
}

fn is_job_id(id: &str) -> bool {
    id.len() == 8 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

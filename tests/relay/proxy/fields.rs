//! Header fields: the result's status, the preflight, and the relay's own
//! fields, which neither a client nor a result can forge or repeat.

use std::thread;

use super::{answer, ask, read_job, result, serve};
use crate::support::{chunked, req, send_waiting, Relay, Response, PARK};

#[test]
fn proxy_status_absent_or_invalid_is_200() {
    let relay = Relay::start();
    let mut server = relay.connect();
    server.send(&serve("/proxy/st"));
    thread::sleep(PARK);
    let mut client = relay.connect();
    let cases: [(Option<&str>, u16); 9] = [
        (None, 200),
        (Some("abc"), 200),
        (Some(""), 200),
        (Some("1000"), 200),
        (Some("99"), 200),
        (Some("-200"), 200),
        (Some("42x"), 200),
        (Some("418"), 418),
        (Some("999"), 999),
    ];
    for (status, expected) in cases {
        client.send(&req("GET", "/proxy/st", &[], b""));
        let job = read_job(&mut server);
        assert_eq!(job.header("HttpRelay-Proxy-Path"), "/", "empty path is /");
        let id = job.id();
        let mut headers = vec![("HttpRelay-Proxy-Headers", "")];
        if let Some(s) = status {
            headers.push(("HttpRelay-Proxy-Status", s));
        }
        server.send(&result("/proxy/st", &id, &headers, b"status test"));
        let got = answer(&mut client);
        assert_eq!(got.status(), expected, "HttpRelay-Proxy-Status {status:?}");
        assert_eq!(
            got.body(),
            b"status test",
            "HttpRelay-Proxy-Status {status:?}"
        );
    }
}

#[test]
fn proxy_preflight_allows_any_header() {
    let relay = Relay::start();
    let mut conn = relay.connect();
    let pre: Response = ask(
        &mut conn,
        &req(
            "OPTIONS",
            "/proxy/srv/any/path",
            &[
                ("Origin", "https://app.example"),
                ("Access-Control-Request-Method", "PUT"),
                ("Access-Control-Request-Headers", "x-anything"),
            ],
            b"",
        ),
    );
    assert_eq!(pre.status(), 200);
    assert_eq!(pre.body(), b"");
    assert_eq!(pre.header("Access-Control-Allow-Headers"), Some("*"));

    // A preflight is not a client request: a SERVE afterwards gets nothing.
    let mut server = relay.connect();
    send_waiting(
        &mut server,
        &serve("/proxy/srv"),
        "a SERVE after a preflight only",
    );
}

#[test]
fn client_fields_cannot_forge_the_relays_own_fields() {
    let relay = Relay::start();
    let mut server = relay.connect();
    send_waiting(
        &mut server,
        &req(
            "SERVE",
            "/proxy/forge",
            &[("Origin", "http://page.example")],
            b"",
        ),
        "a SERVE",
    );
    let mut client = relay.connect();
    client.send(&req(
        "GET",
        "/proxy/forge/x",
        &[
            ("Access-Control-Allow-Origin", "http://evil.example"),
            ("HttpRelay-Proxy-JobId", "AAAAAAAA"),
            ("Vary", "Evil"),
            ("X-Kept", "yes"),
        ],
        b"",
    ));
    let job = answer(&mut server);
    assert_eq!(job.status(), 200);
    let head = &job.head;
    assert_eq!(
        head.header_all("Access-Control-Allow-Origin"),
        vec!["http://page.example"]
    );
    let ids = head.header_all("HttpRelay-Proxy-JobId");
    assert_eq!(ids.len(), 1, "one job id: {ids:?}");
    assert_ne!(ids[0], "AAAAAAAA");
    assert!(!head.header_all("Vary").contains(&"Evil"));
    assert_eq!(
        head.header("X-Kept"),
        Some("yes"),
        "ordinary client fields are forwarded"
    );
    let job_id = ids[0].to_string();
    server.send(&req(
        "SERVE",
        "/proxy/forge",
        &[("HttpRelay-Proxy-JobId", &job_id)],
        b"ok",
    ));
    assert_eq!(answer(&mut client).body(), b"ok");
}

/// A request's extra header fields.
type Fields = &'static [(&'static str, &'static str)];

/// What the client's response must carry of one field.
#[derive(Debug)]
enum Carries {
    /// Exactly one line with this value.
    Once(&'static str),
    /// No line at all.
    Absent,
}

#[test]
fn proxy_result_replaces_the_relays_own_fields_once() {
    let version = env!("CARGO_PKG_VERSION");
    // (field named in HttpRelay-Proxy-Headers, the result's line for it, the
    // client's extra request fields, what the client's response carries).
    let cases: [(&str, &str, Fields, Carries); 14] = [
        (
            "Access-Control-Allow-Origin",
            "https://app.example",
            &[],
            Carries::Once("https://app.example"),
        ),
        (
            "Access-Control-Allow-Origin",
            "https://app.example",
            &[("Origin", "https://page.example")],
            Carries::Once("https://app.example"),
        ),
        (
            "access-control-allow-origin",
            "null",
            &[("Origin", "https://page.example")],
            Carries::Once("null"),
        ),
        (
            "Access-Control-Expose-Headers",
            "X-Custom, Content-Length",
            &[],
            Carries::Once("X-Custom, Content-Length"),
        ),
        (
            "Access-Control-Allow-Credentials",
            "true",
            &[("Origin", "https://page.example")],
            Carries::Once("true"),
        ),
        // The relay reflects the client's Origin, so its Vary keeps Origin.
        (
            "Vary",
            "Accept-Encoding",
            &[("Origin", "https://page.example")],
            Carries::Once("Accept-Encoding, Origin"),
        ),
        (
            "Vary",
            "origin, Accept",
            &[("Origin", "https://page.example")],
            Carries::Once("origin, Accept"),
        ),
        (
            "Vary",
            "Accept-Encoding",
            &[],
            Carries::Once("Accept-Encoding"),
        ),
        (
            "Date",
            "Tue, 01 Jan 2030 00:00:00 GMT",
            &[],
            Carries::Once("Tue, 01 Jan 2030 00:00:00 GMT"),
        ),
        // This relay's version, never the result's.
        ("HttpRelay-Version", "9.9.9", &[], Carries::Once(version)),
        // Framing and connection fields stay the relay's.
        ("Content-Length", "11", &[], Carries::Once("11")),
        (
            "Connection",
            "keep-alive",
            &[("Connection", "close")],
            Carries::Once("close"),
        ),
        ("Keep-Alive", "timeout=5", &[], Carries::Absent),
        // Content-Type is always the result's, once.
        (
            "Content-Type",
            "text/x-result",
            &[],
            Carries::Once("text/x-result"),
        ),
    ];
    let relay = Relay::start();
    let mut server = relay.connect();
    server.send(&serve("/proxy/own"));
    thread::sleep(PARK);
    for (field, value, client_fields, expected) in cases {
        let what = format!("{field}: {value} with {client_fields:?}");
        let mut client = relay.connect();
        client.send(&req("GET", "/proxy/own/x", client_fields, b""));
        let job = read_job(&mut server);
        server.send(&result(
            "/proxy/own",
            &job.id(),
            &[("HttpRelay-Proxy-Headers", field), (field, value)],
            b"result body",
        ));
        let got = answer(&mut client);
        assert_eq!(got.status(), 200, "{what}: {:?}", got.head);
        assert_eq!(got.body(), b"result body", "{what}");
        let lines = got.head.header_all(field);
        match expected {
            Carries::Once(v) => assert_eq!(lines, vec![v], "{what}: {:?}", got.head),
            Carries::Absent => assert!(lines.is_empty(), "{what}: {:?}", got.head),
        }
    }

    // A chunked result that names Transfer-Encoding: one chunked coding.
    let mut client = relay.connect();
    client.send(&req("GET", "/proxy/own/x", &[], b""));
    let job = read_job(&mut server);
    let mut chunked_result = req(
        "SERVE",
        "/proxy/own",
        &[
            ("HttpRelay-Proxy-JobId", &job.id()),
            ("HttpRelay-Proxy-Headers", "Transfer-Encoding"),
            ("Transfer-Encoding", "chunked"),
        ],
        b"",
    );
    chunked_result.extend_from_slice(&chunked(&[b"in ", b"pieces"], true));
    server.send(&chunked_result);
    let got = answer(&mut client);
    assert_eq!(got.head.header_all("Transfer-Encoding"), vec!["chunked"]);
    assert_eq!(got.body(), b"in pieces");
}

#[test]
fn proxy_result_relay_fields_are_written_once_however_named() {
    let relay = Relay::start();
    let mut server = relay.connect();
    server.send(&serve("/proxy/lines"));
    thread::sleep(PARK);
    let mut client = relay.connect();
    client.send(&req(
        "GET",
        "/proxy/lines/x",
        &[("Origin", "https://page.example")],
        b"",
    ));
    let job = read_job(&mut server);
    server.send(&result(
        "/proxy/lines",
        &job.id(),
        &[
            // Named twice, on two lines, in any case; Date named but not sent.
            ("HttpRelay-Proxy-Headers", "Vary, X-Twice, Date"),
            ("HttpRelay-Proxy-Headers", "vary,x-twice, X-Multi"),
            ("Vary", "Accept"),
            ("X-Twice", "once"),
            ("vary", "Accept-Encoding"),
            ("X-Multi", "a"),
            ("X-Multi", "b"),
        ],
        b"ok",
    ));
    let got = answer(&mut client);
    let head = &got.head;
    assert_eq!(
        head.header_all("Vary"),
        vec!["Accept, Accept-Encoding, Origin"],
        "the result's Vary lines joined, in place of the relay's, Origin kept: {head:?}"
    );
    assert_eq!(head.header_all("X-Twice"), vec!["once"], "{head:?}");
    assert_eq!(
        head.header_all("X-Multi"),
        vec!["a", "b"],
        "an ordinary field keeps its lines: {head:?}"
    );
    assert_eq!(
        head.header_all("Access-Control-Allow-Origin"),
        vec!["https://page.example"],
        "not named: the relay's own: {head:?}"
    );
    assert_eq!(
        head.header_all("Date").len(),
        1,
        "named but not sent: the relay's own: {head:?}"
    );
    assert_eq!(got.body(), b"ok");
}

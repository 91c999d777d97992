//! Request head parsing: unit tests.

use super::*;

fn parse(raw: &str) -> Result<Option<(usize, Request)>, HeadError> {
    let mut req = Request::default();
    parse_request(raw.as_bytes(), 16 * 1024, &mut req).map(|n| n.map(|n| (n, req)))
}

fn ok(raw: &str) -> Request {
    parse(raw).expect("valid").expect("complete").1
}

#[test]
fn simple_get_is_keep_alive_without_body() {
    let raw = "get /link/abc?x=1 HTTP/1.1\r\nHost: h\r\n\r\nextra";
    let (n, req) = parse(raw).unwrap().unwrap();
    assert_eq!(n, raw.len() - "extra".len());
    assert_eq!(req.method, b"GET");
    assert_eq!(req.path, b"/link/abc");
    assert_eq!(req.query, b"x=1");
    assert!(req.keep_alive);
    assert_eq!(req.framing(), Framing::Empty);
}

#[test]
fn incomplete_head_asks_for_more() {
    assert!(parse("GET / HTTP/1.1\r\nHost: h\r\n").unwrap().is_none());
    assert!(parse("GE").unwrap().is_none());
}

#[test]
fn head_over_the_limit_is_431() {
    let mut req = Request::default();
    let long = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
        "a".repeat(100)
    );
    assert_eq!(
        parse_request(long.as_bytes(), 64, &mut req),
        Err(HeadError::TooLarge)
    );
    assert_eq!(
        parse_request(&long.as_bytes()[..70], 64, &mut req),
        Err(HeadError::TooLarge)
    );
    assert_eq!(HeadError::TooLarge.status(), 431);
}

#[test]
fn too_many_fields_is_431() {
    let mut raw = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
    for i in 0..MAX_HEADER_FIELDS {
        raw.push_str(&format!("X-{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    assert_eq!(parse(&raw).unwrap_err(), HeadError::TooManyFields);
}

#[test]
fn framing_rules() {
    assert_eq!(
        ok("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n").framing(),
        Framing::Length(12)
    );
    assert_eq!(
        ok("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n").framing(),
        Framing::Chunked
    );
    assert_eq!(
        ok("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\n")
            .framing(),
        Framing::Length(3)
    );
}

#[test]
fn smuggling_shapes_are_refused() {
    let cases = [
        (
            "Content-Length: 3\r\nTransfer-Encoding: chunked",
            HeadError::LengthAndTransferEncoding,
        ),
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 3",
            HeadError::LengthAndTransferEncoding,
        ),
        (
            "Content-Length: 3\r\nContent-Length: 4",
            HeadError::ConflictingContentLength,
        ),
        ("Content-Length: 3, 3", HeadError::BadContentLength),
        ("Content-Length: -3", HeadError::BadContentLength),
        ("Content-Length: +3", HeadError::BadContentLength),
        (
            "Content-Length: 99999999999999999999",
            HeadError::BadContentLength,
        ),
        (
            "Transfer-Encoding: gzip, chunked",
            HeadError::UnsupportedTransferEncoding,
        ),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            HeadError::UnsupportedTransferEncoding,
        ),
        (
            "Transfer-Encoding: identity",
            HeadError::UnsupportedTransferEncoding,
        ),
    ];
    for (fields, expected) in cases {
        let raw = format!("POST /link/x HTTP/1.1\r\nHost: h\r\n{fields}\r\n\r\n");
        assert_eq!(parse(&raw).unwrap_err(), expected, "{fields}");
    }
    assert_eq!(
        parse("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap_err(),
        HeadError::TransferEncodingInHttp10
    );
}

#[test]
fn obs_fold_is_refused() {
    let raw = "GET / HTTP/1.1\r\nHost: h\r\nX-A: one\r\n two\r\n\r\n";
    assert!(matches!(parse(raw), Err(HeadError::Syntax(_))));
}

#[test]
fn host_is_required_once_in_http11() {
    assert_eq!(
        parse("GET / HTTP/1.1\r\n\r\n").unwrap_err(),
        HeadError::MissingHost
    );
    assert_eq!(
        parse("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").unwrap_err(),
        HeadError::DuplicateHost
    );
    assert!(!ok("GET / HTTP/1.0\r\n\r\n").keep_alive);
}

#[test]
fn persistence_follows_version_and_connection() {
    assert!(!ok("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").keep_alive);
    assert!(ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    assert!(!ok("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
}

#[test]
fn expect_continue() {
    assert!(ok("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n\r\n").expect_continue);
    assert!(!ok("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
    assert_eq!(
        parse("PUT / HTTP/1.1\r\nHost: h\r\nExpect: tea\r\n\r\n").unwrap_err(),
        HeadError::UnsupportedExpectation
    );
}

#[test]
fn targets() {
    let req = ok("GET http://example.com/link/a%20b?q HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(
        (req.path.as_slice(), req.query.as_slice()),
        (&b"/link/a b"[..], &b"q"[..])
    );
    let req = ok("GET http://example.com HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(req.path, b"/");
    let req = ok("GET http://example.com?x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(
        (req.path.as_slice(), req.query.as_slice()),
        (&b"/"[..], &b"x=1"[..])
    );
    assert_eq!(
        ok("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").target,
        Some(Target::Asterisk)
    );
    assert_eq!(
        parse("GET link HTTP/1.1\r\nHost: h\r\n\r\n").unwrap_err(),
        HeadError::BadTarget
    );
    assert_eq!(
        parse("GET /a%zz HTTP/1.1\r\nHost: h\r\n\r\n").unwrap_err(),
        HeadError::BadPercentEncoding
    );
    assert_eq!(
        parse("GET /a%4 HTTP/1.1\r\nHost: h\r\n\r\n").unwrap_err(),
        HeadError::BadPercentEncoding
    );
    let req = ok("GET /link/%2f%FF HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(req.path, b"/link//\xff");
}

#[test]
fn relay_fields_are_captured_and_reset() {
    let mut req = Request::default();
    let raw = "POST /x HTTP/1.1\r\nHost: h\r\nOrigin: https://a.example\r\nContent-Type: text/plain\r\nHttpRelay-WSecret: s3\r\n\r\n";
    parse_request(raw.as_bytes(), 1024, &mut req)
        .unwrap()
        .unwrap();
    assert_eq!(req.origin, b"https://a.example");
    assert_eq!(req.content_type, b"text/plain");
    assert_eq!(req.wsecret_header, b"s3");
    parse_request(b"GET /y HTTP/1.1\r\nHost: h\r\n\r\n", 1024, &mut req)
        .unwrap()
        .unwrap();
    assert!(req.origin.is_empty() && req.content_type.is_empty() && req.wsecret_header.is_empty());
}

#[test]
fn seqid_cookie() {
    let seq = |cookie: &str| {
        ok(&format!(
            "GET / HTTP/1.1\r\nHost: h\r\nCookie: {cookie}\r\n\r\n"
        ))
        .cookie_seqid
    };
    assert_eq!(seq("a=1; SeqId=7; b=2"), Some(7));
    assert_eq!(seq("SeqId=x"), Some(0));
    assert_eq!(seq("seqid=3"), None);
    assert_eq!(ok("GET / HTTP/1.1\r\nHost: h\r\n\r\n").cookie_seqid, None);
}

#[test]
fn event_stream_accept_and_last_event_id() {
    let req = |fields: &str| ok(&format!("GET / HTTP/1.1\r\nHost: h\r\n{fields}\r\n"));
    let accepts = |value: &str| req(&format!("Accept: {value}\r\n")).accepts_event_stream;
    assert!(accepts("text/event-stream"));
    assert!(accepts("text/html, Text/Event-Stream;q=0.9"));
    assert!(!accepts("text/html, */*"));
    assert!(!req("").accepts_event_stream);
    let id = |value: &str| req(&format!("Last-Event-ID: {value}\r\n")).last_event_id;
    assert_eq!(id("41"), Some(41));
    assert_eq!(id("-1"), None);
    assert_eq!(id("4x"), None);
    assert_eq!(id("99999999999999999999999"), None, "too large");
    assert_eq!(req("").last_event_id, None);
}

#[test]
fn raw_path_keeps_escapes() {
    let req = ok("GET /mcast/a%20b?x HTTP/1.1\r\nHost: h:81\r\n\r\n");
    assert_eq!(req.raw_path, b"/mcast/a%20b");
    assert_eq!(req.host, b"h:81");
}

#[test]
fn garbage_is_a_syntax_error() {
    assert!(matches!(
        parse("\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03\r\n\r\n"),
        Err(HeadError::Syntax(_))
    ));
    assert!(matches!(
        parse("GET / HTTP/2.0\r\n\r\n"),
        Err(HeadError::Syntax(_))
    ));
    assert!(matches!(
        parse("GET /a b HTTP/1.1\r\nHost: h\r\n\r\n"),
        Err(HeadError::Syntax(_))
    ));
}

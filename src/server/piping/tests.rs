//! The piping routes' rules, and the routes in a whole server (`server::testing`).

use super::*;

#[test]
fn n_is_read_as_parse_int_reads_it() {
    let mut scratch = Vec::new();
    let cases: [(&[u8], Result<u64, NotCount>); 12] = [
        (b"", Ok(1)),
        (b"x=2", Ok(1)),
        (b"n=3", Ok(3)),
        (b"n=1.5", Ok(1)),
        (b"n=2abc", Ok(2)),
        (b"n=+2", Ok(2)),
        (b"n=%32", Ok(2)),
        (b"n=2&n=1", Ok(2)),
        (b"n=0x10", Err(NotCount::NotPositive(0))),
        (b"n=-1", Err(NotCount::NotPositive(-1))),
        (b"n=", Err(NotCount::NotANumber)),
        (b"n=abc", Err(NotCount::NotANumber)),
    ];
    for (query, expected) in cases {
        let got = receivers_asked(query, &mut scratch);
        assert_eq!(got, expected, "{}", String::from_utf8_lossy(query));
    }
}

#[test]
fn paths_keep_escapes_and_lose_dot_segments() {
    let mut out = Vec::new();
    for (raw, expected) in [
        (&b"/p1/"[..], &b"/p1/"[..]),
        (b"/x/../p6", b"/p6"),
        (b"/p7/./q", b"/p7/q"),
        (b"/%70%35", b"/%70%35"),
        (b"/", b"/"),
        (b"/a/..", b"/"),
        (b"/a/b/.", b"/a/b/"),
        (b"/../..", b"/"),
    ] {
        normalize_path(raw, &mut out);
        assert_eq!(out, expected, "{}", String::from_utf8_lossy(raw));
    }
}

// ---- the piping routes in a whole server (server::testing) ----------------

use crate::server::testing::{body_of, status_of, Client, Shell};

fn piping() -> Shell {
    Shell::new(&["--piping"])
}

fn send(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: r\r\nContent-Type: text/html; charset=utf-8\r\n\
         X-Piping: a\r\nX-Piping: b\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn receive(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: r\r\n\r\n").into_bytes()
}

/// The progress lines a sender has received so far (chunk framing removed).
fn lines(sender: &mut Client) -> String {
    let text = sender.text();
    let body = match text.starts_with("HTTP/") {
        true => text.split_once("\r\n\r\n").map_or("", |(_, b)| b),
        false => text.as_str(),
    };
    body.split("\r\n")
        .filter(|part| part.starts_with('['))
        .collect()
}

#[test]
fn a_sender_first_hears_of_each_step_and_its_receiver_gets_its_fields() {
    let mut shell = piping();
    let (mut sender, head) = shell.ask(&send("/a/../p", "<b>hi</b>"));
    assert_eq!(status_of(&head), 200);
    assert!(
        head.contains("\r\nTransfer-Encoding: chunked\r\n"),
        "{head}"
    );
    assert!(
        head.ends_with("24\r\n[INFO] Waiting for 1 receiver(s)...\n\r\n"),
        "{head}"
    );
    let (_receiver, got) = shell.ask(&receive("/p?x=1"));
    assert_eq!(status_of(&got), 200);
    for field in [
        "Content-Type: text/plain; charset=utf-8",
        "Content-Length: 9",
        "X-Piping: a",
        "X-Piping: b",
        "Access-Control-Allow-Origin: *",
        "Access-Control-Expose-Headers: X-Piping",
        "X-Robots-Tag: none",
    ] {
        assert!(
            got.contains(&format!("\r\n{field}\r\n")),
            "{field} in {got}"
        );
    }
    assert!(!got.contains("HttpRelay"), "none of the relay's own fields");
    assert_eq!(body_of(&got), "<b>hi</b>");
    assert_eq!(
        lines(&mut sender),
        "[INFO] A receiver was connected.\n[INFO] Start sending to 1 receiver(s)!\n\
         [INFO] Sent successfully!\n[INFO] All receiver(s) was/were received successfully.\n"
    );
    assert_eq!(
        shell.server.relay.channel_count(),
        0,
        "the path is free again"
    );
}

#[test]
fn receivers_first_then_the_sender_hears_how_many_wait() {
    let mut shell = piping();
    let mut receivers = [shell.connect(), shell.connect()];
    for receiver in receivers.iter_mut() {
        receiver.send(&mut shell, &receive("/two?n=2"));
    }
    let (mut sender, head) = shell.ask(&send("/two?n=2", "both"));
    // The body came with the head: the whole transfer is over at once.
    assert!(head.contains(
        "[INFO] Waiting for 2 receiver(s)...\n\r\n2e\r\n[INFO] 2 receiver(s) has/have been connected.\n"
    ));
    for receiver in receivers.iter_mut() {
        assert_eq!(body_of(&receiver.text()), "both");
    }
    assert!(head.ends_with("[INFO] All receiver(s) was/were received successfully.\n\r\n0\r\n\r\n"));
    assert!(!sender.closed());
}

#[test]
fn refusals_are_one_error_line_as_the_reference_words_them() {
    let mut shell = piping();
    let (_waiting, _) = shell.ask(&receive("/r?n=2"));
    for (request, status, text) in [
        (send("/r?n=3", "x"), 400, "[ERROR] The number of receivers should be 2 but 3.\n"),
        (receive("/r"), 400, "[ERROR] The number of receivers should be 2 but 1.\n"),
        (receive("/r?n=abc"), 400, "[ERROR] Invalid query parameter \"n\"\n"),
        (send("/r?n=abc", "x"), 400, "[ERROR] Invalid \"n\" query parameter\n"),
        (receive("/r?n=0"), 400, "[ERROR] n should > 0, but n = 0.\n"),
        (receive("/r?n=65"), 400, "[ERROR] n should be at most 64, but n = 65.\n"),
        (send("/help", "x"), 400, "[ERROR] Cannot send to the reserved path '/help'. (e.g. '/mypath123')\n"),
        (
            b"GET /r HTTP/1.1\r\nHost: r\r\nService-Worker: script\r\n\r\n".to_vec(),
            400,
            "[ERROR] Service Worker registration is rejected.\n",
        ),
        (
            b"PUT /r HTTP/1.1\r\nHost: r\r\nContent-Range: bytes 0-0/1\r\nContent-Length: 1\r\n\r\nx".to_vec(),
            400,
            "[ERROR] Content-Range is not supported for now in PUT\n",
        ),
        (b"DELETE /r HTTP/1.1\r\nHost: r\r\n\r\n".to_vec(), 405, "[ERROR] Unsupported method: DELETE.\n"),
    ] {
        let (_client, answer) = shell.ask(&request);
        assert!(!answer.is_empty(), "{}", String::from_utf8_lossy(&request));
        assert_eq!((status_of(&answer), body_of(&answer)), (status, text), "{answer}");
    }
    // A body still on its way keeps the transfer under way.
    let (_sender, _) = shell.ask(b"POST /s HTTP/1.1\r\nHost: r\r\nContent-Length: 5\r\n\r\nx");
    let (_again, answer) = shell.ask(&send("/s", "y"));
    assert_eq!(
        body_of(&answer),
        "[ERROR] Another sender has been connected on '/s'.\n"
    );
    let (_receiver, _) = shell.ask(&receive("/s"));
    let (_late, answer) = shell.ask(&receive("/s"));
    assert_eq!(
        body_of(&answer),
        "[ERROR] Connection on '/s' has been established already.\n"
    );
    assert_eq!(
        shell.server.relay.waiter_count(),
        1,
        "only the first receiver of /r waits"
    );
}

#[test]
fn a_receiver_that_leaves_a_broadcast_is_dropped_and_the_others_get_everything() {
    let mut shell = piping();
    let mut receivers = [shell.connect(), shell.connect(), shell.connect()];
    for receiver in receivers.iter_mut() {
        receiver.send(&mut shell, &receive("/b?n=3"));
    }
    let mut sender = shell.connect();
    sender.send(
        &mut shell,
        b"PUT /b?n=3 HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    );
    let [first, mut second, mut third] = receivers;
    first.close(&mut shell);
    sender.send(&mut shell, b"2\r\nde\r\n0\r\n\r\n");
    for receiver in [&mut second, &mut third] {
        let got = receiver.text();
        assert!(
            got.ends_with("\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
            "{got}"
        );
    }
    let said = lines(&mut sender);
    assert_eq!(
        said.matches("[INFO] A receiver aborted.\n").count(),
        1,
        "{said}"
    );
    assert!(said.ends_with("[INFO] All receiver(s) was/were received successfully.\n"));
    assert_eq!(shell.server.relay.channel_count(), 0);
}

#[test]
fn the_last_receiver_leaving_ends_the_senders_response() {
    let mut shell = piping();
    let (mut sender, _) =
        shell.ask(b"PUT /l HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
    let (receiver, _) = shell.ask(&receive("/l"));
    receiver.close(&mut shell);
    assert!(lines(&mut sender).ends_with(
        "[INFO] A receiver aborted.\n[INFO] All receiver(s) was/were aborted halfway.\n"
    ));
    assert!(
        sender.closed(),
        "the sender's body is unread: it lingers, sending side shut"
    );
    assert_eq!(shell.server.relay.channel_count(), 0);
}

#[test]
fn a_waiting_sender_gets_a_last_line_at_the_wait_timeout_and_at_shutdown() {
    let mut shell = Shell::new(&["--piping", "--wait-timeout", "5"]);
    let (mut sender, _) = shell.ask(&send("/w", "x"));
    shell.advance(std::time::Duration::from_secs(6));
    assert_eq!(
        lines(&mut sender),
        "[ERROR] No receiver came within the wait timeout.\n"
    );
    assert!(sender.closed());
    assert_eq!(shell.server.relay.waiter_count(), 0);
    let (mut other, _) = shell.ask(&send("/w2", "x"));
    shell.server.begin_shutdown();
    shell.settle();
    assert_eq!(lines(&mut other), "[ERROR] The server is shutting down.\n");
}

#[test]
fn an_http_1_0_sender_gets_plain_lines_until_the_connection_closes() {
    let mut shell = piping();
    let (mut sender, head) = shell.ask(b"POST /o HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi");
    assert!(!head.contains("Transfer-Encoding"), "{head}");
    assert!(
        head.ends_with("\r\n\r\n[INFO] Waiting for 1 receiver(s)...\n"),
        "{head}"
    );
    let (_receiver, got) = shell.ask(&receive("/o"));
    assert_eq!(body_of(&got), "hi");
    assert!(sender
        .text()
        .ends_with("[INFO] All receiver(s) was/were received successfully.\n"));
    assert!(sender.closed());
}

#[test]
fn reserved_paths_and_the_preflight() {
    let mut shell = piping();
    let (_c, version) = shell.ask(&receive("/version"));
    assert_eq!(body_of(&version), format!("{}\n", reply::VERSION));
    let (_c, help) = shell.ask(b"GET /help HTTP/1.1\r\nHost: relay.example:8080\r\n\r\n");
    assert!(body_of(&help).contains("curl -T myfile http://relay.example:8080/mypath\n"));
    let (_c, head) = shell.ask(b"HEAD /help HTTP/1.1\r\nHost: r\r\n\r\n");
    assert_eq!(body_of(&head), "", "HEAD: the head only");
    let (_c, favicon) = shell.ask(&receive("/favicon.ico"));
    assert_eq!(status_of(&favicon), 204);
    assert!(!favicon.contains("Content-Length"));
    let (_c, preflight) = shell.ask(
        b"OPTIONS /x HTTP/1.1\r\nHost: r\r\nAccess-Control-Request-Private-Network: true\r\n\r\n",
    );
    assert!(preflight.contains("\r\nAccess-Control-Allow-Private-Network: true\r\n"));
    assert!(preflight.contains(
        "\r\nAccess-Control-Allow-Headers: Content-Type, Content-Disposition, X-Piping\r\n"
    ));
    let (_c, own) = shell.ask(&receive("/health"));
    assert_eq!(
        body_of(&own),
        reply::VERSION,
        "the relay's own routes keep their meaning"
    );
}

#[test]
fn without_the_flag_other_paths_stay_404() {
    let mut shell = Shell::new(&[]);
    let (_c, answer) = shell.ask(&send("/p", "x"));
    assert_eq!(status_of(&answer), 404);
}

/// The content of a chunked body.
fn dechunk(mut body: &str) -> String {
    let mut content = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size, 16).expect("a chunk size");
        if size == 0 || rest.len() < size {
            break;
        }
        content.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").unwrap_or_default();
    }
    content
}

fn form_sender(path: &str, body_len: usize) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: r\r\nX-Piping: f\r\n\
         Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {body_len}\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn a_form_uploads_first_part_goes_to_every_receiver_with_its_own_fields() {
    let body: &[u8] =
        b"--XyZ\r\nContent-Disposition: form-data; name=\"input_file\"; filename=\"a.html\"\r\n\
        Content-Type: text/html\r\n\r\nline\r\n--Xy\r\nmore\r\n--XyZ\r\n\
        Content-Disposition: form-data; name=\"second\"\r\n\r\ndropped\r\n--XyZ--\r\n";
    let mut shell = piping();
    let mut receivers = [shell.connect(), shell.connect()];
    for receiver in receivers.iter_mut() {
        receiver.send(&mut shell, &receive("/f?n=2"));
    }
    let (mut sender, _) = shell.ask(&form_sender("/f?n=2", body.len()));
    // Cut so that delimiters straddle the pieces.
    for piece in body.chunks(7) {
        sender.send(&mut shell, piece);
    }
    for receiver in receivers.iter_mut() {
        let got = receiver.text();
        assert_eq!(status_of(&got), 200);
        for field in [
            "Content-Type: text/plain",
            "Content-Disposition: form-data; name=\"input_file\"; filename=\"a.html\"",
            "X-Piping: f",
            "Transfer-Encoding: chunked",
        ] {
            assert!(
                got.contains(&format!("\r\n{field}\r\n")),
                "{field} in {got}"
            );
        }
        assert_eq!(dechunk(body_of(&got)), "line\r\n--Xy\r\nmore", "{got}");
        assert!(got.ends_with("\r\n0\r\n\r\n"));
    }
    assert!(
        lines(&mut sender).ends_with("[INFO] All receiver(s) was/were received successfully.\n")
    );
    assert_eq!(shell.server.relay.channel_count(), 0);
}

#[test]
fn a_form_that_never_closes_its_part_cuts_the_receivers_short_and_tells_the_sender() {
    let body: &[u8] = b"--XyZ\r\nContent-Disposition: form-data; name=\"t\"\r\n\r\npartial";
    let mut shell = piping();
    let (mut receiver, _) = shell.ask(&receive("/u"));
    let mut request = form_sender("/u", body.len());
    request.extend_from_slice(body);
    let (_sender, said) = shell.ask(&request);
    let got = receiver.text();
    assert!(
        got.ends_with("\r\n\r\n7\r\npartial\r\n"),
        "no last chunk: {got}"
    );
    assert!(receiver.closed());
    assert!(dechunk(body_of(&said)).ends_with(
        "[ERROR] The upload is not valid multipart/form-data (multipart body ended before its last boundary).\n"
    ));
    assert_eq!(shell.server.relay.channel_count(), 0);
}

#[test]
fn the_pages_send_to_a_path_and_the_form_page_allows_no_script() {
    let mut shell = piping();
    let (_c, index) = shell.ask(&receive("/"));
    assert_eq!(status_of(&index), 200);
    assert!(index.contains("\r\nContent-Type: text/html; charset=utf-8\r\n"));
    assert!(body_of(&index).contains("xhr.open('POST', base + '/' + path)"));
    let (_c, page) = shell.ask(&receive("/noscript?path=%22%3E%3Cx%7Bnonce%7D&mode=text"));
    let policy = page
        .split("\r\nContent-Security-Policy: ")
        .nth(1)
        .and_then(|rest| rest.split("\r\n").next())
        .expect("a policy");
    let nonce = policy
        .strip_prefix("default-src 'none'; style-src 'nonce-")
        .and_then(|n| n.strip_suffix('\''))
        .expect("a style nonce");
    assert_eq!(nonce.len(), 24);
    let body = body_of(&page);
    assert!(body.contains(&format!("<style nonce=\"{nonce}\">")));
    assert!(!body.contains("<script"));
    assert!(
        body.contains(r#"action="&quot;&gt;&lt;x&#123;nonce&#125;""#),
        "the path is escaped, placeholders included: {body}"
    );
    assert!(body.contains(r#"<textarea name="input_text">"#));
    let (_c, again) = shell.ask(&receive("/noscript"));
    assert!(!again.contains(nonce), "a fresh nonce per page");
    assert!(body_of(&again).contains(r#"<input type="file" name="input_file" disabled>"#));
}

#[test]
fn a_length_body_to_several_receivers_arrives_whole_when_its_last_bytes_come_alone() {
    let mut shell = piping();
    let mut receivers = [shell.connect(), shell.connect()];
    for receiver in receivers.iter_mut() {
        receiver.send(&mut shell, &receive("/z?n=2"));
    }
    let (mut sender, _) =
        shell.ask(b"PUT /z?n=2 HTTP/1.1\r\nHost: r\r\nContent-Length: 10\r\n\r\n");
    for receiver in receivers.iter_mut() {
        assert!(receiver.text().ends_with("Content-Length: 10\r\n\r\n"));
    }
    // The whole body in one piece, after the heads: it goes through the stage
    // pipe, and the transfer ends only once the receivers have it.
    sender.send(&mut shell, b"0123456789");
    for receiver in receivers.iter_mut() {
        assert_eq!(receiver.text(), "0123456789");
        assert!(!receiver.closed());
    }
    assert!(
        lines(&mut sender).ends_with("[INFO] All receiver(s) was/were received successfully.\n")
    );
}

#!/usr/bin/env python3
"""Runs the same `/inbox/{id}` exchanges against pubky's http-relay 0.7.0 and
the relay and compares what every client sees: status code, body bytes, the
content type of a message (GET and HEAD of a stored message only: the
producer's type, or application/octet-stream), the content length of a HEAD,
whether a 405 names the allowed methods, when each answer came (at once / after the inbox timeout / when another party acted) and
whether the connection stayed open. Other header fields differ by design and
are not compared: the relay's header names are capitalised, it adds its own
fields and CORS fields (always; the reference only with --cors-allow-all),
its error and empty answers are not labelled application/octet-stream, and
its 405 `Allow` lists the methods its own way. Not compared at all: the
reference's --max-entries (it evicts its oldest entry; the relay answers 503
when --inbox-total or --max-channels is reached) and its 15-second cleanup
(whose removals can end waits with 404 there).

    scripts/inbox-compare.py [-v] REFERENCE_PORT OURS_PORT [SCENARIO...]

(-v prints every answer of both servers, also for scenarios that agree.)

Both servers need a 2-second inbox timeout, a 4-second TTL and a 2048-byte
message limit:
    http-relay --port REFERENCE_PORT --inbox-timeout 2 --inbox-cache-ttl 4
    httprelay -a 127.0.0.1 -p OURS_PORT --inbox-timeout 2 --inbox-ttl 4 --inbox-max-message 2048
Each scenario runs against both servers at the same time (with different ids).
Prints one line per scenario (same / known / DIFFERENT, with the differences)
and exits 1 when a scenario differs beyond what KNOWN leaves out.
"""
import select
import socket
import sys
import threading
import time

TIMEOUT = 2.0  # --inbox-timeout
TTL = 4.0  # --inbox-ttl / --inbox-cache-ttl
LIMIT = 2048  # --inbox-max-message / --max-body-size
QUIET = 0.15  # seconds without bytes after which the parties are settled
SLACK = 0.4  # how far from TIMEOUT an answer "after the timeout" may come


class Request:
    def __init__(self, method, label, message, route=True):
        self.method, self.label, self.message, self.route = method, label, message, route
        self.sent = None


class Party:
    """One client connection: the requests it sent, the bytes it got and when."""

    def __init__(self, session, name):
        self.session, self.name = session, name
        self.sock = socket.create_connection(("127.0.0.1", session.port))
        self.sock.setblocking(False)
        self.data = b""
        self.arrivals = []  # (length of data after a read, time of that read)
        self.requests = []
        self.eof = False

    def send(self, method, path, headers=(), body=b"", message=False, length=True, version="1.1",
             route=True):
        """Sends a request; `path` may hold {id}; `message` marks a GET/HEAD of a
        stored message, whose content type is compared; `route=False` a path
        no endpoint has (its answer's body is kept apart as "no-route body")."""
        lines = [f"{method} {path.format(id=self.session.id)} HTTP/{version}", "Host: 127.0.0.1"]
        lines += list(headers)
        if length and (body or method in ("POST", "PUT")) and not any(
                h.lower().startswith("transfer-encoding") for h in headers):
            lines.append(f"Content-Length: {len(body)}")
        request = Request(method, f"{self.name} {method} {path}", message, route)
        self.requests.append(request)
        self.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body, request)

    def write(self, data, event=None):
        """Writes raw bytes; `event` (a Request, or a label) marks the moment."""
        if isinstance(event, str):
            event = Request(None, f"{self.name} {event}", False)
        if event is not None:
            event.sent = time.time()
            self.session.events.append(event)
        self.sock.setblocking(True)
        try:
            self.sock.sendall(data)
        except OSError:
            pass
        self.sock.setblocking(False)

    def pump(self):
        while not self.eof:
            try:
                chunk = self.sock.recv(1 << 20)
            except BlockingIOError:
                return
            except OSError:
                self.eof = True
                return
            if not chunk:
                self.eof = True
                return
            self.data += chunk
            self.arrivals.append((len(self.data), time.time()))

    def arrived(self, end):
        """When byte `end` of the received data came."""
        for length, when in self.arrivals:
            if length >= end:
                return when
        return None


class Session:
    """One scenario against one server: its id, parties and the events in order."""

    def __init__(self, port, id):
        self.port, self.id = port, id
        self.parties = []
        self.events = []

    def party(self, name):
        party = Party(self, name)
        self.parties.append(party)
        return party

    def settle(self, quiet=QUIET):
        """Reads until no party received anything for `quiet` seconds."""
        last = time.time()
        sizes = [len(p.data) for p in self.parties]
        while time.time() - last < quiet:
            self.pause(0.01)
            now = [len(p.data) for p in self.parties]
            if now != sizes:
                sizes, last = now, time.time()

    def pause(self, seconds):
        """Reads whatever comes for `seconds`."""
        end = time.time() + seconds
        while True:
            for p in self.parties:
                p.pump()
            left = end - time.time()
            if left <= 0:
                return
            socks = [p.sock for p in self.parties if not p.eof]
            if socks:
                select.select(socks, [], [], min(left, 0.01))
            else:
                time.sleep(min(left, 0.01))

    def wait_timeout(self):
        """Reads past the inbox timeout of a request sent just now."""
        self.pause(TIMEOUT + SLACK)
        self.settle()

    def close(self):
        self.settle()
        for p in self.parties:
            p.sock.close()


def responses(party):
    """(code, fields, body, end offset) of each response `party` got, the
    requests' methods deciding whether a body follows."""
    out, data, offset = [], party.data, 0
    methods = [r.method for r in party.requests]
    while data:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            out.append(("partial head", {}, data, offset + len(data)))
            break
        head, data = data[:end].decode("latin-1"), data[end + 4:]
        offset += end + 4
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        code = parts[1] if len(parts) > 1 else lines[0]
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields.setdefault(name.strip().lower(), value.strip())
        if code.startswith("1"):
            out.append((code, fields, b"", offset))
            continue
        method = methods.pop(0) if methods else None
        body = b""
        if method == "HEAD" or code in ("204", "304"):
            pass
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            while True:
                line_end = data.find(b"\r\n")
                if line_end < 0:
                    code += " (chunked body incomplete)"
                    break
                size = int(data[:line_end].split(b";")[0] or b"0", 16)
                if size == 0:
                    taken = line_end + 4
                    data, offset = data[taken:], offset + taken
                    break
                body += data[line_end + 2:line_end + 2 + size]
                taken = line_end + 2 + size + 2
                data, offset = data[taken:], offset + min(taken, len(data))
        elif "content-length" in fields:
            n = int(fields["content-length"])
            if len(data) < n:
                code += " (body incomplete)"
            body, data = data[:n], data[n:]
            offset += len(body)
        else:
            body, data = data, b""
            offset += len(body)
        out.append((code, fields, body, offset))
    return out


def when(party, request, answered):
    """The timing class of an answer: at once (before anything else happened),
    after the inbox timeout, or when another party's event came just before it.
    Steps are separated by a settle, so an answer belongs to the latest event."""
    if answered is None or request is None or request.sent is None:
        return "?"
    before = [e for e in party.session.events if e.sent <= answered]
    latest = before[-1] if before else request
    waited = answered - request.sent
    if abs(waited - TIMEOUT) < SLACK and answered - latest.sent > SLACK:
        return "after the timeout"
    if waited > TIMEOUT + SLACK or (latest is request and waited > TIMEOUT - SLACK):
        return f"after {waited:.1f} s"
    if latest is request:
        return "at once"
    return f"when {latest.label}"


def seen(party):
    """What the client of `party` saw: one dict per answer, and the connection's state."""
    out = []
    requests = list(party.requests)
    for code, fields, body, end in responses(party):
        request = requests[0] if requests else None
        if not code.startswith("1") and requests:
            requests.pop(0)
        answer = {"code": code}
        answer["body" if request is None or request.route else "no-route body"] = body
        answer["when"] = when(party, request, party.arrived(end))
        if request is not None and request.message and code.startswith("200"):
            answer["type"] = fields.get("content-type")
        if request is not None and request.method == "HEAD":
            answer["length"] = fields.get("content-length")
        if code.startswith("405"):
            answer["allow"] = "allow" in fields
        out.append(answer)
    for request in requests:
        out.append({"code": "no answer", "request": request.label})
    out.append({"connection": "closed" if party.eof else "open"})
    return out


# ---- scenarios: functions of a Session; ids come from the session.

MSG = "/inbox/{id}"
ACK = "/inbox/{id}/ack"
AWAIT = "/inbox/{id}/await"
JSON = ["Content-Type: application/json"]


def post_get_repeatedly(s):
    c = s.party("client")
    c.send("POST", MSG, JSON, b'{"a":1}')
    s.settle()
    for _ in range(3):
        c.send("GET", MSG, message=True)
        s.settle()


def post_without_type(s):
    c = s.party("client")
    c.send("POST", MSG, body=b"plain body")
    s.settle()
    c.send("GET", MSG, message=True)


def get_waits_for_post(s):
    consumer = s.party("consumer")
    consumer.send("GET", MSG, message=True)
    s.settle()
    producer = s.party("producer")
    producer.send("POST", MSG, ["Content-Type: text/plain"], b"hello")
    s.settle()
    consumer.send("GET", MSG, message=True)


def get_times_out(s):
    consumer = s.party("consumer")
    consumer.send("GET", MSG, message=True)
    s.wait_timeout()
    consumer.send("GET", ACK)


def replace_unread(s):
    c = s.party("client")
    c.send("POST", MSG, JSON, b'{"first":1}')
    s.settle()
    c.send("POST", MSG, ["Content-Type: text/plain; charset=utf-8"], b"second")
    s.settle()
    c.send("GET", MSG, message=True)
    s.settle()
    c.send("POST", MSG, body=b"third, untyped")
    s.settle()
    c.send("GET", MSG, message=True)


def empty_message(s):
    c = s.party("client")
    c.send("POST", MSG, JSON, b"")
    s.settle()
    c.send("GET", MSG, message=True)
    s.settle()
    c.send("GET", ACK)


def binary_message(s):
    c = s.party("client")
    c.send("POST", MSG, ["Content-Type: application/octet-stream"], bytes(range(256)))
    s.settle()
    c.send("GET", MSG, message=True)


def delete_acks(s):
    c = s.party("client")
    c.send("POST", MSG, body=b"x")
    s.settle()
    for method, path in (("GET", ACK), ("DELETE", MSG), ("GET", ACK), ("GET", AWAIT), ("DELETE", MSG)):
        c.send(method, path)
        s.settle()
    c.send("GET", MSG, message=True)  # the body was cleared: waits again
    s.wait_timeout()
    c.send("GET", ACK)


def delete_then_post_wakes_get(s):
    c = s.party("client")
    c.send("POST", MSG, body=b"one")
    s.settle()
    c.send("DELETE", MSG)
    s.settle()
    consumer = s.party("consumer")
    consumer.send("GET", MSG, message=True)
    s.settle()
    c.send("POST", MSG, body=b"two")
    s.settle()
    c.send("GET", ACK)


def unknown_id(s):
    c = s.party("client")
    for method, path in (("DELETE", MSG), ("GET", ACK), ("GET", AWAIT), ("HEAD", AWAIT)):
        c.send(method, path)
        s.settle()


def await_woken_by_delete_not_get(s):
    producer = s.party("producer")
    producer.send("POST", MSG, body=b"m")
    s.settle()
    waiters = [s.party(f"awaiter{i}") for i in range(2)]
    for w in waiters:
        w.send("GET", AWAIT)
        s.settle()
    consumer = s.party("consumer")
    consumer.send("GET", MSG, message=True)
    s.settle()
    consumer.send("DELETE", MSG)
    s.settle()
    waiters[0].send("GET", AWAIT)  # acknowledged now: at once


def await_times_out(s):
    producer = s.party("producer")
    producer.send("POST", MSG, body=b"m")
    s.settle()
    waiter = s.party("awaiter")
    waiter.send("GET", AWAIT)
    s.wait_timeout()
    waiter.send("GET", ACK)


def await_dropped_by_post(s):
    producer = s.party("producer")
    producer.send("POST", MSG, body=b"m")
    s.settle()
    waiter = s.party("awaiter")
    waiter.send("GET", AWAIT)
    s.settle()
    producer.send("POST", MSG, body=b"n")
    s.settle()
    waiter.send("GET", ACK)
    s.settle()
    waiter.send("GET", MSG, message=True)


def acked_reposted_await_waits(s):
    c = s.party("client")
    c.send("POST", MSG, body=b"m")
    s.settle()
    c.send("DELETE", MSG)
    s.settle()
    c.send("POST", MSG, body=b"n")
    s.settle()
    waiter = s.party("awaiter")
    waiter.send("GET", AWAIT)
    s.settle()
    c.send("GET", ACK)
    s.settle()
    c.send("DELETE", MSG)
    s.settle()


def ttl_expiry(s):
    c = s.party("client")
    c.send("POST", MSG, body=b"m")
    s.settle()
    c.send("GET", ACK)
    s.pause(TTL + 0.3)
    s.settle()
    for method, path in (("GET", ACK), ("GET", AWAIT), ("DELETE", MSG)):
        c.send(method, path)
        s.settle()
    consumer = s.party("consumer")
    consumer.send("GET", MSG, message=True)  # absent again: waits
    s.settle()
    c.send("POST", MSG, body=b"again")
    s.settle()


def ttl_restarts_on_post(s):
    c = s.party("client")
    c.send("POST", MSG, body=b"m")
    s.pause(TTL / 2 + 0.3)
    s.settle()
    c.send("POST", MSG, body=b"n")
    s.pause(TTL / 2 + 0.3)
    s.settle()
    c.send("GET", ACK)  # past the first POST's TTL, within the second's
    s.settle()
    c.send("GET", MSG, message=True)
    s.pause(TTL / 2)
    s.settle()
    c.send("GET", ACK)  # past the second POST's TTL


def long_id(length):
    def run(s):
        s.id = (s.id + "i" * length)[:length]
        c = s.party("client")
        c.send("POST", MSG, body=b"long")
        s.settle()
        for method, path in (("GET", MSG), ("HEAD", MSG), ("GET", ACK), ("DELETE", MSG), ("GET", AWAIT)):
            c.send(method, path, message=method != "DELETE" and path == MSG)
            s.settle()
    return run


def percent_decoded_ids(s):
    c = s.party("client")
    c.send("POST", "/inbox/{id}%41", body=b"A")
    s.settle()
    c.send("GET", "/inbox/{id}A", message=True)
    s.settle()
    c.send("POST", "/inbox/{id}a%2Fb", body=b"slash")
    s.settle()
    c.send("GET", "/inbox/{id}a%2fb", message=True)
    s.settle()
    c.send("GET", "/inbox/{id}a%2Fb/ack")
    s.settle()
    c.send("GET", "/inbox/{id}caf%C3%A9/ack")


def id_not_utf8(s):
    c = s.party("client")
    c.send("GET", "/inbox/{id}bad%ff/ack")
    s.settle()
    c.send("POST", "/inbox/{id}bad%ff", body=b"x")
    s.settle()
    c.send("GET", ACK)  # the connection goes on


def waiters_limit(path, wake):
    def run(s):
        if path == AWAIT:
            producer = s.party("producer")
            producer.send("POST", MSG, body=b"m")
            s.settle()
        waiters = [s.party(f"waiter{i}") for i in range(10)]
        for w in waiters:
            w.send("GET", path, message=path == MSG)
            s.pause(0.05)
        s.settle()
        eleventh = s.party("eleventh")
        eleventh.send("GET", path, message=path == MSG)
        s.settle()
        eleventh.send("GET", ACK)  # the connection goes on after a 503
        s.settle()
        actor = s.party("actor")
        actor.send(*wake)
        s.settle()
    return run


def too_large(s):
    c = s.party("client")
    c.send("POST", MSG, body=b"b" * LIMIT)
    s.settle()
    c.send("POST", MSG, body=b"c" * (LIMIT + 1))
    s.settle()
    c.send("GET", MSG, message=True)  # still the first message
    s.settle()
    chunked = s.party("chunked")
    body = b"d" * (LIMIT + 1)
    chunked.send("POST", MSG, ["Transfer-Encoding: chunked"],
                 b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")


def head_of_message(s):
    c = s.party("client")
    c.send("POST", MSG, ["Content-Type: text/plain"], b"head me")
    s.settle()
    c.send("HEAD", MSG, message=True)
    s.settle()
    c.send("GET", MSG, message=True)
    s.settle()
    consumer = s.party("head-waiter")
    consumer.send("HEAD", "/inbox/{id}-2", message=True)
    s.settle()
    c.send("POST", "/inbox/{id}-2", body=b"12345")
    s.settle()


def wrong_methods(s):
    c = s.party("client")
    for method, path in (("PUT", MSG), ("PATCH", MSG), ("POST", ACK), ("DELETE", ACK),
                         ("POST", AWAIT), ("PUT", AWAIT)):
        c.send(method, path, body=b"x" if method in ("PUT", "POST", "PATCH") else b"")
        s.settle()


def no_route(s):
    c = s.party("client")
    for method, path in (("GET", "/inbox/"), ("POST", "/inbox/"), ("GET", "/inbox/{id}/b/c"),
                         ("POST", "/inbox/{id}/b/c"), ("GET", "/inbox/{id}/ack/"), ("GET", "/inbox")):
        c.send(method, path, body=b"x" if method == "POST" else b"", route=False)
        s.settle()


def chunked_post(s):
    c = s.party("client")
    c.send("POST", MSG, ["Content-Type: text/plain", "Transfer-Encoding: chunked"], b"5\r\nhello\r\n")
    s.settle()
    c.write(b"6\r\n world\r\n0\r\n\r\n", "sends the last chunks")
    s.settle()
    c.send("GET", MSG, message=True)


def expect_continue(s):
    c = s.party("client")
    c.send("POST", MSG, ["Expect: 100-continue", "Content-Length: 5"], length=False)
    s.settle()
    c.write(b"hello", "sends the body")
    s.settle()
    c.send("GET", MSG, message=True)
    s.settle()
    c.send("GET", ACK, ["Expect: 100-continue"])


def expect_continue_too_large(s):
    c = s.party("client")
    c.send("POST", MSG, ["Expect: 100-continue", "Content-Length: 3000"], length=False)
    s.settle()
    c.write(b"z" * 3000, "sends the body")
    s.settle()
    c.send("GET", ACK)


def keep_alive(s):
    """One connection through every kind of answer."""
    c = s.party("client")
    long = "/inbox/" + "i" * 257
    steps = [("POST", MSG, b"k"), ("GET", MSG, b""), ("HEAD", MSG, b""), ("GET", ACK, b""),
             ("DELETE", MSG, b""), ("GET", AWAIT, b""), ("GET", "/inbox/{id}-none/ack", b""),
             ("DELETE", "/inbox/{id}-none", b""), ("GET", long, b""), ("PUT", MSG, b"p"),
             ("GET", "/inbox/", b""), ("POST", MSG, b"x" * (LIMIT + 1)),
             ("GET", "/inbox/{id}-empty", b""),
             ("GET", "/inbox/{id}-none/ack", b"")]
    for method, path, body in steps:
        c.send(method, path, body=body, message=method in ("GET", "HEAD") and path == MSG,
               route=path != "/inbox/")
        if path.endswith("-empty"):
            s.wait_timeout()
        else:
            s.settle()


def http10(s):
    c = s.party("client")
    c.send("POST", MSG, body=b"old", version="1.0")
    s.settle()
    d = s.party("keep-alive client")
    d.send("GET", MSG, ["Connection: keep-alive"], message=True, version="1.0")
    s.settle()
    d.send("GET", ACK, ["Connection: keep-alive"], version="1.0")
    s.settle()
    e = s.party("closing client")
    e.send("GET", ACK, ["Connection: close"])


def origin_without_cors_flag(s):
    c = s.party("client")
    c.send("POST", MSG, ["Origin: http://example.com"], b"o")
    s.settle()
    c.send("GET", MSG, ["Origin: http://example.com"], message=True)
    s.settle()
    c.send("GET", ACK, ["Origin: http://example.com"])


def preflight(s):
    c = s.party("client")
    c.send("OPTIONS", MSG, ["Origin: http://example.com", "Access-Control-Request-Method: POST",
                            "Access-Control-Request-Headers: content-type"])
    s.settle()
    c.send("OPTIONS", ACK)


SCENARIOS = {
    "POST stores at once, GET returns it again and again": post_get_repeatedly,
    "POST without Content-Type": post_without_type,
    "GET on an empty inbox waits for the POST": get_waits_for_post,
    "GET on an empty inbox times out": get_times_out,
    "POST replaces an unread message and its type": replace_unread,
    "empty message": empty_message,
    "binary message, all 256 byte values": binary_message,
    "DELETE acknowledges; GET waits again": delete_acks,
    "a GET waiting after DELETE gets the next POST": delete_then_post_wakes_get,
    "unknown id: DELETE, ack, await": unknown_id,
    "await woken by DELETE, not by a GET": await_woken_by_delete_not_get,
    "await times out": await_times_out,
    "await ended by a new POST": await_dropped_by_post,
    "acknowledged, posted again: await waits again": acked_reposted_await_waits,
    "TTL: the entry expires": ttl_expiry,
    "TTL restarts on a new POST": ttl_restarts_on_post,
    "id of 256 bytes": long_id(256),
    "id of 257 bytes": long_id(257),
    "percent-decoded ids": percent_decoded_ids,
    "id that is not UTF-8": id_not_utf8,
    "ten GET waiters get the message, the eleventh 503": waiters_limit(MSG, ("POST", MSG, JSON, b"[10]")),
    "ten await waiters woken, the eleventh 503": waiters_limit(AWAIT, ("DELETE", MSG)),
    "message over the limit: 413": too_large,
    "HEAD of a message, HEAD waiting": head_of_message,
    "405 for other methods": wrong_methods,
    "no route: /inbox/, /inbox/a/b/c": no_route,
    "chunked POST": chunked_post,
    "Expect: 100-continue": expect_continue,
    "Expect: 100-continue, too large": expect_continue_too_large,
    "keep-alive after every kind of answer": keep_alive,
    "HTTP/1.0 and Connection: close": http10,
    "Origin without a CORS flag": origin_without_cors_flag,
    "OPTIONS preflight without a CORS flag": preflight,
}

# Differences the relay documents: name -> (why, what is left out of the
# comparison: answer keys such as "body", or "key@code" for answers with that
# status code only; None leaves out the whole scenario).
KNOWN = {
    "id that is not UTF-8": (
        "the relay's 400 body is its own (Inbox ID is not UTF-8)", {"body@400"}),
    "message over the limit: 413": (
        "the relay's 413 body is its own one-line text, and it aborts a chunked upload that crosses "
        "the limit (closes the connection; the reference reads a small one to its end)",
        {"body@413", "connection"}),
    "Expect: 100-continue, too large": (
        "the relay answers 413 instead of 100 Continue when Content-Length is over the limit, "
        "then closes", None),
    "405 for other methods": ("the relay's 405 body is its own one-line text", {"body@405"}),
    "keep-alive after every kind of answer": (
        "the relay's 405, 413 and unknown-path 404 bodies are its own one-line texts",
        {"body@405", "body@413", "no-route body"}),
    "no route: /inbox/, /inbox/a/b/c": (
        "the relay's unknown-path 404 has a body, `404 page not found`", {"no-route body"}),
    "OPTIONS preflight without a CORS flag": (
        "the relay answers preflights (the reference: 405 unless --cors-allow-all)", None),
}


def leave_out(answers, keys):
    out = []
    for answer in answers:
        code = str(answer.get("code", "")).split(" ")[0]
        out.append({k: v for k, v in answer.items() if k not in keys and f"{k}@{code}" not in keys})
    return out


def show(answer):
    if answer is None:
        return "-"
    parts = []
    for key, value in answer.items():
        if key == "body" and len(value) > 40:
            value = value[:24] + b"...(%d bytes)" % len(value)
        parts.append(f"{key}={value!r}" if key != "code" else str(value))
    return " ".join(parts)


def run(name, port, id, into):
    session = Session(port, id)
    try:
        SCENARIOS[name](session)
    finally:
        session.close()
    into["seen"] = {
        p.name: [dict(a, body=a["body"].replace(session.id.encode(), b"<id>")) if "body" in a else a
                 for a in seen(p)]
        for p in session.parties}


def main():
    args = sys.argv[1:]
    verbose = args[:1] == ["-v"]
    args = args[1:] if verbose else args
    ref, ours = int(args[0]), int(args[1])
    names = args[2:] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        sys.exit(f"no such scenario: {unknown}")
    failed = 0
    run_id = int(time.time() * 1000) % 100_000_000
    for i, name in enumerate(names):
        got = {}
        threads = []
        for tag, port in (("r", ref), ("o", ours)):
            results = {}
            t = threading.Thread(target=run, args=(name, port, f"cmp{run_id}{tag}{i}", results))
            t.start()
            threads.append((t, results))
        for (t, results), side in zip(threads, ("reference", "ours")):
            t.join()
            got[side] = results.get("seen", {})
        why, left_out = KNOWN.get(name, (None, set()))
        diffs = []
        for party in got["reference"]:
            if left_out is None:
                continue
            a = leave_out(got["reference"][party], left_out)
            b = leave_out(got["ours"].get(party, []), left_out)
            if a != b or verbose:
                diffs.append(f"  {party}:")
                for k in range(max(len(a), len(b))):
                    x = a[k] if k < len(a) else None
                    y = b[k] if k < len(b) else None
                    mark = "  " if x == y else "! "
                    diffs.append(f"   {mark}reference {show(x)}")
                    if x != y:
                        diffs.append(f"   {mark}ours      {show(y)}")
        differs = any(mark.startswith("   ! ") for mark in diffs)
        if verbose and not differs:
            print(f"{'known' if why else 'same':<10} {name}")
            print("\n".join(diffs))
        elif differs:
            failed += 1
            print(f"DIFFERENT  {name}")
            print("\n".join(diffs))
        elif why:
            print(f"known      {name}: {why}")
        else:
            print(f"same       {name}")
        sys.stdout.flush()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Runs the same Piping Server exchanges against two servers and compares what
every client sees: status, header fields (as a set; Date, Connection:
keep-alive and Keep-Alive left out), body bytes (chunked framing decoded), and
for streamed responses the text in the order it came.

    scripts/piping-compare.py REFERENCE_PORT OURS_PORT [SCENARIO...]

Start the reference with
    node_modules/.bin/piping-server --host 127.0.0.1 --http-port REFERENCE_PORT
and the relay with
    httprelay --piping -a 127.0.0.1 -p OURS_PORT
Prints one line per scenario (same / DIFFERENT, with the differences) and
exits 1 when a scenario differs and is not listed in KNOWN (the differences
docs/differences.md documents).
"""
import socket
import sys
import time

QUIET = 0.2  # seconds without bytes after which a party's answer is complete


class Party:
    def __init__(self, port, request=b""):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.data = b""
        self.eof = False
        if request:
            self.send(request)

    def send(self, data):
        self.sock.setblocking(True)
        self.sock.sendall(data)
        self.sock.setblocking(False)

    def pump(self):
        while not self.eof:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                self.eof = True
                return
            if not chunk:
                self.eof = True
            self.data += chunk

    def close(self):
        self.sock.close()


def settle(parties, quiet=QUIET):
    """Reads until no party received anything for `quiet` seconds."""
    last = time.time()
    sizes = [len(p.data) for p in parties]
    while time.time() - last < quiet:
        time.sleep(0.02)
        for p in parties:
            p.pump()
        now = [len(p.data) for p in parties]
        if now != sizes:
            sizes, last = now, time.time()


def parse(data):
    """The responses in `data`: (status code, sorted fields, body, complete)."""
    out = []
    while data:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            out.append(("partial head", [], data, False))
            break
        head, data = data[:end].decode("latin-1"), data[end + 4:]
        lines = head.split("\r\n")
        code = lines[0].split(" ", 2)[1] if " " in lines[0] else lines[0]
        fields = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            if name in ("date", "keep-alive") or (name, value.lower()) == ("connection", "keep-alive"):
                continue
            fields.append((name, value))
        get = dict(fields).get
        body, complete = b"", True
        if code in ("100",):
            out.append((code, sorted(fields), b"", True))
            continue
        if get("transfer-encoding") == "chunked":
            while True:
                line_end = data.find(b"\r\n")
                if line_end < 0:
                    complete = False
                    break
                size = int(data[:line_end].split(b";")[0] or b"0", 16)
                if size == 0:
                    data = data[line_end + 4:]
                    break
                if len(data) < line_end + 2 + size + 2:
                    body += data[line_end + 2:line_end + 2 + size]
                    complete, data = False, b""
                    break
                body += data[line_end + 2:line_end + 2 + size]
                data = data[line_end + 2 + size + 2:]
            fields = [f for f in fields if f[0] != "transfer-encoding"]
        elif get("content-length") is not None:
            n = int(get("content-length"))
            body, data = data[:n], data[n:]
            complete = len(body) == n
        elif code in ("204", "304"):
            pass
        else:
            body, data = data, b""
        out.append((code, sorted(fields), body, complete))
    return out


def req(method, path, headers=(), body=b"", version="1.1", length=True):
    lines = [f"{method} {path} HTTP/{version}", "Host: 127.0.0.1"]
    lines += list(headers)
    if length and body is not None and method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


# Each scenario: a function of (port, path) returning the named parties' raw
# bytes, so that both servers get exactly the same steps.
def one_request(request):
    def run(port, path):
        p = Party(port, request(path))
        settle([p])
        p.close()
        return {"client": p.data}
    return run


def transfer(sender_first=True, sender=None, receivers=1, receiver_query="", tail=b"", receiver_version="1.1"):
    def run(port, path):
        send = sender(path) if sender else req("POST", path, body=b"hello, world\n")
        parties = {}
        if sender_first:
            parties["sender"] = Party(port, send)
            settle(parties.values())
        for i in range(receivers):
            parties[f"receiver{i}"] = Party(port, req("GET", path + receiver_query, version=receiver_version))
            settle(parties.values())
        if not sender_first:
            parties["sender"] = Party(port, send)
            settle(parties.values())
        if tail:
            parties["sender"].send(tail)
        settle(parties.values())
        for p in parties.values():
            p.close()
        return {name: p.data for name, p in parties.items()}
    return run


def receiver_leaves(port, path):
    s = Party(port, req("PUT", path, ["Transfer-Encoding: chunked"], b"5\r\nabcde\r\n", length=False))
    r = Party(port, req("GET", path))
    settle([s, r])
    r.close()
    time.sleep(0.1)
    try:
        s.send(b"5\r\nfghij\r\n")
    except OSError:
        pass
    settle([s])
    s.close()
    return {"sender": s.data}


def waiting_leaves_then_another(port, path):
    r1 = Party(port, req("GET", path + "?n=2"))
    s = Party(port, req("POST", path + "?n=2", body=b"xy"))
    settle([r1, s])
    r2 = Party(port, req("GET", path + "?n=2"))
    settle([r1, s, r2])
    r2.close()
    settle([r1, s])
    r3 = Party(port, req("GET", path + "?n=1"))
    settle([r3])
    for p in (r1, s, r3):
        p.close()
    return {"sender": s.data, "mismatch": r3.data}


def waiting_receiver_leaves(port, path):
    s = Party(port, req("POST", path + "?n=3", body=b"xy"))
    r1 = Party(port, req("GET", path + "?n=3"))
    settle([s, r1])
    r1.close()
    settle([s])
    others = [Party(port, req("GET", path + "?n=3")) for _ in range(3)]
    settle([s] + others)
    for p in [s] + others:
        p.close()
    return {"sender": s.data, **{f"receiver{i}": p.data for i, p in enumerate(others)}}


def refusal(first, second):
    def run(port, path):
        a = Party(port, first(path))
        settle([a])
        b = Party(port, second(path))
        settle([a, b])
        a.close()
        b.close()
        return {"second": b.data}
    return run


CHUNKED = ["Transfer-Encoding: chunked"]
FORM = "Content-Type: multipart/form-data; boundary=XyZ"
FILE_PART = (b"--XyZ\r\nContent-Disposition: form-data; name=\"input_file\"; filename=\"a.txt\"\r\n"
             b"Content-Type: text/html\r\n\r\n<i>file</i>\r\n--XyZ--\r\n")
TEXT_THEN_FILE = (b"--XyZ\r\nContent-Disposition: form-data; name=\"input_text\"\r\n\r\nhello\r\n"
                  + FILE_PART)
SCENARIOS = {
    "sender first, Content-Length": transfer(),
    "receiver first, Content-Length": transfer(sender_first=False),
    "PUT chunked, sender first": transfer(
        sender=lambda p: req("PUT", p, CHUNKED, b"5\r\nabcde\r\n", length=False),
        tail=b"3\r\nfgh\r\n0\r\n\r\n"),
    "text/html made plain": transfer(
        sender=lambda p: req("POST", p, ["Content-Type: text/html; charset=utf-8"], b"<b>x</b>")),
    "content headers and X-Piping": transfer(sender=lambda p: req("POST", p, [
        "Content-Type: application/json", "Content-Disposition: attachment; filename=\"a b.txt\"",
        "X-Piping: one", "x-piping: two, three", "Cache-Control: no-store"], b"{}")),
    "receiver with other queries": transfer(receiver_query="?x=2"),
    "HTTP/1.0 receiver, chunked sender": transfer(
        sender=lambda p: req("PUT", p, CHUNKED, b"5\r\nabcde\r\n0\r\n\r\n", length=False),
        receiver_version="1.0"),
    "HTTP/1.0 sender": transfer(sender=lambda p: req("POST", p, body=b"hello", version="1.0")),
    "n=2, sender first": transfer(receivers=2, receiver_query="?n=2",
                                  sender=lambda p: req("POST", p + "?n=2", body=b"to both")),
    "n=3, receivers first, chunked": transfer(
        sender_first=False, receivers=3, receiver_query="?n=3",
        sender=lambda p: req("PUT", p + "?n=3", CHUNKED, b"3\r\nabc\r\n", length=False),
        tail=b"2\r\nde\r\n0\r\n\r\n"),
    "n=3, a waiting receiver leaves": waiting_receiver_leaves,
    "receiver leaves mid-transfer": receiver_leaves,
    "form upload, one file": transfer(sender=lambda p: req("POST", p, [FORM], FILE_PART)),
    "form upload, text before a file": transfer(sender=lambda p: req("POST", p, [FORM], TEXT_THEN_FILE)),
    "form upload without a boundary": transfer(
        sender=lambda p: req("POST", p, ["Content-Type: multipart/form-data"], b"garbage")),
    "a waiting receiver leaves, then a mismatch": waiting_leaves_then_another,
    "second sender": refusal(lambda p: req("POST", p, body=b"a"), lambda p: req("POST", p, body=b"b")),
    "receivers reached limits": refusal(lambda p: req("GET", p), lambda p: req("GET", p)),
    "sender n mismatch": refusal(lambda p: req("GET", p + "?n=2"), lambda p: req("POST", p + "?n=3", body=b"x")),
    "receiver n mismatch": refusal(lambda p: req("POST", p + "?n=2", body=b"x"), lambda p: req("GET", p)),
    "n=0 sender": one_request(lambda p: req("POST", p + "?n=0", body=b"x")),
    "n=-1 receiver": one_request(lambda p: req("GET", p + "?n=-1")),
    "n=abc sender": one_request(lambda p: req("POST", p + "?n=abc", body=b"x")),
    "n=abc receiver": one_request(lambda p: req("GET", p + "?n=abc")),
    "Service-Worker: script": one_request(lambda p: req("GET", p, ["Service-Worker: script"])),
    "Content-Range": one_request(lambda p: req("PUT", p, ["Content-Range: bytes 0-0/1"], b"x")),
    "DELETE": one_request(lambda p: req("DELETE", p)),
    "HEAD on a transfer path": one_request(lambda p: req("HEAD", p)),
    "OPTIONS": one_request(lambda p: req("OPTIONS", p, ["Origin: http://x.example"])),
    "OPTIONS, private network": one_request(
        lambda p: req("OPTIONS", p, ["Access-Control-Request-Private-Network: true"])),
    "POST to a reserved path": one_request(lambda p: req("POST", "/help?n=2", body=b"x")),
    "GET /favicon.ico": one_request(lambda p: req("GET", "/favicon.ico")),
    "GET /robots.txt": one_request(lambda p: req("GET", "/robots.txt")),
    "HEAD /robots.txt": one_request(lambda p: req("HEAD", "/robots.txt")),
}
# Differences docs/differences.md documents ("Differences from piping-server 1.12.9").
KNOWN = {
    # name: (why, what is left out of the comparison; None: all of it)
    "HTTP/1.0 sender": (
        "the relay streams the lines until it closes; the reference sends them at the end, with a length",
        {"content-length"}),
    "form upload, one file": (
        "receivers get the part chunked; the reference sends a length estimated from the request's",
        {"content-length"}),
    "form upload, text before a file": (
        "the reference's estimated length is wrong when the part is not the last (its receiver waits "
        "for bytes that never come)",
        {"content-length", "complete"}),
    "form upload without a boundary": (
        "the relay tells both sides; the reference leaves them waiting and the path taken", None),
}


def leave_out(responses, names):
    """Responses without the fields (and completeness, with "complete") in `names`."""
    return [(code, [f for f in fields if f[0] not in names], body, complete or "complete" in names)
            for code, fields, body, complete in responses]


def main():
    ref, ours = int(sys.argv[1]), int(sys.argv[2])
    names = sys.argv[3:] or list(SCENARIOS)
    failed = 0
    run_id = int(time.time() * 1000) % 1_000_000
    for i, name in enumerate(names):
        path = f"/cmp{run_id}-{i}"
        got = {server: SCENARIOS[name](port, path) for server, port in (("reference", ref), ("ours", ours))}
        why, left_out = KNOWN.get(name, (None, set()))
        diffs = []
        for party in got["reference"]:
            a = parse(got["reference"][party].replace(path.encode(), b"<path>"))
            b = parse(got["ours"].get(party, b"").replace(path.encode(), b"<path>"))
            if left_out is None:
                continue
            a, b = leave_out(a, left_out), leave_out(b, left_out)
            if a != b:
                diffs.append(f"  {party}:\n    reference {a!r}\n    ours      {b!r}")
        if diffs:
            failed += 1
            print(f"DIFFERENT  {name}")
            print("\n".join(diffs))
        elif why:
            print(f"known      {name}: {why}")
        else:
            print(f"same       {name}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

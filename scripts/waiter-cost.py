#!/usr/bin/env python3
"""What one parked request, and one remembered channel, cost the relay.

    scripts/waiter-cost.py [RELAY_BIN] [N]

Starts the relay (default target/release/httprelay) for each kind, opens N
(default 5000) parked requests of that kind on distinct ids, and prints the
relay's RSS growth divided by N. Kinds: link consumer, link producer with a
100-byte body, sync with a 100-byte body, proxy client with a 100-byte body
(no SERVE), SERVE waiting for a job, mcast reader waiting for a message,
mcast live stream (Server-Sent Events) waiting for a message, inbox reader
waiting for a message.
The client raises its own descriptor limit; N is capped by it.

Then the same for remembered channels (4 N of them, each made by a request
that leaves at once): a link channel claimed by a producer with a write
secret, a SERVE claim, an mcast channel holding one empty message, an inbox
holding a 100-byte message (the message counts in --inbox-total besides). The
relay runs with --max-channels above 4 N for this.
"""
import os
import resource
import socket
import subprocess
import sys
import time

from loopback import free_port

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/httprelay"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 5000

BODY = b"x" * 100


def request(method, path, body=None, fields=""):
    head = f"{method} {path} HTTP/1.1\r\nHost: relay\r\n{fields}"
    if body is not None:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + (body or b"")


KINDS = {
    "link consumer": lambda i: request("GET", f"/link/c{i}"),
    "link producer, 100-byte body": lambda i: request("POST", f"/link/p{i}", BODY),
    "sync, 100-byte body": lambda i: request("POST", f"/sync/s{i}", BODY),
    "proxy client, 100-byte body": lambda i: request("POST", f"/proxy/j{i}/x", BODY),
    "SERVE waiting for a job": lambda i: request("SERVE", f"/proxy/v{i}"),
    "mcast reader": lambda i: request("GET", f"/mcast/r{i}"),
    "mcast live stream": lambda i: request(
        "GET", f"/mcast/l{i}", fields="Accept: text/event-stream\r\n"
    ),
    "inbox reader": lambda i: request("GET", f"/inbox/i{i}"),
}


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


REMEMBERED = {
    "link channel with a claim": lambda i: request("POST", f"/link/k{i}?wsecret=s{i}", b"x"),
    "proxy channel with a claim": lambda i: request("SERVE", f"/proxy/k{i}?wsecret=s{i}"),
    "mcast channel, one empty message": lambda i: request("POST", f"/mcast/e{i}", b""),
    "inbox, one 100-byte message": lambda i: request("POST", f"/inbox/m{i}", BODY),
}


def measure(kind, make, count=None, flags=(), keep=True):
    count = count or N
    port = free_port()
    # Every waiter must get a connection of its own, all from one address.
    conns_flag = ("--max-conns", str(count + 1000), "--max-conns-per-client", str(count + 1000))
    relay = subprocess.Popen(
        [BIN, "-a", "127.0.0.1", "-p", str(port), *conns_flag, *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
        # Warm the pools and tables a little, as a running relay would be.
        time.sleep(0.3)
        before = rss_kib(relay.pid)
        conns = []
        for i in range(count):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(make(i))
            if keep:
                conns.append(s)
            else:
                # Leave once the relay has taken the request.
                s.settimeout(5)
                if make(i).startswith((b"POST /mcast", b"POST /inbox")):
                    s.recv(4096)
                s.close()
        time.sleep(1.0)
        after = rss_kib(relay.pid)
        if relay.poll() is not None:
            raise SystemExit(f"{kind}: the relay died")
        per = (after - before) * 1024 / count
        what = "waiters" if keep else "channels"
        print(f"{kind:34} {count} {what}: RSS {before} -> {after} KiB, {per:.0f} B each")
        for s in conns:
            s.close()
    finally:
        relay.terminate()
        relay.wait()


def main():
    global N
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    N = min(N, hard - 100)
    for kind, make in KINDS.items():
        measure(kind, make)
    flags = ("--max-channels", str(8 * N), "--inbox-total", str(64 * 1024 * 1024))
    for kind, make in REMEMBERED.items():
        measure(kind, make, count=4 * N, flags=flags, keep=False)


if __name__ == "__main__":
    main()

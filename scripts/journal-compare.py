#!/usr/bin/env python3
"""Durable inbox writes side by side: this relay with --data-dir (--fsync batch
and always) and pubky's http-relay 0.7.0 with --persist-db (SQLite), on
loopback. For each: inbox POSTs per second (one writer, then 16), bytes the
process wrote to the disk per byte of message (/proc/PID/io write_bytes), then a
kill test (writers post as fast as they can, SIGKILL at a random moment,
restart, read back every message that got 200: the lost ones are counted),
and this relay's startup time with 100,000 stored messages and with a 100 MB
journal, with the rewrite begun at start (off the loop: how long it took, and
the longest loop iteration meanwhile).

    python3 scripts/journal-compare.py            # after cargo build --release
                                                  # and scripts/install-http-relay.sh
"""
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from loopback import free_port

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OURS = os.environ.get("RELAY_BIN", os.path.join(ROOT, "target/release/httprelay"))
PUBKY = os.path.join(ROOT, "target/http-relay-ref/bin/http-relay")
BODY = 200
LIFT = ["--max-conns-per-client", "1000000", "--max-channels-per-client", "1000000",
        "--inbox-total", "1G", "--max-channels", "1000000", "--inbox-ttl", "3600"]


def start(kind, data, port):
    if kind == "pubky":
        cmd = [PUBKY, "-p", str(port), "--persist-db", os.path.join(data, "db.sqlite"),
               "--max-body-size", "65536", "--max-entries", "10000000", "--inbox-cache-ttl", "3600", "-q"]
    else:
        cmd = [OURS, "-a", "127.0.0.1", "-p", str(port), "--data-dir", data, "--fsync", kind] + LIFT
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=None if os.environ.get("SHOW") else subprocess.DEVNULL)
    t = time.perf_counter()
    # Up when it answers (a relay may accept connections while it replays).
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(b"GET /inbox/none/ack HTTP/1.1\r\nHost: r\r\n\r\n")
            read_response(s)
            s.close()
            return p, time.perf_counter() - t
        except (OSError, ConnectionError):
            if p.poll() is not None:
                sys.exit(f"{cmd[0]} exited")
            time.sleep(0.002)


def read_response(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    m = re.search(rb"(?i)content-length: *(\d+)", head)
    length = int(m.group(1)) if m else 0
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        rest += chunk
    return int(head.split(b" ")[1]), rest[:length]


def post(s, ident, body):
    s.sendall(f"POST /inbox/{ident} HTTP/1.1\r\nHost: r\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    return read_response(s)[0]


def body_of(ident):
    rnd = random.Random(ident)
    return bytes(rnd.getrandbits(8) for _ in range(BODY))


def writers(port, count, per, tag, acked=None, stop=None):
    def run(w):
        try:
            s = socket.create_connection(("127.0.0.1", port))
            for i in range(per):
                if stop is not None and stop.is_set():
                    return
                ident = f"{tag}w{w}n{i}"
                if post(s, ident, body_of(ident)) == 200 and acked is not None:
                    acked.append(ident)
        except (ConnectionError, OSError):
            return
    threads = [threading.Thread(target=run, args=(w,)) for w in range(count)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - t


def write_bytes(pid):
    with open(f"/proc/{pid}/io") as f:
        return int(re.search(r"^write_bytes: (\d+)", f.read(), re.M).group(1))


def rate(kind):
    data = tempfile.mkdtemp(prefix="jc-")
    port = free_port()
    p, _ = start(kind, data, port)
    out = []
    before = write_bytes(p.pid)
    total = 0
    for count, per in ((1, 2000), (16, 500)):
        took = writers(port, count, per, f"rate{count}")
        total += count * per
        out.append(count * per / took)
    time.sleep(0.5)
    amplification = (write_bytes(p.pid) - before) / (total * BODY)
    p.kill()
    p.wait()
    shutil.rmtree(data)
    return out, amplification


def get(port, ident):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(f"GET /inbox/{ident} HTTP/1.1\r\nHost: r\r\n\r\n".encode())
    try:
        return read_response(s)
    except (socket.timeout, ConnectionError):
        return None, None
    finally:
        s.close()


def kill_test(kind, rounds=20):
    data = tempfile.mkdtemp(prefix="jc-")
    lost = checked = 0
    for r in range(rounds):
        port = free_port()
        p, _ = start(kind, data, port)
        acked, stop = [], threading.Event()
        th = threading.Thread(target=writers, args=(port, 8, 10**9, f"k{r}", acked, stop))
        th.start()
        time.sleep(random.uniform(0.05, 0.3))
        p.kill()
        p.wait()
        stop.set()
        th.join()
        port = free_port()
        p, _ = start(kind, data, port)
        for ident in acked:
            status, got = get(port, ident)
            checked += 1
            if status != 200 or got != body_of(ident):
                lost += 1
        p.kill()
        p.wait()
    shutil.rmtree(data)
    return checked, lost


def startup(count, size):
    global BODY
    data = tempfile.mkdtemp(prefix="jc-")
    port = free_port()
    p, _ = start("batch", data, port)
    saved, BODY = BODY, size
    writers(port, 16, count // 16, "s")
    BODY = saved
    p.kill()
    p.wait()
    journal = os.path.getsize(os.path.join(data, "journal"))
    port = free_port()
    p, took = start("batch", data, port)
    compaction = compaction_at_start(port)
    p.kill()
    p.wait()
    shutil.rmtree(data)
    return journal, took, compaction


def metric(text, name):
    m = re.search(rf"(?m)^{name} ([0-9.e+-]+)$", text)
    return float(m.group(1)) if m else None


def compaction_at_start(port):
    """The rewrite begun at start runs beside the loop: once it is done, how
    long it took and the longest loop iteration meanwhile (from /metrics)."""
    deadline = time.time() + 120
    while time.time() < deadline:
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: r\r\n\r\n")
        text = read_response(s)[1].decode()
        s.close()
        if (metric(text, "httprelay_journal_compactions_total") or 0) >= 1:
            return (metric(text, "httprelay_journal_compaction_seconds_total"),
                    metric(text, "httprelay_loop_iteration_max_seconds"))
        time.sleep(0.01)
    return None, None


def main():
    for kind in () if "--startup" in sys.argv else ("batch", "always", "pubky"):
        name = {"batch": "httprelay --fsync batch", "always": "httprelay --fsync always",
                "pubky": "http-relay 0.7.0 --persist-db"}[kind]
        (one, sixteen), amp = rate(kind)
        checked, lost = kill_test(kind)
        print(f"{name:32s} {one:8.0f} POST/s (1 writer) {sixteen:8.0f} POST/s (16) "
              f"{amp:5.2f} disk bytes per message byte; kill test: {checked} acknowledged, {lost} lost")
    for count, size in ((100_000, 200), (100_000, 1000)):
        journal, took, (rewrite, longest) = startup(count, size)
        print(f"startup with {count} messages of {size} B ({journal / 1e6:.0f} MB journal): {took * 1000:.0f} ms; "
              f"its rewrite took {rewrite * 1000:.0f} ms beside the loop, longest loop iteration meanwhile {longest * 1000:.1f} ms")


if __name__ == "__main__":
    main()

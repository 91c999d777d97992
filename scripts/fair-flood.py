#!/usr/bin/env python3
"""The fair share under floods, as docs/hostile-input.md reports it: a relay of this
build (target/release/httprelay) with default flags takes 3,000 link consumers from
127.0.0.2, then (with --max-channels 4096) 6,000 claims from it, then a full relay of
16 slots; each time a bystander on 127.0.0.3 does /health, a link transfer, an mcast
publish and read, and a claim, and its latencies are printed.

    ulimit -n 10000; python3 scripts/fair-flood.py
"""
import os
import re
import socket
import subprocess
import threading
import time

BIN = os.environ.get("RELAY_BIN", os.path.join(os.path.dirname(__file__), "..", "target", "release", "httprelay"))

def conn(src, port):
    s = socket.socket()
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s

def status_of(s, timeout):
    s.settimeout(timeout)
    try:
        d = s.recv(4096)
    except socket.timeout:
        return None
    if not d:
        return 0
    return int(d.split(b" ")[1])

def req(method, path, body=b"", extra=""):
    return f"{method} {path} HTTP/1.1\r\nHost: r\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body

def exchange(src, port, data):
    s = conn(src, port); s.sendall(data); st = status_of(s, 10); s.close(); return st

def bystander(port, tag):
    took = {}
    t = time.perf_counter(); assert exchange("127.0.0.3", port, req("GET", "/health")) == 200; took["health"] = time.perf_counter() - t
    t = time.perf_counter()
    c = conn("127.0.0.3", port); c.sendall(req("GET", f"/link/by{tag}"))
    assert exchange("127.0.0.3", port, req("POST", f"/link/by{tag}", b"hi")) == 200
    assert status_of(c, 10) == 200; c.close(); took["link"] = time.perf_counter() - t
    t = time.perf_counter()
    assert exchange("127.0.0.3", port, req("POST", f"/mcast/n{tag}", b"m")) == 200
    assert exchange("127.0.0.3", port, req("GET", f"/mcast/n{tag}")) == 200
    took["mcast"] = time.perf_counter() - t
    t = time.perf_counter()
    o = conn("127.0.0.3", port); o.sendall(req("POST", f"/link/mine{tag}?wsecret=k", b"x"))
    time.sleep(0.05)
    st = exchange("127.0.0.3", port, req("POST", f"/link/mine{tag}?wsecret=bad", b"y"))
    took["claim"] = time.perf_counter() - t - 0.05
    assert st == 401, st
    o.close()
    return {k: f"{v*1000:.2f} ms" for k, v in took.items()}

def metric(port, name):
    s = conn("127.0.0.1", port); s.sendall(req("GET", "/metrics")); s.settimeout(5)
    data = b""
    while True:
        d = s.recv(65536)
        if not d: break
        data += d
        if b"httprelay_sse_events_total" in data: break
    s.close()
    m = re.search(rb"\n" + re.escape(name.encode()) + rb" (\d+)", data)
    return int(m.group(1))

def start(flags):
    p = subprocess.Popen([BIN, "-a", "127.0.0.1", "-p", "0"] + flags, stderr=subprocess.PIPE)
    port = None
    while port is None:
        line = p.stderr.readline().decode()
        m = re.search(r"listening on 127.0.0.1:(\d+)", line)
        if m: port = int(m.group(1))
    threading.Thread(target=lambda: p.stderr.read(), daemon=True).start()
    return p, port

# 1: 3000 link consumers from 127.0.0.2, default flags
p, port = start([])
held, codes = [], {}
for i in range(3000):
    s = conn("127.0.0.2", port); s.sendall(req("GET", f"/link/flood{i}"))
    held.append(s)
time.sleep(0.5)
for s in held:
    st = status_of(s, 0.01)
    codes[st] = codes.get(st, 0) + 1
print("waiters flood (default flags):", {("waiting" if k is None else k): v for k, v in codes.items()})
print("  bystander:", bystander(port, "a"))
print("  client_refusals_total", metric(port, "httprelay_client_refusals_total"), "fair_share_evictions_total", metric(port, "httprelay_fair_share_evictions_total"))
for s in held: s.close()
time.sleep(0.5)
print("  httprelay_clients after the flooder left:", metric(port, "httprelay_clients"))
p.terminate(); p.wait()

# 2: claims from 127.0.0.2 with --max-channels 4096
p, port = start(["--max-channels", "4096"])
codes = {}
for i in range(6000):
    s = conn("127.0.0.2", port); s.sendall(req("POST", f"/link/c{i}?wsecret=s{i}", b"x"))
    st = status_of(s, 0.02)
    codes[st] = codes.get(st, 0) + 1
    s.close()
print("claims flood (--max-channels 4096):", {("kept" if k is None else k): v for k, v in codes.items()})
time.sleep(0.2)
print("  remembered:", metric(port, "httprelay_channels_remembered"))
print("  bystander:", bystander(port, "b"))
p.terminate(); p.wait()

# 3: full relay: 16 slots, the flooder holds 12
p, port = start(["--max-conns", "16", "--max-conns-per-client", "12"])
hog = []
for i in range(12):
    s = conn("127.0.0.2", port); s.sendall(req("GET", f"/link/hog{i}")); hog.append(s); time.sleep(0.01)
others = []
for i in range(4):
    s = conn("127.0.0.4", port); s.sendall(req("GET", f"/link/o{i}")); others.append(s)
time.sleep(0.3)
print("full relay (16 slots; 12 from 127.0.0.2, 4 from 127.0.0.4):")
print("  bystander:", bystander(port, "c"))
print("  hog statuses:", [status_of(s, 0.01) for s in hog])
print("  others statuses:", [status_of(s, 0.01) for s in others])
p.terminate(); p.wait()

#!/usr/bin/env python3
"""HTTPS side by side on this machine: the relay's tls build, nginx
terminating TLS (`return 200`), and piping-server-rust with --enable-https,
all with the same certificate (ECDSA P-256, made here with openssl).

    python3 scripts/tls-compare.py RELAY_TLS_BIN [PIPING_SERVER_RUST_BIN] [ROUNDS]

RELAY_TLS_BIN: `cargo build --release --features tls` gives
target/release/httprelay. nginx comes from Debian's packages (`nginx` or
`nginx-light` on PATH or in /usr/sbin); piping-server-rust is built from its
source (docs/performance.md says how). A server that is missing is left out.

Printed per server and round:
- handshakes/s: `openssl s_time -new` for 5 s (full handshakes, one client,
  a small response on each), and the server's CPU per handshake;
- one exchange over keep-alive TLS connections, 2,000 times: the relay's
  link exchange of 64 bytes (consumer waiting, then the producer), the same
  transfer through piping-server-rust, and one `return 200` request through
  nginx (a floor: no counterpart to pair with); p50 and p99 in microseconds;
- streaming 1 GiB, curl at both ends over TLS (Content-Length), MiB/s and
  the server's CPU seconds per GiB; nginx serves a 1 GiB file to curl
  instead (one direction of TLS, where a relay does two);
- memory per idle TLS connection: 1,000 connections, each after a
  handshake and one request, the servers' RSS growth divided by 1,000.
"""

import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loopback import free_port, wait_listening  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")
GIB = 1 << 30


def pids_of(root):
    """The process and its children (nginx's workers)."""
    pids = [root]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == root:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / CLK


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def read_response(sock, buf):
    """Reads one HTTP/1.1 response (Content-Length or chunked); returns
    (status, body, leftover)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("closed before a head")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    if b"content-length" in fields:
        n = int(fields[b"content-length"])
        while len(rest) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError("closed in a body")
            rest += chunk
        return status, rest[:n], rest[n:]
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += sock.recv(65536)
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                rest += sock.recv(65536)
            body += rest[:size]
            rest = rest[size + 2:]
            if size == 0:
                return status, body, rest
    return status, b"", rest


class Server:
    def __init__(self, name, argv, port, https_port, cwd=None):
        self.name = name
        self.https_port = https_port
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_listening(https_port)
        if port:
            wait_listening(port)
        time.sleep(0.3)
        self.pids = pids_of(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def tls_context(cert):
    ctx = ssl.create_default_context(cafile=cert)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def connect(ctx, port):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(10)
    return ctx.wrap_socket(s, server_hostname="localhost")


def handshakes(server, path):
    before = cpu_seconds(server.pids)
    out = subprocess.run(
        ["openssl", "s_time", "-connect", f"127.0.0.1:{server.https_port}", "-new",
         "-time", "5", "-www", path],
        capture_output=True, text=True).stdout
    spent = cpu_seconds(server.pids) - before
    for line in out.splitlines():
        if "real seconds" in line:
            words = line.split()
            count, secs = int(words[0]), float(words[3])
            return count / secs, spent / max(count, 1) * 1e6
    return float("nan"), float("nan")


def exchanges(server, ctx, kind, n=2000):
    port = server.https_port
    times = []
    if kind == "nginx":
        c = connect(ctx, port)
        buf = b""
        for _ in range(n):
            t0 = time.perf_counter()
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            _, _, buf = read_response(c, buf)
            times.append(time.perf_counter() - t0)
        c.close()
    else:
        path = "/link/lat" if kind == "relay" else "/lat"
        body = b"x" * 64
        stuck = 0
        consumer = producer = None
        for _ in range(n):
            if consumer is None:
                consumer, producer = connect(ctx, port), connect(ctx, port)
                cbuf = pbuf = b""
            try:
                consumer.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                time.sleep(0.0005)
                t0 = time.perf_counter()
                producer.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n"
                                 "Content-Length: 64\r\n\r\n".encode() + body)
                _, got, cbuf = read_response(consumer, cbuf)
                times.append(time.perf_counter() - t0)
                assert got == body, got
                _, _, pbuf = read_response(producer, pbuf)
            except (socket.timeout, EOFError, ssl.SSLError):
                # A server that does not go on on the same connections:
                # new ones (counted; the exchange is not timed).
                stuck += 1
                consumer.close()
                producer.close()
                consumer = producer = None
        if consumer is not None:
            consumer.close()
            producer.close()
        if stuck:
            print(f"  ({server.name}: {stuck} exchanges stuck 10 s and were retried on new "
                  "connections)", flush=True)
    times.sort()
    return times[len(times) // 2] * 1e6, times[len(times) * 99 // 100] * 1e6


def curl(port, cert, path, args):
    return subprocess.Popen(
        ["curl", "-fsS", "--http1.1", "--cacert", cert, *args,
         "--resolve", f"localhost:{port}:127.0.0.1", f"https://localhost:{port}{path}"],
        stdout=subprocess.DEVNULL)


def stream(server, cert, kind, big):
    port = server.https_port
    before = cpu_seconds(server.pids)
    t0 = time.perf_counter()
    if kind == "nginx":
        if curl(port, cert, "/big", ["-o", "/dev/null"]).wait() != 0:
            sys.exit("nginx did not serve the file")
    else:
        path = "/link/s" if kind == "relay" else "/s"
        consumer = curl(port, cert, path, ["-o", "/dev/null"])
        time.sleep(0.2)
        producer = curl(port, cert, path, ["-T", big])
        producer.wait()
        consumer.wait()
    secs = time.perf_counter() - t0
    spent = cpu_seconds(server.pids) - before
    return GIB / (1 << 20) / secs, spent / (os.path.getsize(big) / GIB)


def idle_memory(server, ctx, path, n=1000):
    before = rss_kib(server.pids)
    conns = []
    for _ in range(n):
        c = connect(ctx, server.https_port)
        c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        read_response(c, b"")
        conns.append(c)
    time.sleep(0.5)
    grown = rss_kib(server.pids) - before
    for c in conns:
        c.close()
    return grown * 1024 / n


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    relay_bin = sys.argv[1]
    psr_bin = sys.argv[2] if len(sys.argv) > 2 and not sys.argv[2].isdigit() else None
    rounds = int(sys.argv[-1]) if sys.argv[-1].isdigit() else 1
    nginx_bin = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    tmp = tempfile.mkdtemp(prefix="tls-compare-")
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    big = os.path.join(tmp, "big.bin")
    with open(big, "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(1024):
            f.write(block)
    ctx = tls_context(cert)

    def start(kind):
        port, tport = free_port(), free_port()
        if kind == "relay":
            return Server("httprelay", [relay_bin, "-a", "127.0.0.1", "-p", str(port),
                                        "--tls-port", str(tport), "--tls-cert", cert,
                                        "--tls-key", key, "--max-conns", "4000",
                                        "--max-conns-per-client", "100000"], port, tport)
        if kind == "psr":
            return Server("piping-server-rust", [psr_bin, "--host", "127.0.0.1", "--http-port",
                                                 str(port), "--enable-https", "--https-port",
                                                 str(tport), "--crt-path", cert, "--key-path",
                                                 key], port, tport)
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            user = "user root;\n" if os.geteuid() == 0 else ""
            f.write(f"""{user}worker_processes 1;
daemon off;
error_log stderr;
pid {tmp}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{tport} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location = /big {{ alias {big}; }}
    location / {{ return 200 "ok\\n"; }}
  }}
}}
""")
        return Server("nginx", [nginx_bin, "-c", conf, "-p", tmp], None, tport)

    kinds = ["relay"] + (["nginx"] if nginx_bin else []) + (["psr"] if psr_bin else [])
    paths = {"relay": "/health", "nginx": "/", "psr": "/version"}
    print(f"servers: {', '.join(kinds)}; {rounds} round(s)")
    for r in range(rounds):
        for kind in kinds:
            server = start(kind)
            try:
                hs, cpu_hs = handshakes(server, paths[kind])
                p50, p99 = exchanges(server, ctx, kind)
                mibs, cpu_gib = stream(server, cert, kind, big)
                idle = idle_memory(server, ctx, paths[kind])
                print(f"round {r + 1} {server.name:19} handshakes {hs:7.0f}/s "
                      f"({cpu_hs:5.0f} us CPU each) | exchange p50 {p50:6.0f} us "
                      f"p99 {p99:6.0f} us | stream {mibs:6.0f} MiB/s "
                      f"{cpu_gib:5.2f} CPU s/GiB | idle TLS conn {idle / 1024:5.1f} KiB",
                      flush=True)
            finally:
                server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

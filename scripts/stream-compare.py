#!/usr/bin/env python3
"""Streams through this relay and through piping-server-rust (hyper on tokio)
side by side, with curl at both ends as Piping users run it: the receiver
`curl URL -o /dev/null`, the sender `curl -T FILE URL` (Content-Length) or
`curl -T - URL < FILE` (chunked: curl sends stdin in chunks of about 64 KiB).
For each server and framing, rounds interleaved: MiB/s, the server's CPU
seconds per GiB, the two curls' CPU seconds per GiB, and the total.

    python3 scripts/stream-compare.py PATH-TO-piping-server [ROUNDS]

piping-server-rust is not on crates.io: build it from its source and give its
binary. The relay is target/release/httprelay (cargo build --release), or
RELAY_BIN. The body is 1 GiB of random bytes in /dev/shm.
"""
import os
import statistics
import subprocess
import sys
import time

from loopback import free_port, wait_listening

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OURS = os.environ.get("RELAY_BIN", os.path.join(ROOT, "target/release/httprelay"))
BODY = "/dev/shm/httprelay-stream-compare"
SIZE = 1 << 30


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(args, **kw):
    """Starts `args` under /usr/bin/time; returns the process."""
    return subprocess.Popen(["/usr/bin/time", "-f", "%U %S"] + args,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, **kw)


def used(p):
    _, err = p.communicate()
    return sum(float(x) for x in err.decode().split()[-2:])


def transfer(url, pid, chunked):
    before = cpu_seconds(pid)
    receiver = timed(["curl", "-s", url, "-o", "/dev/null"])
    time.sleep(0.2)
    start = time.perf_counter()
    if chunked:
        with open(BODY, "rb") as body:
            sender = timed(["curl", "-s", "-T", "-", url, "-o", "/dev/null"], stdin=body)
            clients = used(sender)
    else:
        sender = timed(["curl", "-s", "-T", BODY, url, "-o", "/dev/null"])
        clients = used(sender)
    clients += used(receiver)
    elapsed = time.perf_counter() - start
    gib = SIZE / (1 << 30)
    return SIZE / (1 << 20) / elapsed, (cpu_seconds(pid) - before) / gib, clients / gib


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    reference, rounds = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3
    if not os.path.exists(BODY) or os.path.getsize(BODY) != SIZE:
        with open("/dev/urandom", "rb") as src, open(BODY, "wb") as dst:
            for _ in range(SIZE >> 20):
                dst.write(src.read(1 << 20))
    ours_port, theirs_port = free_port(), free_port()
    servers = [
        ("httprelay", subprocess.Popen([OURS, "-a", "127.0.0.1", "-p", str(ours_port)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
         f"http://127.0.0.1:{ours_port}/link/compare"),
        ("piping-server-rust", subprocess.Popen([reference, "--host", "127.0.0.1", "--http-port", str(theirs_port)],
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
         f"http://127.0.0.1:{theirs_port}/compare"),
    ]
    wait_listening(ours_port)
    wait_listening(theirs_port)
    results = {}
    try:
        for _ in range(rounds):
            for name, process, url in servers:
                for chunked in (False, True):
                    results.setdefault((name, chunked), []).append(transfer(url, process.pid, chunked))
    finally:
        for _, process, _ in servers:
            process.kill()
    print("| server | framing | MiB/s | server CPU s/GiB | curls CPU s/GiB | total CPU s/GiB |")
    print("|---|---|---|---|---|---|")
    for (name, chunked), runs in results.items():
        m = [statistics.median(r[i] for r in runs) for i in range(3)]
        print(f"| {name} | {'chunked' if chunked else 'Content-Length'} | {m[0]:,.0f} | {m[1]:.2f} | {m[2]:.2f} | {m[1] + m[2]:.2f} |")


if __name__ == "__main__":
    main()

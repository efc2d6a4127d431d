#!/usr/bin/python3
"""Raw TCP client for the HTTP conformance spec: writes exact bytes, records what comes back.

The runtime has no socket binding, and qc.fetch (libcurl) would fix up the very framing the
spec wants to get wrong, so the spec hands this script a plan as JSON on stdin and reads a
JSON report on stdout. Strings carry bytes as latin-1 code points, both ways.

Plan: {"port": P, "steps": [...], "timeout_ms": T, "hold": {...}, "health": true}
  steps: {"send": S}                      write S in one call
         {"send_slow": S, "interval_ms": N} write S one byte at a time, N ms apart
         {"sleep_ms": N}
         {"shut_wr": true}                 shutdown(SHUT_WR): a half-closed client
  timeout_ms: how long to wait, after the last step, for the server to close (default 3000)
  hold: {"count": N, "send": S, "interval_ms": I, "seconds": D}: first opens N connections,
        writes S on each, then one more byte of padding every I ms while the main plan runs,
        for D seconds at most (a slowloris crowd)
  health: after the main connection ends, GET /health on a new connection
Report: {"recv": bytes, "end": "eof"|"reset"|"timeout", "end_ms": t, "first_ms": t,
         "send_error": "...", "health": {"status": n, "ms": t}, "held_open": n}
"""
import json
import socket
import sys
import threading
import time

T0 = time.monotonic()


def ms():
    return int((time.monotonic() - T0) * 1000)


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def reader(sock, out, done):
    sock.settimeout(None)
    try:
        while True:
            b = sock.recv(65536)
            if not b:
                out["end"] = "eof"
                break
            if "first_ms" not in out:
                out["first_ms"] = ms()
            out["recv"] += b.decode("latin-1")
    except ConnectionResetError:
        out["end"] = "reset"
    except OSError as e:
        out["end"] = "error " + str(e)
    out["end_ms"] = ms()
    done.set()


def health(port):
    t = time.monotonic()
    try:
        s = connect(port)
        s.settimeout(5)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
        s.close()
        line = data.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        return {"status": status, "ms": int((time.monotonic() - t) * 1000)}
    except OSError as e:
        return {"status": 0, "error": str(e), "ms": int((time.monotonic() - t) * 1000)}


def hold_crowd(port, spec, stop):
    conns = []
    for _ in range(spec.get("count", 0)):
        try:
            c = connect(port)
            c.sendall(spec.get("send", "").encode("latin-1"))
            conns.append(c)
        except OSError:
            break
    deadline = time.monotonic() + spec.get("seconds", 5)
    interval = spec.get("interval_ms", 1000) / 1000.0
    while not stop.is_set() and time.monotonic() < deadline:
        stop.wait(interval)
        for c in conns:
            try:
                c.send(b"X")
            except OSError:
                pass
    still = 0
    for c in conns:
        try:
            c.setblocking(False)
            try:
                if c.recv(1, socket.MSG_PEEK) == b"":
                    pass  # closed by the server
                else:
                    still += 1
            except BlockingIOError:
                still += 1
        except OSError:
            pass
        c.close()
    return still


def main():
    plan = json.load(sys.stdin)
    port = plan["port"]
    report = {"recv": "", "end": "timeout"}
    stop_crowd = threading.Event()
    crowd = {}
    crowd_thread = None
    if plan.get("hold"):
        def run_crowd():
            crowd["held_open"] = hold_crowd(port, plan["hold"], stop_crowd)
        crowd_thread = threading.Thread(target=run_crowd, daemon=True)
        crowd_thread.start()
        time.sleep(plan["hold"].get("settle_ms", 300) / 1000.0)
    sock = connect(port)
    done = threading.Event()
    seen = {"recv": ""}  # the reader's; copied into the report once the wait is over
    t = threading.Thread(target=reader, args=(sock, seen, done), daemon=True)
    t.start()
    for step in plan.get("steps", []):
        try:
            if "send" in step:
                sock.sendall(step["send"].encode("latin-1"))
            elif "send_slow" in step:
                for ch in step["send_slow"].encode("latin-1"):
                    if done.is_set():
                        break
                    sock.sendall(bytes([ch]))
                    time.sleep(step.get("interval_ms", 100) / 1000.0)
            elif "sleep_ms" in step:
                time.sleep(step["sleep_ms"] / 1000.0)
            elif step.get("shut_wr"):
                sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            report["send_error"] = str(e)
            break
    done.wait(plan.get("timeout_ms", 3000) / 1000.0)
    finished = done.is_set()
    for key in ("recv", "first_ms", "end", "end_ms"):
        if key in seen:
            report[key] = seen[key]
    if not finished:  # what the reader sees after our own close is not the server's doing
        report["end"] = "timeout"
        report["end_ms"] = ms()
    sock.close()
    if plan.get("health"):
        report["health"] = health(port)
    if crowd_thread:
        stop_crowd.set()
        crowd_thread.join(10)
        report["held_open"] = crowd.get("held_open", 0)
    json.dump(report, sys.stdout)


main()

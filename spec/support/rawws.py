#!/usr/bin/python3
"""Raw WebSocket client for spec/websocket_spec.lua: writes exact bytes, parses what comes back.

The npm `ws` client refuses to send the malformed frames the spec needs (unmasked frames,
2^63 lengths, a Close with one byte), so this one sends whatever the plan says. Bytes travel
as hex both ways. The plan is JSON on stdin; the report is JSON on stdout.

Plan: {"port": P, "path": "/ws/echo", "head": "...raw request head, text..." (default: a valid
       upgrade for path; "no_head": true sends none, for steps that send it), "steps": [...], "read": true, "rcvbuf": N, "timeout_ms": T}
  steps: {"send": HEX}                       write the bytes in one call
         {"send_slow": HEX, "interval_ms": N} one byte at a time
         {"sleep_ms": N}
         {"close": true}                      close the socket (a drop without a Close frame)
  read: false leaves the socket unread until the end (a client that never reads)
  timeout_ms: how long to wait, after the last step, for the server to close (default 3000)
Report: {"status": n, "head": text, "frames": [{"op": n, "fin": b, "payload": HEX}],
         "rest": HEX, "end": "eof"|"reset"|"timeout"|"closed", "end_ms": t}
"""
import json
import socket
import struct
import sys
import threading
import time

T0 = time.monotonic()


def ms():
    return int((time.monotonic() - T0) * 1000)


def reader(sock, out, done):
    try:
        while True:
            b = sock.recv(65536)
            if not b:
                out["end"] = "eof"
                break
            out["data"] += b
    except ConnectionResetError:
        out["end"] = "reset"
    except OSError as e:
        out["end"] = "error " + str(e)
    out["end_ms"] = ms()
    done.set()


def parse(data, report):
    at = data.find(b"\r\n\r\n")
    if at < 0:
        report["head"] = data.decode("latin-1")
        return
    head = data[:at].decode("latin-1")
    report["head"] = head
    parts = head.split(" ", 2)
    report["status"] = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    pos = at + 4
    if report["status"] != 101:
        report["rest"] = data[pos:].hex()
        return
    frames = []
    while pos + 2 <= len(data):
        b0, b1 = data[pos], data[pos + 1]
        n = b1 & 0x7F
        p = pos + 2
        if n == 126:
            if p + 2 > len(data):
                break
            n = struct.unpack(">H", data[p:p + 2])[0]
            p += 2
        elif n == 127:
            if p + 8 > len(data):
                break
            n = struct.unpack(">Q", data[p:p + 8])[0]
            p += 8
        if b1 & 0x80:  # a server must not mask; reported so the spec can see it
            p += 4
        if p + n > len(data):
            break
        frames.append({"op": b0 & 0x0F, "fin": bool(b0 & 0x80), "masked": bool(b1 & 0x80),
                       "payload": data[p:p + n].hex()})
        pos = p + n
    report["frames"] = frames
    report["rest"] = data[pos:].hex()


def main():
    plan = json.load(sys.stdin)
    port = plan["port"]
    path = plan.get("path", "/ws/echo")
    head = "" if plan.get("no_head") else plan.get("head") or (
        "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" % path)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if plan.get("rcvbuf"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, plan["rcvbuf"])
    sock.connect(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    report = {"frames": [], "end": "timeout"}
    seen = {"data": b""}
    done = threading.Event()
    reading = plan.get("read", True)
    if reading:
        threading.Thread(target=reader, args=(sock, seen, done), daemon=True).start()
    closed = False
    try:
        sock.sendall(head.encode("latin-1"))
        for step in plan.get("steps", []):
            if "send" in step:
                sock.sendall(bytes.fromhex(step["send"]))
            elif "send_slow" in step:
                for ch in bytes.fromhex(step["send_slow"]):
                    if done.is_set():
                        break
                    sock.sendall(bytes([ch]))
                    time.sleep(step.get("interval_ms", 50) / 1000.0)
            elif "sleep_ms" in step:
                time.sleep(step["sleep_ms"] / 1000.0)
            elif step.get("close"):
                sock.close()
                closed = True
                break
    except OSError as e:
        report["send_error"] = str(e)
    if not closed:
        if reading:
            done.wait(plan.get("timeout_ms", 3000) / 1000.0)
        else:
            time.sleep(plan.get("timeout_ms", 3000) / 1000.0)
    if done.is_set():
        report["end"] = seen["end"]
        report["end_ms"] = seen["end_ms"]
    elif closed:
        report["end"] = "closed"
    report["end_ms"] = report.get("end_ms", ms())
    if not closed:
        sock.close()
    parse(seen["data"], report)
    json.dump(report, sys.stdout)


main()

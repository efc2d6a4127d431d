#!/usr/bin/env python3
"""A live WebSocket client that stops reading: the slow client of the live specs.

    python3 ws_slow.py PORT PATH [--sleep S] [--rcvbuf N] [--header "Name: value"]...

Connects to 127.0.0.1:PORT with a small receive buffer (so the kernel holds little for it),
upgrades PATH, prints {"event":"open","status":101}, then reads nothing for S seconds while the
server's queue for it fills. Then it reads what is there until the server's Close or EOF, and
prints {"event":"close","code":C,"reason":R,"messages":N,"last_seq":SEQ} (code 1006 for an EOF
without a Close). Exits by itself.
"""
import base64
import json
import os
import socket
import struct
import sys
import time


def out(o):
    sys.stdout.write(json.dumps(o) + "\n")
    sys.stdout.flush()


def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    args = sys.argv[3:]
    sleep_s, rcvbuf, headers = 3.0, 4096, []
    i = 0
    while i < len(args):
        if args[i] == "--sleep":
            sleep_s = float(args[i + 1])
        elif args[i] == "--rcvbuf":
            rcvbuf = int(args[i + 1])
        elif args[i] == "--header":
            headers.append(args[i + 1])
        i += 2
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
    for h in headers:
        req += h + "\r\n"
    s.sendall((req + "\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(1)
        if not d:
            out({"event": "error", "message": "closed during the handshake", "head": buf.decode(errors="replace")})
            return
        buf += d
    status = int(buf.split(b" ", 2)[1])
    out({"event": "open", "status": status})
    if status != 101:
        return
    time.sleep(sleep_s)
    s.settimeout(10)
    data = b""
    messages, last_seq, code, reason = 0, None, 1006, ""
    try:
        while True:
            # frames: FIN/opcode, length (server frames are unmasked)
            while True:
                if len(data) >= 2:
                    n = data[1] & 0x7F
                    hl = 2 + (2 if n == 126 else 8 if n == 127 else 0)
                    if len(data) >= hl:
                        if n == 126:
                            n = struct.unpack(">H", data[2:4])[0]
                        elif n == 127:
                            n = struct.unpack(">Q", data[2:10])[0]
                        if len(data) >= hl + n:
                            break
                d = s.recv(65536)
                if not d:
                    raise EOFError
                data += d
            op = data[0] & 0x0F
            payload = data[hl:hl + n]
            data = data[hl + n:]
            if op == 8:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                reason = payload[2:].decode(errors="replace")
                break
            if op == 1:
                messages += 1
                try:
                    last_seq = json.loads(payload).get("seq", last_seq)
                except ValueError:
                    pass
    except (EOFError, socket.timeout, ConnectionResetError):
        pass
    out({"event": "close", "code": code, "reason": reason, "messages": messages, "last_seq": last_seq})


main()

#!/usr/bin/python3
"""Bench peer: the seed's stack (FastAPI + PyJWT + uvicorn) serving POST /tokens/generate.

    /usr/bin/python3 fastapi_tokens.py --port P [--host 127.0.0.1] [--key K] [--secret S] [--url U]

Same contract as node_tokens.js: body {room_name, participant_identity, participant_name?, participant_type}
-> 200 {token, url, room_name, participant_identity, participant_type, expires_at}; a missing field or an unknown
participant_type -> 422 (FastAPI's own {"detail": [...]}). The token is HS256 (PyJWT) with the claims LiveKit reads:
iss, sub, nbf, exp (2 h), name (when given), video. GET /health answers like node_health.js.
One worker, log level warning. Prints "listening <port>" when ready (port 0 = pick one). Exits on SIGTERM/SIGINT,
or when a piped stdin closes. Needs Debian's python3-fastapi python3-uvicorn python3-jwt (run with /usr/bin/python3).
"""
import argparse
import datetime
import os
import signal
import socket
import stat
import sys
import threading
import time
from typing import Literal, Optional

import jwt
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, constr

TTL_S = 2 * 60 * 60
STARTUP_GRACE_S = 0.5

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--port", type=int, default=0)
ap.add_argument("--host", default="127.0.0.1")
ap.add_argument("--key", default=os.environ.get("LIVEKIT_API_KEY") or "devkey")
ap.add_argument("--secret", default=os.environ.get("LIVEKIT_API_SECRET") or "secret")
ap.add_argument("--url", default=os.environ.get("LIVEKIT_URL") or "ws://127.0.0.1:7880")
args = ap.parse_args()


class TokenRequest(BaseModel):
    room_name: constr(strict=True, min_length=1)
    participant_identity: constr(strict=True, min_length=1)
    participant_name: Optional[constr(strict=True)] = None
    participant_type: Literal["interviewer", "candidate", "agent"]


def video_grant(participant_type: str, room: str) -> dict:
    if participant_type == "agent":
        return {"roomJoin": True, "room": room, "hidden": True, "canSubscribe": True,
                "canPublish": False, "canPublishData": True}
    return {"roomJoin": True, "room": room, "canPublish": True, "canSubscribe": True}


app = FastAPI(title="quantcoach seed tokens (bench peer)")
started = time.monotonic()
reloaded_at = datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


@app.on_event("startup")
async def announce() -> None:
    print(f"listening {bound_port}", flush=True)


@app.get("/health")
async def health() -> dict:
    return {"status": "ok", "uptime_s": time.monotonic() - started, "generation": 1,
            "reloaded_at": reloaded_at, "reload_error": None}


@app.post("/tokens/generate")
async def generate(req: TokenRequest) -> dict:
    now = int(time.time())
    exp = now + TTL_S
    claims = {"iss": args.key, "sub": req.participant_identity, "nbf": now, "exp": exp}
    if req.participant_name:
        claims["name"] = req.participant_name
    claims["video"] = video_grant(req.participant_type, req.room_name)
    token = jwt.encode(claims, args.secret, algorithm="HS256")
    expires_at = datetime.datetime.fromtimestamp(exp, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"token": token, "url": args.url, "room_name": req.room_name,
            "participant_identity": req.participant_identity, "participant_type": req.participant_type,
            "expires_at": expires_at}


def exit_with_stdin() -> None:
    """A piped stdin closing means whoever started us let go; an EOF right at start was never meant for us."""
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return
    t0 = time.monotonic()

    def watch() -> None:
        try:
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        if time.monotonic() - t0 < STARTUP_GRACE_S:
            print("fastapi_tokens: stdin was closed at start; not tying my life to it", file=sys.stderr)
            return
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


# IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP;
# without it every answer waits ~40 ms for a delayed ACK and the peer looks idle, not slow.
sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM,
                     socket.IPPROTO_TCP)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind((args.host, args.port))
sock.listen(2048)
bound_port = sock.getsockname()[1]

exit_with_stdin()
uvicorn.Server(uvicorn.Config(app, log_level="warning", workers=1)).run(sockets=[sock])

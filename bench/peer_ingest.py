#!/usr/bin/python3
"""Bench peer: the ingest pipeline as the seed would write it in Python, to measure ours against.

A `websockets` server (asyncio, Debian's python3-websockets) takes Egress connections on any path,
and per binary message downmixes 48 kHz stereo s16le to mono and resamples it to 16 kHz with
`audioop` (tomono, ratecv), handing the result to a sink that only counts, like our
QC_STT_ENGINE=null. A frame split across messages is carried over, as ours does. Text messages
({"muted":...}) are parsed. Run with /usr/bin/python3 (Debian's packages):
    bench/peer_ingest.py --port 0        prints "listening PORT"; SIGTERM or SIGINT stops it
"""
import argparse
import asyncio
import json
import signal
import sys
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # audioop goes in Python 3.13
    import audioop

import websockets

IN_RATE, OUT_RATE, WIDTH = 48000, 16000, 2


class Sink:
    """Counts what an STT engine would be handed."""

    samples = 0
    tracks = 0


async def track(ws, *_):
    Sink.tracks += 1
    state = None
    carry = b""
    muted = False
    try:
        async for msg in ws:
            if isinstance(msg, str):
                muted = bool(json.loads(msg).get("muted", muted))
                continue
            if carry:
                msg = carry + msg
            whole = len(msg) - len(msg) % 4
            carry = msg[whole:]
            mono = audioop.tomono(msg[:whole], WIDTH, 0.5, 0.5)
            out, state = audioop.ratecv(mono, WIDTH, 1, IN_RATE, OUT_RATE, state)
            Sink.samples += len(out) // WIDTH
    except websockets.ConnectionClosed:
        pass
    finally:
        Sink.tracks -= 1


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    # No compression (the egress offers none) and a message limit well above 10 ms of audio.
    async with websockets.serve(track, "127.0.0.1", args.port, compression=None, max_size=1 << 20,
                                max_queue=64) as server:
        print("listening", server.sockets[0].getsockname()[1], flush=True)
        await stop
    print("samples", Sink.samples, file=sys.stderr, flush=True)


if __name__ == "__main__":
    asyncio.run(main())

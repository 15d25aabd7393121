"""How many callers `rtcodec serve` keeps in real time: `python -m bench.serve`.

A server (full-size models with random weights, in its own process) and N simulated callers on localhost, each
sending one block of speech every block of wall-clock time for `--seconds`. Per caller: the round trip of each
block (sent until the output of the tick that consumed it arrives: the server's queueing and compute, without
the codec's algorithmic latency, which is fixed), and the late blocks (silence stood in). N doubles until a
run is not real time: more than 1 % of blocks late, or a p99 round trip over `--budget-ms`. `--ray` runs the
server as one Ray Serve replica behind Ray's proxy instead, to measure what the proxy adds. `--hostile-uploads N`
measures instead one caller while N voice uploads of 30 s clips arrive at once, and how long a new caller with a
bundled voice waits for its `ready` meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import struct
import subprocess
import time
import urllib.request

import numpy as np

from .common import latency, speech
from .report import cpu_name


def _bench_models():
    """Full-size random models, on a replica: one core fewer than the machine's for torch (as `rtcodec serve`)."""
    import torch

    from rtcodec.hub import Pretrained
    from rtcodec.serve import default_threads

    from .common import models

    torch.set_num_threads(default_threads())
    torch.set_grad_enabled(False)
    return Pretrained(*models())


def _serve_on_ray(port: int, slots: int, hops: int) -> None:
    import ray
    from ray import serve

    from rtcodec.serve import ServeOptions
    from rtcodec.serve.ray import application, run

    ray.init(include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    options = ServeOptions(slots=slots, hops_per_tick=hops)
    run(application(_bench_models, options), options)
    while True:
        time.sleep(3600)


def _serve(port: int, slots: int, hops: int) -> None:
    import uvicorn

    from rtcodec.serve import ServeOptions, create_app
    from rtcodec.serve.protocol import MAX_MESSAGE_BYTES

    app = create_app(_bench_models(), ServeOptions(slots=slots, hops_per_tick=hops))
    config = uvicorn.Config(app, "127.0.0.1", port, ws_max_size=MAX_MESSAGE_BYTES, log_level="warning")
    uvicorn.Server(config).run()


async def _caller(url: str, wav: np.ndarray, seconds: float, start_at: float) -> dict:
    import websockets

    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"version": 1, "mode": "convert", "voice": "bright", "latency": "exact"}))
        ready = json.loads(await ws.recv())
        if ready.get("type") != "ready":
            raise RuntimeError(f"not served: {ready}")
        block = ready["block"]
        period = block / 16000
        sent_at, trips, late = {}, [], 0
        count = int(seconds / period)

        async def receive() -> None:
            nonlocal late
            received = 0
            while received < count:
                try:
                    message = await ws.recv()
                except websockets.ConnectionClosed:  # e.g. a server that fell behind ends the call after its audio
                    return
                if isinstance(message, str):
                    continue
                received += 1
                consumed = struct.unpack_from(">I", message, 6)[0]
                if consumed == 0xFFFFFFFF:
                    late += 1
                elif consumed in sent_at:
                    trips.append(time.perf_counter() - sent_at.pop(consumed))

        receiver = asyncio.create_task(receive())
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        t0 = time.monotonic()
        for i in range(count):
            pcm = (wav[(i * block) % (wav.size - block) :][:block] * 32767).astype("<i2").tobytes()
            sent_at[i] = time.perf_counter()
            await ws.send(struct.pack(">BBI", 1, 1, i) + pcm)
            await asyncio.sleep(max(0.0, t0 + (i + 1) * period - time.monotonic()))
        try:
            await asyncio.wait_for(receiver, 10.0)
        except TimeoutError:
            receiver.cancel()
        return {"trips": trips, "late": late, "blocks": count}


async def _run(url: str, callers: int, seconds: float) -> list[dict]:
    wav = speech(10.0)[0, 0].numpy()
    start_at = time.monotonic() + 1.0
    return await asyncio.gather(*(_caller(url, np.roll(wav, 4000 * i), seconds, start_at) for i in range(callers)))


async def _upload(url: str, clip: bytes) -> str:
    """One voice upload: "ready", or the close code it got."""
    import websockets

    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"version": 1, "mode": "convert", "voice": "upload", "latency": "exact"}))
        await ws.send(struct.pack(">BBI", 1, 2, 0) + clip)
        try:
            return json.loads(await ws.recv())["type"]
        except websockets.ConnectionClosed as closed:
            return str(closed.rcvd.code if closed.rcvd else None)


async def _hostile(url: str, uploads: int, seconds: float) -> dict:
    """A caller for `seconds`; 2 s in, `uploads` uploads of a 30 s clip at once, then a new bundled-voice caller."""
    import io

    import soundfile as sf
    import websockets

    wav = speech(10.0)[0, 0].numpy()
    clip = io.BytesIO()
    sf.write(clip, np.tile(wav, 3), 16000, format="WAV", subtype="PCM_16")
    caller = asyncio.create_task(_caller(url, wav, seconds, time.monotonic() + 0.5))
    await asyncio.sleep(2.5)
    pending = [asyncio.create_task(_upload(url, clip.getvalue())) for _ in range(uploads)]
    await asyncio.sleep(0.05)
    start = time.perf_counter()
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"version": 1, "mode": "convert", "voice": "low", "latency": "exact"}))
        try:
            ready = json.loads(await ws.recv())
        except websockets.ConnectionClosed as closed:  # every slot taken
            ready = {"type": str(closed.rcvd.code if closed.rcvd else None)}
        ready_s = time.perf_counter() - start
    outcomes = await asyncio.gather(*pending)
    result = await caller
    return {"ready_s": ready_s, "new_caller": ready.get("type"), "uploads": outcomes, **result}


def hostile_uploads(args: argparse.Namespace) -> None:
    """One caller beside `--hostile-uploads` uploads at once, on a server of `--slots` slots (every slot costs
    compute each tick, so few keep up on a small machine); the same without uploads first, for comparison."""
    for uploads in (0, args.hostile_uploads):
        result = _with_server(1, args, slots=args.slots, run=lambda url, n=uploads: _hostile(url, n, args.seconds))
        trips = latency(result["trips"])
        print(
            f"{uploads} uploads of 30 s at once (outcomes: {', '.join(sorted(result['uploads'])) or '-'}); "
            f"the connected caller: {result['late']} of {result['blocks']} blocks late, round trip p50 / p99 "
            f"{trips['p50_ms']:.1f} / {trips['p99_ms']:.1f} ms; a new caller with a bundled voice: "
            f"{result['new_caller']} after {1000 * result['ready_s']:.0f} ms",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hops-per-tick", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0, help="how long each caller sends")
    parser.add_argument("--max-callers", type=int, default=16)
    parser.add_argument("--budget-ms", type=float, default=100.0, help="p99 round trip that still counts as real time")
    parser.add_argument("--ray", action="store_true", help="the server on Ray Serve (one replica), not uvicorn")
    parser.add_argument("--hostile-uploads", type=int, help="one caller beside this many voice uploads at once")
    parser.add_argument("--slots", type=int, default=3, help="with --hostile-uploads: the server's slots (3)")
    args = parser.parse_args()
    if args.hostile_uploads:
        print(f"CPU: {cpu_name()}; uvicorn; {args.slots} slots; {args.hops_per_tick} hops per tick")
        return hostile_uploads(args)
    where = "Ray Serve, one replica" if args.ray else "uvicorn"
    print(f"CPU: {cpu_name()}; {where}; {args.hops_per_tick} hops per tick ({12.5 * args.hops_per_tick:g} ms blocks)")
    print("| callers (= slots) | round trip p50 / p99 (worst caller) | late blocks | real time |")
    print("|---|---|---|---|")
    best, callers = 0, 1
    while callers <= args.max_callers:
        results = _with_server(callers, args)
        worst = max((latency(r["trips"]) for r in results if r["trips"]), key=lambda x: x["p99_ms"])
        late = sum(r["late"] for r in results) / sum(r["blocks"] for r in results)
        ok = late <= 0.01 and worst["p99_ms"] <= args.budget_ms
        print(
            f"| {callers} | {worst['p50_ms']:.1f} / {worst['p99_ms']:.1f} ms | {100 * late:.1f} % | "
            f"{'yes' if ok else 'no'} |",
            flush=True,
        )
        if not ok:
            break
        best, callers = callers, callers * 2
    print(f"largest number of callers in real time: {best}")


def _with_server(callers: int, args: argparse.Namespace, slots: int | None = None, run=None):
    """A server with as many slots as callers (every slot is computed each tick), and the callers against it (or
    `run(url)`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = _serve_on_ray if args.ray else _serve
    server = multiprocessing.Process(target=target, args=(port, slots or callers, args.hops_per_tick))
    server.start()
    try:
        for _ in range(600):  # the models load, then the server answers
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.5)
        url = f"ws://127.0.0.1:{port}/ws"
        return asyncio.run(run(url) if run else _run(url, callers, args.seconds))
    finally:
        server.terminate()
        server.join(10)
        if args.ray:  # the Ray processes the server started outlive it
            subprocess.run(["ray", "stop", "--force"], capture_output=True)


if __name__ == "__main__":
    main()

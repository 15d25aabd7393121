"""`rtcodec serve` on Ray Serve: callers spread over replicas, each exact, and a replica killed mid-call.

A local Ray instance of 2 CPUs with 2 CPU replicas of the golden models; skips where ray is not installed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import struct
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'rtcodec[ray]')")
pytest.importorskip("websockets", reason="websockets is not installed")
import websockets  # noqa: E402
from ray import serve  # noqa: E402

from rtcodec.hub import Pretrained  # noqa: E402
from rtcodec.serve import ServeOptions  # noqa: E402
from rtcodec.serve.protocol import HEADER, VERSION  # noqa: E402

from .conftest import golden_model, needs_audio, needs_golden  # noqa: E402
from .test_serve import audio_message, expected_output, speech, wire_equal  # noqa: E402

pytestmark = [needs_golden, needs_audio]


def golden_models() -> Pretrained:
    return Pretrained(golden_model("encoder"), golden_model("decoder"))


class Logged(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def cluster():
    from rtcodec.serve.ray import application, run

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        options = ServeOptions(slots=2, expose_host=True)  # the ready message names the replica
        logged = Logged()
        logging.getLogger("ray.serve").addHandler(logged)
        try:
            run(application(golden_models, options, replicas=2, num_cpus=0.5), options)
        finally:
            logging.getLogger("ray.serve").removeHandler(logged)
        # Ray Serve's lines came through, but not the one that says the options given to serve.start are ignored.
        assert logged.messages and not [m for m in logged.messages if "will not be applied" in m], logged.messages
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        serve.shutdown()
        ray.shutdown()


async def call(url: str, blocks: list[np.ndarray], voice: str, started: asyncio.Event | None = None) -> dict:
    """One caller in step with its output: (replica, consumed blocks, output samples) or the close it got."""
    result = {"outputs": [], "consumed": []}
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"version": VERSION, "mode": "convert", "voice": voice, "latency": "exact"}))
        ready = json.loads(await ws.recv())
        result["server"] = ready["server"]
        try:
            for i, block in enumerate(blocks):
                await ws.send(audio_message(i, block))
                while True:  # the output of this block's tick (stats skipped)
                    message = await asyncio.wait_for(ws.recv(), 30)
                    if isinstance(message, bytes):
                        break
                result["consumed"].append(struct.unpack_from(">I", message, HEADER.size)[0])
                result["outputs"].append(np.frombuffer(message[HEADER.size + 4 :], "<i2") / 32768)
                if started is not None and i == 10:
                    started.set()
        except websockets.ConnectionClosed as closed:
            result["closed"] = (closed.rcvd.code if closed.rcvd else None, closed.rcvd.reason if closed.rcvd else "")
    return result


def exact(result: dict, blocks: list[np.ndarray], voice: str, models: Pretrained) -> bool:
    from rtcodec import audio
    from rtcodec.pipelines import speaker_embedding
    from rtcodec.serve.app import bundled_voices

    speaker = speaker_embedding(models.encoder, models.decoder, audio.read(bundled_voices()[voice]))[0]
    expected = expected_output(models, speaker, blocks, result["consumed"], "convert")
    return wire_equal(np.concatenate(result["outputs"]), expected)


def test_callers_spread_over_the_replicas_and_each_output_is_exact(cluster):
    blocks = [speech(0.9, seed) for seed in range(4)]
    voices = ["bright", "low", "bright", "low"]

    async def run():
        return await asyncio.gather(*(call(cluster, b, v) for b, v in zip(blocks, voices)))

    results = asyncio.run(run())
    assert len({r["server"] for r in results}) == 2  # both replicas took calls
    models = golden_models()
    for result, b, v in zip(results, blocks, voices):
        assert "closed" not in result and exact(result, b, v, models)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def test_with_every_replica_full_a_caller_waits_for_a_free_slot(cluster):
    async def run():
        async def hold(ready: asyncio.Event, release: asyncio.Event):
            async with websockets.connect(cluster, open_timeout=120) as ws:
                await ws.send(json.dumps({"version": VERSION, "voice": "bright"}))
                await ws.recv()
                ready.set()
                await release.wait()

        releases = [asyncio.Event() for _ in range(5)]
        readies = [asyncio.Event() for _ in range(5)]
        holders = [asyncio.create_task(hold(r, e)) for r, e in zip(readies[:4], releases[:4])]  # 2 x 2 slots
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies[:4])), 60)
        waiting = asyncio.create_task(hold(readies[4], releases[4]))
        try:
            await asyncio.sleep(2.0)
            assert not readies[4].is_set()  # every slot is taken: it waits, and no call is refused
            # The status applications answer meanwhile, outside the replicas' limit, with every replica's figures.
            base = cluster.replace("ws://", "http://").removesuffix("/ws")
            assert await asyncio.to_thread(fetch, base + "/healthz") == "ok\n"
            metrics = await asyncio.to_thread(fetch, base + "/metrics")
            full = re.findall(r'rtcodec_slots_active\{replica="([^"]+)",latency="exact"\} 2', metrics)
            assert len(set(full)) == 2 and metrics.count("# TYPE rtcodec_slots_active gauge") == 1, metrics
            releases[0].set()  # a caller hangs up: the waiting one is served
            await asyncio.wait_for(readies[4].wait(), 60)
        finally:
            for release in releases:
                release.set()
            await asyncio.gather(*holders, waiting)

    asyncio.run(run())


def test_a_replica_killed_mid_call(cluster):
    """Its callers' calls end (no hang), the other replica's callers go on exactly, a new caller is served, and
    Ray brings the replica back."""
    blocks = [speech(2.0, seed) for seed in range(4)]

    async def run():
        started = [asyncio.Event() for _ in range(4)]
        calls = [asyncio.create_task(call(cluster, b, "bright", s)) for b, s in zip(blocks, started)]
        await asyncio.wait_for(asyncio.gather(*(s.wait() for s in started)), 120)
        return calls

    async def kill_one_and_finish():
        calls = await run()
        replicas = [a for a in ray.util.list_named_actors(all_namespaces=True) if "rtcodec" in a["name"]]
        replicas = [
            a for a in replicas if a["name"].startswith("SERVE_REPLICA::rtcodec#rtcodec#")
        ]  # not the status apps
        assert len(replicas) == 2
        victim = ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"])
        victim_pid = ray.get(victim.__ray_call__.remote(lambda self: __import__("os").getpid()))
        ray.kill(victim, no_restart=False)
        results = await asyncio.wait_for(asyncio.gather(*calls), 120)
        return victim_pid, results

    victim_pid, results = asyncio.run(kill_one_and_finish())
    models = golden_models()
    on_victim = [r["server"].endswith(f":{victim_pid}") for r in results]
    assert any(on_victim) and not all(on_victim)
    for result, b, cut in zip(results, blocks, on_victim):
        if cut:
            # The call ended, promptly, not hung. The replica is gone, so no close frame comes: Ray's proxy drops
            # the connection, which a client sees as close code 1006 (the page says the connection was lost).
            assert result.get("closed") == (None, ""), result.keys()
        else:
            assert "closed" not in result and exact(result, b, "bright", models)
    new = asyncio.run(call(cluster, speech(0.3, 9), "bright"))
    assert "closed" not in new
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = serve.status().applications["rtcodec"].deployments["rtcodec"]
        if status.status == "HEALTHY" and sum(status.replica_states.values()) == 2:
            break
        time.sleep(1)
    assert status.status == "HEALTHY" and status.replica_states.get("RUNNING") == 2


def test_the_config_file_in_the_repo_builds_the_application():
    import yaml

    from rtcodec.serve.ray import app

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "rtcodec" / "serve" / "ray-serve.yaml").read_text())
    from rtcodec.serve.ray import status_app

    application, healthz, metrics = config["applications"]
    assert application["import_path"] == "rtcodec.serve.ray:app"
    assert type(app(application["args"])).__name__ == "Application"
    for status in (healthz, metrics):
        assert status["route_prefix"] == status["args"]["path"] and status["import_path"].endswith(":status_app")
        assert type(status_app(status["args"])).__name__ == "Application"

"""A real `rtcodec serve` process on loopback, as a web page or an attacker on this machine reaches it: foreign
origins and host names, slowloris, hostile references, and what its log and answers say."""

from __future__ import annotations

import http.client
import io
import json
import resource
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install 'rtcodec[serve]')")
from websockets.exceptions import InvalidStatus  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from rtcodec.serve.protocol import HEADER, REFERENCE, VERSION  # noqa: E402

from .conftest import AUDIO, needs_audio  # noqa: E402
from .helpers import write_checkpoint_dir  # noqa: E402

pytestmark = needs_audio
FD_LIMIT = 256  # the server's descriptors: its connection cap is half of them
HEADER_TIMEOUT = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`rtcodec serve` with full-size random weights, a low descriptor limit and a short header deadline."""
    folder = tmp_path_factory.mktemp("serve")
    ckpt = write_checkpoint_dir(folder / "ckpt")
    port = free_port()
    log = open(folder / "server.log", "w+b")  # noqa: SIM115 (closed at the end of the module)
    command = [sys.executable, "-m", "rtcodec", "serve", "--port", str(port), "--checkpoint-dir", str(ckpt)]
    command += ["--slots", "4", "--threads", "1", "--header-timeout", str(HEADER_TIMEOUT)]
    command += ["--allow-origin", "https://app.example.com", "--allow-host", "app.example.com"]
    limit = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))  # noqa: E731
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if get(port, "/healthz")[0] == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        log.seek(0)
        raise AssertionError(f"the server did not start: {log.read().decode(errors='replace')[-2000:]}")
    yield port, log
    process.terminate()
    process.wait(30)
    log.close()


def get(port: int, path: str, host: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Host": host or f"127.0.0.1:{port}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def call(port: int, hello: dict, origin: str | None = None, clip: bytes | None = None):
    """A WebSocket call: the ready message (a dict), or the close (code, reason)."""
    with connect(f"ws://127.0.0.1:{port}/ws", origin=origin, open_timeout=30, close_timeout=5) as ws:
        ws.send(json.dumps({"version": 1, "mode": "convert", "latency": "exact", **hello}))
        if clip is not None:
            ws.send(HEADER.pack(VERSION, REFERENCE, 0) + clip)
        try:
            return json.loads(ws.recv(timeout=120))
        except Exception:  # the server closed the call
            return ws.close_code, ws.close_reason


def test_only_its_own_names_and_pages_reach_it(server):
    port, log = server
    for path in ("/", "/info", "/metrics", "/healthz"):
        assert get(port, path)[0] == 200
        assert get(port, path, host="app.example.com")[0] == 200  # --allow-host: a reverse proxy's name
        status, body = get(port, path, host="evil.example")  # DNS rebinding: another site's name for 127.0.0.1
        assert status == 403 and b"does not answer to the name 'evil.example'" in body
    assert "server" not in json.loads(get(port, "/info")[1])  # no host name or PID without --expose-host
    assert b"rtcodec_forbidden_total 4" in get(port, "/metrics")[1]
    for origin in ("http://evil.example", "null", f"http://127.0.0.1:{port + 1}"):
        with pytest.raises(InvalidStatus) as refused:
            call(port, {"voice": "bright"}, origin=origin)
        assert refused.value.response.status_code == 403
    for origin in (f"http://127.0.0.1:{port}", "https://app.example.com", None):  # its page, allowed, no browser
        ready = call(port, {"voice": "bright"}, origin=origin)
        assert ready["type"] == "ready" and "server" not in ready
    log.seek(0)
    assert log.read().count(b"refused: ") == 1  # the first refusal; the next are counted, not logged, for a minute


def test_slowloris_holds_nothing(server):
    """More connections than the cap, each sending its headers a byte at a time: the server closes them all (at once
    beyond the cap, at the header deadline below it) and keeps answering; its log does not flood."""
    port, log = server
    socks = []
    for _ in range(FD_LIMIT):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        socks.append(s)
    closed = set()
    deadline = time.monotonic() + 120  # far beyond the deadline: only a server that never closes them fails
    while len(closed) < len(socks) and time.monotonic() < deadline:
        for i, s in enumerate(socks):
            if i in closed:
                continue
            try:
                s.sendall(b"a")
                s.setblocking(False)
                if s.recv(1024) == b"":
                    closed.add(i)
            except BlockingIOError:
                pass
            except OSError:  # reset by the server
                closed.add(i)
            finally:
                s.setblocking(True)
        time.sleep(0.2)
    for s in socks:
        s.close()
    assert len(closed) == len(socks)
    assert get(port, "/healthz")[0] == 200
    log.seek(0)
    text = log.read()
    assert b"out of system resource" not in text and len(text) < 100_000, text[-2000:]


def _wav(samples: np.ndarray, rate: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    out = io.BytesIO()
    sf.write(out, samples, rate, subtype=subtype, format=fmt)
    return out.getvalue()


def test_hostile_references_are_refused_with_a_reason(server):
    port, log = server
    silence = np.zeros((655_350, 8), np.float32)  # 1 s at 655 350 Hz, 8 channels: 5.2 M samples, a 7 kB FLAC
    code, reason = call(port, {"voice": "upload"}, clip=_wav(silence, 655_350, fmt="FLAC"))
    assert code == 1008 and "at most 2880000" in reason
    huge = np.full(32_000, 1e30, np.float32)
    code, reason = call(port, {"voice": "upload"}, clip=_wav(huge, 16_000, subtype="FLOAT"))
    assert (code, reason) == (1008, "the reference clip gives no usable voice: its samples are far out of range")
    code, reason = call(port, {"voice": "upload"}, clip=b"not audio at all")
    assert code == 1008 and "not usable audio" in reason and "0x" not in reason and "BytesIO" not in reason
    speech, rate = sf.read(AUDIO / "slt.wav", dtype="float32")
    code, reason = call(port, {"voice": "upload"}, clip=_wav(speech[: rate // 2], rate))
    assert code == 1008 and "is 0.50 s long: a reference needs 1 s" in reason
    code, reason = call(port, {"voice": "upload"}, clip=_wav(np.zeros(2 * rate, np.float32), rate))
    assert code == 1008 and "is silent" in reason
    assert call(port, {"voice": "upload"}, clip=_wav(speech[: 2 * rate], rate))["type"] == "ready"
    log.seek(0)
    text = log.read()
    assert b"Task exception was never retrieved" not in text and b"Traceback" not in text, text[-2000:]

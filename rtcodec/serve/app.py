"""The ASGI app of `rtcodec serve` (Starlette): the page, `/ws` for callers, `/info`, `/healthz`, `/metrics`.

`create_app(...)` is a factory, so the same app runs under uvicorn (`rtcodec serve`) or any ASGI server.

Every web page the user visits can reach a server on 127.0.0.1, so the app answers only requests whose `Host` is
one of its names (a page on another site reached through DNS rebinding carries that site's name), and takes a
WebSocket only from its own page or an `allowed_origins` entry (browsers always send `Origin` on WebSocket
handshakes; a client that sends none is not a browser page, and is taken). A voice upload is read only once the
caller holds a slot, and decoded in a process of its own at the lowest CPU priority (`uploads`), at most
`MAX_UPLOADS` at a time, so uploads never hold back the ticks, the bundled voices or each other beyond that bound.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import torch
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from .. import audio
from ..config import HOP_LENGTH, SAMPLE_RATE
from ..hub import Pretrained
from ..pipelines import LATENCY_PRESETS, speaker_embedding
from ..scheduler import CallerScheduler, SlotsFullError
from ..streaming import StreamOptions
from . import protocol, sizing
from .engine import OVERLOAD_SECONDS, Engine, Session
from .uploads import UploadWorker

LOG = logging.getLogger("rtcodec.serve")
STATS_INTERVAL_S = 0.5
IDLE_TIMEOUT_S = 10.0  # a caller that sends nothing this long (no hello, no audio) is disconnected
MAX_UPLOADS = 2  # voice uploads in decoding at once, all callers together; more are refused (1013)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
EVERY_ADDRESS = ("0.0.0.0", "::", "")  # binds that listen on every interface
FORBIDDEN_LOG_INTERVAL_S = 60.0
METRICS_TYPE = "text/plain; version=0.0.4"


@dataclass
class ServeOptions:
    """How the server runs: slots per latency preset, hops per tick, the presets offered, the streams' backend,
    and who may use it: the host names it answers to (`"*"`: any) and the origins of other pages allowed to
    call it besides its own."""

    slots: int | None = 4  # None: measured at start-up, the most (up to 4) this machine keeps up with (sizing.py)
    hops_per_tick: int | None = 1  # None: measured at start-up, the fewest this machine keeps up with
    latencies: tuple[str, ...] = ("exact",)  # ("auto",): the lowest that this machine serves (sizing.py)
    backend: str | None = None  # how settled ticks run (rtcodec.backends); None: the device's default
    max_pending_s: float = 1.0  # audio a caller may send ahead of the ticks before it is cut off as too fast
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    allowed_origins: tuple[str, ...] = ()  # e.g. "https://app.example.com"
    expose_host: bool = False  # /info and the ready message name the server's host and process


def allowed_hosts(bind: str, extra: list[str] | tuple[str, ...] = ()) -> tuple[str, ...]:
    """The names a server bound to `bind` answers to: the loopback's, `bind` itself (unless it is every
    address), and `extra`."""
    names = [*LOOPBACK_HOSTS, *([] if bind in EVERY_ADDRESS else [bind]), *extra]
    return tuple(dict.fromkeys(names))


@dataclass
class Metric:
    """One Prometheus metric family: its samples as (labels, value)."""

    name: str
    kind: str
    help: str
    samples: list[tuple[dict[str, str], float]]


def render_metrics(metrics: list[Metric]) -> str:
    """Prometheus's text format."""
    lines = []
    for metric in metrics:
        lines += [f"# HELP {metric.name} {metric.help}", f"# TYPE {metric.name} {metric.kind}"]
        for labels, value in metric.samples:
            text = ",".join(f'{name}="{label}"' for name, label in labels.items())
            lines.append(f"{metric.name}{{{text}}} {value:g}" if text else f"{metric.name} {value:g}")
    return "\n".join(lines) + "\n"


def bundled_voices() -> dict[str, Path]:
    folder = resources.files("rtcodec.serve") / "voices"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".wav")}


class Server:
    """The state behind the app: the models, an engine per latency preset, the voices' embeddings, counters."""

    def __init__(self, models: Pretrained, options: ServeOptions) -> None:
        self.models, self.options = models, options
        self.voices = bundled_voices()
        # Up front, so a caller choosing a bundled voice never waits for an embedding.
        self.embeddings = {name: self.embedding(audio.read(path)) for name, path in self.voices.items()}
        self.refused = self.violations = self.uploads = self.forbidden = 0
        self.upload_worker = UploadWorker(models)
        self.forbidden_logged = -math.inf
        self.name = f"{socket.gethostname()}:{os.getpid()}" if options.expose_host else None
        self.sizing: sizing.Sizing | None = None
        self.sizing_line = ""  # what the start-up measurement chose, and why
        if options.latencies == (sizing.AUTO,):
            preset, tried = sizing.choose_preset(
                lambda name: sizing.measure(models, (name,), options.backend, options.slots, options.hops_per_tick)
            )
            self.sizing, self.sizing_line = tried[preset], sizing.describe_preset(preset, tried)
            options = replace(options, latencies=(preset,))
        elif options.slots is None or options.hops_per_tick is None:
            self.sizing = sizing.measure(
                models, options.latencies, options.backend, options.slots, options.hops_per_tick
            )
            self.sizing_line = self.sizing.describe()
        if self.sizing is not None:
            options = replace(options, slots=self.sizing.slots, hops_per_tick=self.sizing.hops_per_tick)
        self.options = options
        self.engines: dict[str, Engine] = {}
        for preset in options.latencies:
            if preset not in LATENCY_PRESETS:
                raise ValueError(f"unknown latency preset {preset!r}; one of {sorted(LATENCY_PRESETS)}")
            streams = StreamOptions(lookahead=LATENCY_PRESETS[preset], backend=options.backend)
            scheduler = CallerScheduler(models.encoder, models.decoder, options.slots, options.hops_per_tick, streams)
            max_pending = max(1, round(options.max_pending_s * SAMPLE_RATE / scheduler.block))
            self.engines[preset] = Engine(scheduler, max_pending)

    def voice(self, name: str) -> torch.Tensor:
        return self.embeddings[name]

    def forbid(self, reason: str) -> None:
        """Count a request refused for its Host or Origin; log the first, then at most one a minute (a page can
        send thousands)."""
        self.forbidden += 1
        now = time.monotonic()
        if now - self.forbidden_logged >= FORBIDDEN_LOG_INTERVAL_S:
            self.forbidden_logged = now
            LOG.warning("refused: %s (%d refused so far; see rtcodec_forbidden_total)", reason, self.forbidden)

    def embedding(self, wav: torch.Tensor) -> torch.Tensor:
        return speaker_embedding(self.models.encoder, self.models.decoder, wav)[0].float()

    def info(self) -> dict:
        info = {
            "voices": sorted(self.voices),
            "latencies": list(self.engines),
            "sample_rate": SAMPLE_RATE,
            "block": self.options.hops_per_tick * HOP_LENGTH,
            "max_reference_bytes": protocol.MAX_REFERENCE_BYTES,
        }
        return info if self.name is None else {**info, "server": self.name}

    def metrics(self) -> list[Metric]:
        """The Prometheus figures of this server (`render_metrics` writes them out)."""
        engines = list(self.engines.items())
        live = [(p, s, e) for p, e in engines for s in list(e.sessions.values())]
        sessions = [s for _, s, _ in live]
        callers = [({"latency": p, "slot": str(s.caller.row)}, s, e) for p, s, e in live]
        compute = {preset: engine.compute_ms() for preset, engine in engines}
        return [
            Metric(
                "rtcodec_slots_active",
                "gauge",
                "Callers in a slot.",
                [({"latency": p}, len(e.sessions)) for p, e in engines],
            ),
            Metric(
                "rtcodec_slots_free",
                "gauge",
                "Free slots.",
                [({"latency": p}, e.scheduler.free_slots) for p, e in engines],
            ),
            Metric(
                "rtcodec_tick_compute_seconds",
                "summary",
                "Compute per tick over the recent ticks.",
                [
                    ({"latency": p, "quantile": q}, compute[p][i] / 1000)
                    for p, _ in engines
                    for i, q in enumerate(("0.5", "0.99"))
                ],
            ),
            Metric(
                "rtcodec_block_seconds",
                "gauge",
                "Audio per tick and message (--hops-per-tick, or measured at start-up).",
                [({}, self.options.hops_per_tick * HOP_LENGTH / SAMPLE_RATE)],
            ),
            Metric("rtcodec_ticks_total", "counter", "Ticks run.", [({"latency": p}, e.ticks) for p, e in engines]),
            Metric(
                "rtcodec_late_blocks",
                "gauge",
                "Blocks of the connected callers that came too late (silence played).",
                [({}, sum(s.caller.late_blocks for s in sessions))],
            ),
            Metric(
                "rtcodec_dropped_blocks",
                "gauge",
                "Blocks of the connected callers dropped because too many waited (the server fell behind).",
                [({}, sum(s.caller.dropped_blocks for s in sessions))],
            ),
            Metric(
                "rtcodec_overloaded",
                "gauge",
                f"1 where the ticks did not keep up with real time over the last {OVERLOAD_SECONDS:g} s.",
                [({"latency": p}, int(e.overloaded())) for p, e in engines],
            ),
            Metric(
                "rtcodec_caller_late_blocks",
                "gauge",
                "Per connected caller: blocks that came after their tick (silence played instead).",
                [(labels, s.caller.late_blocks) for labels, s, _ in callers],
            ),
            Metric(
                "rtcodec_caller_dropped_blocks",
                "gauge",
                "Per connected caller: blocks dropped because too many waited.",
                [(labels, s.caller.dropped_blocks) for labels, s, _ in callers],
            ),
            Metric(
                "rtcodec_caller_delay_seconds",
                "gauge",
                "Per connected caller: audio waiting for its tick, the delay the server adds beyond the algorithm's.",
                [(labels, s.delay_blocks() * e.period) for labels, s, e in callers],
            ),
            Metric("rtcodec_refused_total", "counter", "Callers refused: every slot taken.", [({}, self.refused)]),
            Metric(
                "rtcodec_stalled_total",
                "counter",
                "Callers whose slot was taken back: less than half of their audio came over 3 s.",
                [({"latency": p}, e.evicted) for p, e in engines],
            ),
            Metric(
                "rtcodec_clock_restarts_total",
                "counter",
                "Times the ticks fell 8 blocks behind the clock (the machine cannot keep up) and started it again.",
                [({"latency": p}, e.restarts) for p, e in engines],
            ),
            Metric(
                "rtcodec_forbidden_total",
                "counter",
                "Requests refused (403) for a Host or Origin not allowed.",
                [({}, self.forbidden)],
            ),
            Metric(
                "rtcodec_protocol_violations_total",
                "counter",
                "Callers disconnected for breaking the protocol.",
                [({}, self.violations)],
            ),
        ]

    async def call(self, ws: WebSocket) -> None:
        """One caller, from the hello to the close."""
        await ws.accept()
        session = engine = None
        try:
            settings = protocol.parse_hello(await _receive_text(ws), sorted(self.voices), list(self.engines))
            engine = self.engines[settings["latency"]]
            upload = settings["voice"] == "upload"
            # The slot first: a full server refuses before it reads or decodes anything (an upload's voice is set
            # once decoded; the caller sends no audio before it is ready).
            speaker = torch.zeros(self.models.decoder.in_channels) if upload else self.voice(settings["voice"])
            try:
                session = await engine.join(speaker, settings["mode"])
            except SlotsFullError:
                self.refused += 1
                slots = engine.scheduler.slots
                raise protocol.ProtocolError(
                    f"all {slots} slot{'s are' if slots > 1 else ' is'} taken: try again later", protocol.TRY_LATER
                ) from None
            if upload:
                speaker = await self._upload(await _receive_bytes(ws))
                with engine.lock:
                    engine.scheduler.set_speaker(session.caller, speaker)
            scheduler = engine.scheduler
            ready = {
                "type": "ready",
                "block": scheduler.block,
                "sample_rate": SAMPLE_RATE,
                "latency_samples": scheduler.latency_samples,
                "bitrate": 4800,
                "slot": session.caller.row,
                "mode": settings["mode"],
                "latency": settings["latency"],
            }
            if self.name is not None:
                ready["server"] = self.name
            await ws.send_text(json.dumps(ready))
            await _serve(ws, engine, session)
        except protocol.ProtocolError as err:
            if err.code == protocol.POLICY or err.code == protocol.TOO_BIG:
                self.violations += 1
            await _close(ws, err.code, err.reason)
        except WebSocketDisconnect:
            pass
        except Exception:  # a fault of the server's: this caller gets a reason, the server and the others go on
            LOG.exception("a call failed")
            await _close(ws, protocol.SERVER_ERROR, "server error")
        finally:
            if session is not None:
                engine.leave(session)

    async def _upload(self, data: bytes) -> torch.Tensor:
        """The voice of an uploaded REFERENCE message, decoded by the upload worker (1013 where `MAX_UPLOADS`
        are in decoding already)."""
        if self.uploads >= MAX_UPLOADS:
            raise protocol.ProtocolError(
                "too many voice uploads at once: try again in a moment, or pick a bundled voice", protocol.TRY_LATER
            )
        self.uploads += 1
        try:
            return await self.upload_worker.embed(data)
        finally:
            self.uploads -= 1


async def _receive(ws: WebSocket) -> dict:
    try:
        message = await asyncio.wait_for(ws.receive(), IDLE_TIMEOUT_S)
    except TimeoutError:
        raise protocol.ProtocolError(f"nothing received for {IDLE_TIMEOUT_S:g} s") from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    return message


async def _receive_text(ws: WebSocket) -> str:
    message = await _receive(ws)
    if message.get("text") is None:
        raise protocol.ProtocolError("the first message is the hello, as text")
    return message["text"]


async def _receive_bytes(ws: WebSocket) -> bytes:
    message = await _receive(ws)
    if message.get("bytes") is None:
        raise protocol.ProtocolError("expected a binary message")
    if len(message["bytes"]) > protocol.MAX_MESSAGE_BYTES:
        raise protocol.ProtocolError("message too large", protocol.TOO_BIG)
    return message["bytes"]


async def _serve(ws: WebSocket, engine: Engine, session: Session) -> None:
    """Blocks in, converted audio and stats out, until either side stops or the engine ends the call (its
    ProtocolError, raised here). Both halves are awaited to the end: no exception is left unretrieved."""

    async def send() -> None:
        last_stats = 0.0
        while True:
            try:
                message = await asyncio.wait_for(session.outbox.get(), STATS_INTERVAL_S)
            except TimeoutError:
                message = None
            if isinstance(message, protocol.ProtocolError):
                raise message
            if message is not None:
                seq, consumed, samples = message
                await ws.send_bytes(protocol.audio_message(seq, consumed, samples))
            now = asyncio.get_running_loop().time()
            if now - last_stats >= STATS_INTERVAL_S:
                last_stats = now
                p50, p99 = engine.compute_ms()
                caller = session.caller
                stats = {
                    "type": "stats",
                    "compute_ms_p50": round(p50, 2),
                    "compute_ms_p99": round(p99, 2),
                    "late_blocks": caller.late_blocks,
                    "dropped_blocks": caller.dropped_blocks,
                    "delay_ms": round(1000 * session.delay_blocks() * engine.period, 1),
                    "overloaded": engine.overloaded(),
                    "active": len(engine.sessions),
                    "slots": engine.scheduler.slots,
                }
                await ws.send_text(json.dumps(stats))

    async def receive() -> None:
        expected = None  # the next sequence number: blocks come one after the other
        while True:
            data = await _receive_bytes(ws)
            kind, seq, payload = protocol.parse(data)
            if kind != protocol.AUDIO:
                raise protocol.ProtocolError("after the hello, a caller sends AUDIO messages")
            if expected is not None and seq != expected:
                raise protocol.ProtocolError(f"AUDIO sequence number {seq} where {expected} was next: out of order")
            expected = (seq + 1) & 0xFFFFFFFF
            if not engine.put(session, seq, protocol.audio_block(payload, engine.scheduler.block)):
                raise protocol.ProtocolError("audio faster than real time")

    tasks = [asyncio.create_task(send()), asyncio.create_task(receive())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
            task.add_done_callback(_retrieved)  # whenever it ends: its exception is not left unretrieved
    for task in done:  # the first half to stop says why
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()


def _retrieved(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    try:
        await ws.close(code, reason[:120])  # a close reason is at most 123 bytes
    except RuntimeError:  # already closed
        pass


def create_app(models: Pretrained, options: ServeOptions | None = None) -> Starlette:
    """The app over loaded V1 models (`rtcodec.from_pretrained("v1")`)."""
    server = Server(models, options or ServeOptions())

    @asynccontextmanager
    async def lifespan(app):
        server.upload_worker.start()
        tasks = [asyncio.create_task(engine.run()) for engine in server.engines.values()]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            server.upload_worker.close()

    async def healthz(request):
        return PlainTextResponse("ok\n")

    async def metrics(request):
        return PlainTextResponse(render_metrics(server.metrics()), media_type=METRICS_TYPE)

    async def info(request):
        return JSONResponse(server.info())

    static = resources.files("rtcodec.serve") / "static"
    options = server.options
    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            Route("/info", info),
            WebSocketRoute("/ws", server.call),
            Mount("/", StaticFiles(directory=str(static), html=True)),
        ],
        middleware=[
            Middleware(SameOrigin, hosts=options.allowed_hosts, origins=options.allowed_origins, refused=server.forbid)
        ],
        lifespan=lifespan,
    )
    app.state.server = server
    return app


def host_name(host: str) -> str:
    """The name part of a Host header ("[::1]:8000" -> "::1", "Example.org:80" -> "example.org")."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class SameOrigin:
    """ASGI middleware: 403 for a request whose Host is not one of the server's names, and for a WebSocket
    handshake from another site's page (an Origin neither the Host's own nor allowed)."""

    def __init__(
        self,
        app,
        hosts: tuple[str, ...],
        origins: tuple[str, ...],
        refused: Callable[[str], None] = lambda reason: None,
    ) -> None:
        """`refused(reason)` is told of every request refused (to count and log them)."""
        self.app, self.refused = app, refused
        self.any_host = "*" in hosts
        self.hosts = {host_name(h) for h in hosts}
        self.origins = {o.strip().lower().rstrip("/") for o in origins}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
            host = headers.get("host", "")
            reason = None
            if not self.any_host and host_name(host) not in self.hosts:
                reason = f"this server does not answer to the name {host_name(host)!r} (rtcodec serve --allow-host)"
            elif scope["type"] == "websocket" and "origin" in headers:
                origin = headers["origin"].strip().lower().rstrip("/")
                if origin.partition("://")[2] != host.strip().lower() and origin not in self.origins:
                    reason = f"calls from pages of {origin[:100]!r} are not allowed (rtcodec serve --allow-origin)"
            if reason is not None:
                self.refused(reason)
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": protocol.POLICY})  # HTTP 403 before the upgrade
                else:
                    await PlainTextResponse(reason + "\n", status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


__all__ = ["ServeOptions", "create_app"]

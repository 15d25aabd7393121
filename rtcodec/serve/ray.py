"""`rtcodec serve` beyond one machine: the same ASGI app as a Ray Serve deployment (needs `rtcodec[ray]`).

Each replica builds its own app, so it has its own caller scheduler, on one GPU (`num_gpus=1`) or on CPUs. A
replica takes at most `slots` calls at once (`max_ongoing_requests`), so Ray's router never sends a caller to a
full replica. With every replica full, a new caller waits in Ray's queue: its WebSocket handshake completes when
a call ends (a client sets its own time limit); beyond `max_waiting` waiting callers, Ray answers HTTP 503. Ray
restarts a replica that dies; its callers' connections close. Ray Serve routes, health-checks, autoscales and
runs the same code on one machine or a cluster: rtcodec writes no balancer.

`/healthz` and `/metrics` are applications of their own (`status`), outside the replicas' limit on requests, so
they answer while every slot is held: each replica reports its figures every second to a named actor (the
board), and `/metrics` shows every replica's, labelled `replica`; `/healthz` is ok while a replica reports.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import ray
from ray import serve
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from ..hub import Pretrained, from_pretrained
from .app import METRICS_TYPE, Metric, SameOrigin, ServeOptions, create_app, render_metrics

REPORT_INTERVAL_S = 1.0
STALE_S = 10.0  # a replica silent this long is left out of /metrics, and /healthz fails with none left
STATUS_PATHS = ("/healthz", "/metrics")


@ray.remote(num_cpus=0)
class Board:
    """The replicas' latest figures."""

    def __init__(self) -> None:
        self.reports: dict[str, tuple[float, list[Metric]]] = {}

    def put(self, replica: str, metrics: list[Metric]) -> None:
        self.reports[replica] = (time.monotonic(), metrics)

    def fresh(self) -> dict[str, list[Metric]]:
        now = time.monotonic()
        return {replica: metrics for replica, (at, metrics) in self.reports.items() if now - at < STALE_S}


def board():
    """The board of this Ray cluster (made by whoever asks first)."""
    return Board.options(name="rtcodec-board", namespace="rtcodec", get_if_exists=True, lifetime="detached").remote()


def _report(server) -> None:
    """Send this replica's figures to the board every second, from a thread of its own."""
    replica = serve.get_replica_context().replica_id.unique_id

    def loop() -> None:
        target = board()
        while True:
            try:
                target.put.remote(replica, server.metrics())
            except Exception:  # the board's actor went away with its node: the next report makes it again
                target = board()
            time.sleep(REPORT_INTERVAL_S)

    threading.Thread(target=loop, name="rtcodec-report", daemon=True).start()


def merged_metrics(reports: dict[str, list[Metric]]) -> list[Metric]:
    """Every replica's figures in one family per metric, each sample labelled with its replica."""
    families: dict[str, Metric] = {}
    for replica, metrics in sorted(reports.items()):
        for metric in metrics:
            family = families.setdefault(metric.name, Metric(metric.name, metric.kind, metric.help, []))
            family.samples += [({"replica": replica, **labels}, value) for labels, value in metric.samples]
    return list(families.values())


def status(path: str, options: ServeOptions | None = None):
    """The application that answers `path` (/healthz or /metrics) from the board, for `route_prefix=path`."""
    if path not in STATUS_PATHS:
        raise ValueError(f"path is one of {STATUS_PATHS}, got {path!r}")
    options = options or ServeOptions()

    def build():
        async def answer(request):
            reports = await board().fresh.remote()
            if path == "/metrics":
                return PlainTextResponse(render_metrics(merged_metrics(reports)), media_type=METRICS_TYPE)
            if not reports:
                return PlainTextResponse(f"no replica has reported for {STALE_S:g} s\n", status_code=503)
            return PlainTextResponse("ok\n")

        # Refusals are the main application's to count and log; here they are only refused.
        quiet = Middleware(SameOrigin, hosts=options.allowed_hosts, origins=options.allowed_origins)
        return Starlette(routes=[Route("/", answer)], middleware=[quiet])

    @serve.ingress(build)
    class Status:
        """Answers from the board, never from a replica: a full replica queues calls, not this."""

    name = "rtcodec" + path.replace("/", "-")
    deployment = serve.deployment(Status, name=name, max_ongoing_requests=64, ray_actor_options={"num_cpus": 0})
    return deployment.bind()


def _not_applied(record: logging.LogRecord) -> bool:
    """Ray Serve logs, on every `serve.run` after `serve.start`, that "new http_options will not be applied": the
    options given to `serve.start` are the ones in force, so the line only misleads."""
    return "will not be applied" not in record.getMessage()


def run(main, options: ServeOptions | None = None) -> None:
    """Deploy `main` (an `application`) at / and the status applications at their paths."""
    logging.getLogger("ray.serve").addFilter(_not_applied)
    serve.run(main, name="rtcodec", route_prefix="/")
    for path in STATUS_PATHS:
        serve.run(status(path, options), name="rtcodec" + path.replace("/", "-"), route_prefix=path)


def application(
    load_models: Callable[[], Pretrained],
    options: ServeOptions | None = None,
    replicas: int = 1,
    num_gpus: float = 0,
    num_cpus: float = 1,
    autoscaling: dict | None = None,
    max_waiting: int = 100,
):
    """A Ray Serve application: `replicas` copies of `create_app(load_models(), options)` (or `autoscaling`, a
    Ray Serve autoscaling config, e.g. `{"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 3}`).
    `load_models` runs on each replica; the block size may be measured there (`hops_per_tick=None`), the slots
    may not: Ray routes by them before any replica starts."""
    options = options or ServeOptions()
    if options.slots is None:
        raise ValueError("on Ray, ServeOptions.slots must be given: Ray routes callers by it")

    def build():
        app = create_app(load_models(), options)
        _report(app.state.server)
        return app

    @serve.ingress(build)
    class Replica:
        """One copy of the server: the app `build` makes, with its own models and caller scheduler."""

    deployment = serve.deployment(
        Replica,
        name="rtcodec",
        num_replicas=None if autoscaling else replicas,
        autoscaling_config=autoscaling,
        max_ongoing_requests=options.slots * len(options.latencies),
        max_queued_requests=max_waiting,
        ray_actor_options={"num_gpus": num_gpus, "num_cpus": num_cpus},
    )
    return deployment.bind()


def app(args: dict):
    """For `serve run` and Ray Serve config files (`import_path: rtcodec.serve.ray:app`): `args` may hold
    `checkpoint_dir`, `device`, `slots`, `hops_per_tick`, `latencies` (a list), `replicas`, `num_gpus`,
    `num_cpus` and `autoscaling`."""
    options = ServeOptions(
        slots=int(args.get("slots", 4)),
        hops_per_tick=int(args.get("hops_per_tick", 1)),
        latencies=tuple(args.get("latencies", ["exact"])),
    )
    checkpoint_dir, device = args.get("checkpoint_dir"), args.get("device", "cpu")
    return application(
        lambda: from_pretrained("v1", device, checkpoint_dir=checkpoint_dir),
        options,
        replicas=int(args.get("replicas", 1)),
        num_gpus=float(args.get("num_gpus", 0)),
        num_cpus=float(args.get("num_cpus", 1)),
        autoscaling=args.get("autoscaling"),
    )


def status_app(args: dict):
    """For config files: `import_path: rtcodec.serve.ray:status_app` with `args: {path: /healthz}` (or /metrics)
    and `route_prefix` the same path."""
    return status(args.get("path", "/healthz"))

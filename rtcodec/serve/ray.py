"""`rtcodec serve` beyond one machine: the same ASGI app as a Ray Serve deployment (needs `rtcodec[ray]`).

Each replica builds its own app, so it has its own caller scheduler, on one GPU (`num_gpus=1`) or on CPUs. A
replica takes at most `slots` calls at once (`max_ongoing_requests`), so Ray's router never sends a caller to a
full replica. With every replica full, a new caller waits in Ray's queue: its WebSocket handshake completes when
a call ends (a client sets its own time limit); beyond `max_waiting` waiting callers, Ray answers HTTP 503. Ray
restarts a replica that dies; its callers' connections close. Ray Serve routes, health-checks, autoscales and
runs the same code on one machine or a cluster: rtcodec writes no balancer.
"""

from __future__ import annotations

from collections.abc import Callable

from ray import serve

from ..hub import Pretrained, from_pretrained
from .app import ServeOptions, create_app


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
    `load_models` runs on each replica."""
    options = options or ServeOptions()

    def build():
        return create_app(load_models(), options)

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

"""`rtcodec serve`: the multi-caller server and its page (needs `pip install 'rtcodec[serve]'`)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace

import torch

from ..backends import BACKENDS
from ..hub import from_pretrained
from ..pipelines import LATENCY_PRESETS
from ..serve.protocol import HEADER_TIMEOUT_S
from ..serve.sizing import AUTO
from .common import PRECISIONS, CommandError, add_model_options, load, port_number


def register(commands) -> None:
    c = commands.add_parser(
        "serve", help="serve live voice conversion and codec demos to browsers, many callers at once"
    )
    c.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    c.add_argument("--port", type=port_number, default=8000, help="port (default: 8000)")
    c.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests for this host name (the name in the browser's address bar, or the one a reverse "
        "proxy passes on); '*' for any. Default: 127.0.0.1, localhost, ::1 and --host",
    )
    c.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="also take calls from pages of this origin, e.g. https://app.example.com (default: the server's own page)",
    )
    c.add_argument(
        "--expose-host", action="store_true", help="name this machine and process in /info and the ready message"
    )
    c.add_argument(
        "--header-timeout",
        type=float,
        default=HEADER_TIMEOUT_S,
        metavar="SECONDS",
        help=f"close connections that have not sent a request's headers within this (default: {HEADER_TIMEOUT_S:g})",
    )
    c.add_argument(
        "--slots",
        type=int,
        help="callers per latency preset, in one batch (default: measured at start-up, the most of 4, 2 and 1 that "
        "this machine serves in real time; 4 with --ray)",
    )
    c.add_argument(
        "--latency",
        default="exact",
        help=f"comma-separated presets offered to callers, each its own batch: {', '.join(LATENCY_PRESETS)}; or auto: "
        "times this machine at start-up and offers the lowest that serves a caller in real time (default: exact)",
    )
    c.add_argument(
        "--hops-per-tick",
        type=int,
        help="12.5 ms hops per tick and message (default: measured at start-up, the fewest that this machine keeps up "
        "with for every slot, among 1, 2, 4 and 8)",
    )
    c.add_argument("--threads", type=int, help="torch threads (default: one core fewer than the machine has)")
    c.add_argument(
        "--backend",
        choices=BACKENDS,
        help="how the streams' steady ticks run (default: eager on the CPU, cuda-graph on CUDA); see rtcodec live",
    )
    c.add_argument(
        "--ray", action="store_true", help="run on Ray Serve, a replica per GPU or CPU (pip install 'rtcodec[ray]')"
    )
    c.add_argument("--replicas", type=int, default=1, help="with --ray: copies of the server, each its own batch (1)")
    c.add_argument("--gpus-per-replica", type=float, default=0, help="with --ray: 1 for a GPU per replica (0)")
    c.add_argument("--ray-address", help="with --ray: a running Ray cluster (default: start a local one)")
    add_model_options(c)
    c.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> None:
    try:
        import uvicorn

        from ..serve import ServeOptions, create_app, default_threads
        from ..serve.app import EVERY_ADDRESS, allowed_hosts
        from ..serve.guard import guarded_protocol
        from ..serve.protocol import MAX_MESSAGE_BYTES
    except ImportError as err:
        raise CommandError(f"rtcodec serve needs its extra: pip install 'rtcodec[serve]' ({err})") from None
    latencies = tuple(name.strip() for name in args.latency.split(",") if name.strip())
    unknown = [name for name in latencies if name not in LATENCY_PRESETS]
    if latencies != (AUTO,) and (unknown or not latencies):
        raise CommandError(
            f"--latency takes presets among {', '.join(LATENCY_PRESETS)}, or auto alone, got {args.latency!r}"
        )
    if latencies == (AUTO,) and args.ray:
        raise CommandError("--latency auto times one machine; with --ray, name the presets to offer")
    if min(args.slots or 1, args.hops_per_tick or 1, args.threads or 1) < 1:
        raise CommandError("--slots, --hops-per-tick and --threads must be at least 1")
    if not 0 < args.header_timeout < float("inf"):
        raise CommandError(f"--header-timeout must be more than 0 seconds, got {args.header_timeout}")
    torch.set_num_threads(args.threads or default_threads())
    options = ServeOptions(
        slots=args.slots,
        hops_per_tick=args.hops_per_tick,
        latencies=latencies,
        backend=args.backend,
        allowed_hosts=allowed_hosts(args.host, args.allow_host),
        allowed_origins=tuple(args.allow_origin),
        expose_host=args.expose_host,
    )
    if args.ray:
        return _run_on_ray(args, options)
    models = load(args, "v1")
    if latencies == (AUTO,):
        print("rtcodec serve: --latency auto: timing each preset on this machine, the lowest first", file=sys.stderr)
    elif args.slots is None or args.hops_per_tick is None:
        print(
            "rtcodec serve: timing this machine to choose the slots and block size (--slots and --hops-per-tick "
            "skip it)",
            file=sys.stderr,
        )
    app = create_app(models, options)
    server = app.state.server
    if server.sizing_line:
        print(f"rtcodec serve: {server.sizing_line}", file=sys.stderr)
    slots = server.options.slots
    print(
        f"rtcodec serve: open http://{args.host}:{args.port}/ ({slots} slot{'s' if slots > 1 else ''} per preset)",
        file=sys.stderr,
    )
    if args.host in EVERY_ADDRESS and "*" not in options.allowed_hosts:
        print(
            f"rtcodec serve: requests are answered for the names {', '.join(options.allowed_hosts)} only: add the "
            "names others use to reach this machine with --allow-host NAME",
            file=sys.stderr,
        )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        ws_max_size=MAX_MESSAGE_BYTES,
        log_level="warning",
        http=guarded_protocol(args.header_timeout),
        timeout_keep_alive=5,
    )


def _run_on_ray(args: argparse.Namespace, options) -> None:
    """The same app as a Ray Serve deployment, until Ctrl-C."""
    try:
        import ray
        from ray import serve

        from ..serve.ray import application, run
        from ..serve.sizing import CANDIDATE_SLOTS
    except ImportError as err:
        raise CommandError(f"rtcodec serve --ray needs its extra: pip install 'rtcodec[ray]' ({err})") from None
    if args.replicas < 1:
        raise CommandError(f"--replicas must be at least 1, got {args.replicas}")
    # Ray routes by the slot count, fixed before any replica starts; each replica times its own block size.
    options = replace(options, slots=options.slots or CANDIDATE_SLOTS[0])
    load(args, "v1")  # the weights are here (or a clear error), before any replica tries
    checkpoint_dir, device, dtype = args.checkpoint_dir, args.device, PRECISIONS[args.precision]
    if args.ray_address is None:  # a local Ray of ours: its control plane takes Ray's token (Ray >= 2.52)
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    ray.init(address=args.ray_address, include_dashboard=False)
    serve.start(http_options={"host": args.host, "port": args.port})
    deployment = application(
        lambda: from_pretrained("v1", device, dtype, checkpoint_dir=checkpoint_dir),  # on each replica
        options,
        replicas=args.replicas,
        num_gpus=args.gpus_per_replica,
    )
    run(deployment, options)
    print(
        f"rtcodec serve on Ray: open http://{args.host}:{args.port}/ ({args.replicas} replicas); Ctrl-C stops.\n"
        f"Ray's own ports (GCS, raylet, object manager, workers) listen on every network interface whatever --host "
        f"says; they take Ray's token (RAY_AUTH_MODE={os.environ.get('RAY_AUTH_MODE', 'Ray default')}). On a "
        "network you do not trust, block them with a firewall.",
        file=sys.stderr,
    )
    try:
        while True:
            time.sleep(3600)
    finally:
        serve.shutdown()

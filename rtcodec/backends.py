"""How a stream's settled ticks run: one backend per stream, chosen once by `StreamOptions.backend`.

A settled tick (every row past its start and open) does the same work on the same buffers every time, so it can
be replayed, compiled or exported; the other ticks (a signal's first ticks, the drains) always run op by op.

- "eager": op by op (the default on the CPU);
- "cuda-graph": replayed from a CUDA graph per tick size (the default on CUDA);
- "compile": `torch.compile` per tick size (CPU): fused loops in place of hundreds of small operations;
- "onnxruntime": the tick exported to ONNX per tick size and run by onnxruntime (CPU; `pip install
  rtcodec[onnx]`).

Compiling and exporting take seconds to a minute per tick size, so they happen the second time a size comes (the
first runs op by op): a size that comes once, such as a push of odd size, costs nothing. Warm a live stream up
first (`VoiceConversion.warm_up`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch

from .onnx_stream import require_onnxruntime, session
from .stream_ops import Clock, StreamOp
from .tick_graph import state_names, tick_graph

BACKENDS = ("eager", "compile", "cuda-graph", "onnxruntime")
# A tick size is compiled or exported the second time it comes: warm-ups run this many settled ticks of a size.
FIRST_SETTLED_TICKS = 2


def default_threads() -> int:
    """CPU threads for live streams (`rtcodec live`, `rtcodec serve`): one core is left to everything else (the
    audio callback, the event loop, the user's other programs). With every core in torch's team, each of a hop's
    hundreds of small parallel operations waits whenever something else takes a core: beside one busy process on
    2 cores a one-hop push took 575 ms on 2 threads and 21 ms on 1 (bench.report, busy stages); a server tick
    75 ms instead of 40 (bench.serve)."""
    return max(1, (os.cpu_count() or 2) - 1)


SettledTicks = Callable[[torch.Tensor], torch.Tensor]  # a settled tick's input to its output; states in place


def resolve(backend: str | None, device: torch.device) -> str:
    """The backend a stream on `device` uses for `backend` (None: the device's default), checked."""
    if backend is None:
        return "cuda-graph" if device.type == "cuda" else "eager"
    # `StreamOptions` checked that it is one of BACKENDS; here, whether it suits the device.
    if backend == "cuda-graph" and device.type != "cuda":
        raise ValueError(f"backend 'cuda-graph' needs the model on a CUDA device, not {device}")
    if backend in ("compile", "onnxruntime") and device.type != "cpu":
        raise ValueError(f"backend {backend!r} is for streams on the CPU; on CUDA the settled ticks replay CUDA graphs")
    if backend == "onnxruntime":
        require_onnxruntime()
    return backend


def settled_ticks(backend: str, op: StreamOp, clock: Clock, states: list[torch.Tensor]) -> SettledTicks | None:
    """What runs the settled ticks of a stream (None: op by op, as every other tick)."""
    if backend == "cuda-graph":
        return CudaGraphTicks(op, clock)
    if backend == "compile":
        return CompiledTick(op, clock)
    if backend == "onnxruntime":
        return OnnxTicks(op, clock, states)
    return None


class CudaGraphTicks:
    """One CUDA graph per tick size."""

    def __init__(self, op: StreamOp, clock: Clock) -> None:
        self.op, self.clock = op, clock
        self.graphs: dict[int, HopGraph] = {}  # by input samples per tick

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] not in self.graphs:
            self.graphs[x.shape[2]] = HopGraph(self.op, self.clock)
        return self.graphs[x.shape[2]](x)


class HopGraph:
    """Ticks of one size replayed from a CUDA graph: the input is copied into a static buffer, the states are
    updated in place as in an eager tick, and the output is copied out of the graph's buffer."""

    def __init__(self, op: StreamOp, clock: Clock) -> None:
        self.op, self.clock = op, clock
        self.graph: torch.cuda.CUDAGraph | None = None
        self.x = self.y = None  # the graph's input and output buffers

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.cuda.device(x.device):  # streams and graphs belong to the current device: make it the model's
            if self.graph is None:
                return self._capture(x)
            self.x.copy_(x)
            self.graph.replay()
            return self.y.clone()

    def _capture(self, x: torch.Tensor) -> torch.Tensor:
        # The first tick runs for real on a side stream, which also does the lazy set-up (Triton compiles, cuBLAS
        # workspaces) that must not happen during a capture; capturing then records the kernels without running
        # them, so the states are not touched twice.
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            y = self.op.step(x, self.clock)
        torch.cuda.current_stream(x.device).wait_stream(side)
        self.x = x.clone()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.y = self.op.step(self.x, self.clock)
        return y


class CompiledTick:
    """Settled ticks through `torch.compile`, one compiled graph per tick size (up to a minute per size on a small
    CPU, much less once the compiler's cache holds it). Where the compiler fails (no C++ compiler, an unsupported
    platform) the ticks run op by op, with a warning."""

    def __init__(self, op: StreamOp, clock: Clock) -> None:
        self.op, self.clock = op, clock
        self.seen: set[int] = set()  # tick sizes run once
        self.step: Callable | None = None
        try:
            # The C++ wrapper calls the compiled kernels without Python in between: 5 % off a one-hop push.
            self.step = torch.compile(op.step, dynamic=False, options={"cpp_wrapper": True})
        except RuntimeError as err:  # e.g. a Python this torch cannot compile for
            self._give_up(err)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] not in self.seen:
            self.seen.add(x.shape[2])
        elif self.step is not None:
            try:
                return self.step(x, self.clock)
            except torch._dynamo.exc.TorchDynamoException as err:  # compiling fails before the tick runs
                self._give_up(err)
        return self.op.step(x, self.clock)

    def _give_up(self, err: Exception) -> None:
        warnings.warn(f"torch.compile failed, the stream runs op by op: {err}", RuntimeWarning, stacklevel=3)
        self.step = None


class OnnxTicks:
    """Settled ticks through onnxruntime: a tick size is exported (`rtcodec.tick_graph`) and gets its own
    session the second time it comes. The states stay torch tensors: they go in as numpy views and the new ones
    are copied back."""

    def __init__(self, op: StreamOp, clock: Clock, states: list[torch.Tensor]) -> None:
        self.op, self.clock, self.states = op, clock, states
        self.names = state_names(len(states))  # the graphs' state inputs
        self.seen: set[int] = set()
        self.sessions: dict[int, object] = {}  # by input samples per tick

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2]
        if size not in self.sessions:
            if size not in self.seen:
                self.seen.add(size)
                return self.op.step(x, self.clock)
            graph = tick_graph(self.op, self.states, x, edges=False)
            self.sessions[size] = session(graph, threads=torch.get_num_threads())
        feed = {"x": x.contiguous().numpy(), **dict(zip(self.names, (s.numpy() for s in self.states)))}
        y, *new = self.sessions[size].run(None, feed)
        for state, value in zip(self.states, new):
            state.copy_(torch.from_numpy(value))
        return torch.from_numpy(y)

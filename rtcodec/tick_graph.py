"""A stream's tick as an ONNX graph whose states are inputs and outputs.

A stream's tick updates its states in place (`stream_ops`); the exported tick is the same computation as a
function, `(x, *states) -> (y, *new_states)`, the way streaming speech recognisers and voice-activity detectors
ship. Two forms per stage and tick size:

- settled: every row is past its start and open, so no window reaches an edge (most ticks of a live stream);
- edges: also takes each row's position, `hops [B]` (hops since its start) and `ends [B]` (its length, or
  `OPEN_END`), and applies the offline padding where a window crosses an edge (a signal's first ticks, the
  drains of `flush` and of a lookahead).

The onnxruntime backend (`backends.py`) runs its ticks through these; `export.py` writes them for the whole model.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import torch
from torch import nn

from .stream_ops import OPEN_END, Clock, StreamOp


class Tick(nn.Module):
    """One tick of a stream's operations as a function: `(x, *states[, hops, ends]) -> (y, *states)`."""

    def __init__(self, op: StreamOp, edges: bool) -> None:
        super().__init__()
        self.op, self.edges, self.slots = op, edges, op.slots()

    def forward(self, x: torch.Tensor, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        count = len(self.slots)
        states = [state.clone() for state in inputs[:count]]  # the tick updates these in place
        clock = Clock(x.shape[0])
        if self.edges:
            clock.hops, clock.ends = inputs[count], inputs[count + 1]
        else:
            clock.settled = True
        held = [getattr(op, name) for op, name in self.slots]
        for (op, name), state in zip(self.slots, states):
            setattr(op, name, state)
        try:
            y = self.op.step(x, clock)
        finally:
            for (op, name), state in zip(self.slots, held):
                setattr(op, name, state)
        return (y, *states)


def state_names(count: int) -> list[str]:
    return [f"state_{i}" for i in range(count)]


def tick_graph(op: StreamOp, states: list[torch.Tensor], x: torch.Tensor, edges: bool) -> bytes:
    """The ONNX model (serialized) of a tick of `op` on inputs shaped like `x` and `states`."""
    names = state_names(len(states))
    args = [x, *states]
    if edges:
        args += [torch.zeros(x.shape[0], dtype=torch.long), torch.full((x.shape[0],), OPEN_END)]
    inputs = ["x", *names, *(["hops", "ends"] if edges else [])]
    outputs = ["y", *(f"{name}_out" for name in names)]
    return to_onnx(Tick(op, edges), tuple(args), inputs, outputs)


def to_onnx(module: nn.Module, args: tuple, inputs: list[str], outputs: list[str], dynamic=None) -> bytes:
    # The exporter reports its steps on stdout and logs and warns about modules it does not use (torchvision's):
    # none of it helps here.
    log = logging.getLogger("torch.onnx")
    level = log.level
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        log.setLevel(logging.ERROR)
        try:
            # onnxscript's optimizer took over 5 minutes a graph; onnxruntime optimizes at load instead.
            program = torch.onnx.export(
                module.eval(),
                args,
                dynamo=True,
                optimize=False,
                input_names=inputs,
                output_names=outputs,
                dynamic_shapes=dynamic,
            )
        finally:
            log.setLevel(level)
    return program.model_proto.SerializeToString()

"""Streaming with onnxruntime and numpy alone, without torch: the graphs of `rtcodec export --onnx DIR`.

    from rtcodec.onnx_stream import OnnxVoiceConversion

    vc = OnnxVoiceConversion("facodec-onnx")  # the voice exported with `--voice`, or speaker=...
    out = vc.push(chunk)                      # float32 [B, 1, n] in, converted audio out
    rest = vc.flush()

Install without torch, from a clone: `pip install --no-deps . && pip install numpy onnxruntime`; this module imports
neither torch nor the rest of rtcodec. The streams here keep the rows of a batch in step (they start, end and
reset together) and give what the torch streams give (`rtcodec.streaming`): exact mode equals the offline output,
and a lookahead hands an output out once that much audio has arrived after it, computed as if the signal ended
there. A lookahead drain runs hop by hop through the exported edge tick here, so it costs more than in torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"
FORMAT = 1  # of the manifest: what `rtcodec.export` writes and this module reads


class ExportError(ValueError):
    """An export directory that is missing, incomplete, damaged or of another format."""


@dataclass(frozen=True)
class StageManifest:
    """What a runner needs to know of one exported stream."""

    in_channels: int
    out_channels: int
    in_per_hop: int
    out_per_hop: int
    out_offset: int
    settled_hops: int
    exact_lookahead_samples: int
    #: out_length(n) = length_table[n % in_per_hop] + (n // in_per_hop) * out_per_hop for n >= length_from
    length_table: list[int]
    length_from: int
    states: list[list[int]]  # shapes, in input order
    settled: str  # file names
    edges: str


TOP_KEYS = ("batch_size", "hop_length", "open_end")  # what the runner reads besides the stages
# Measured (a graph whose weights point at ../secret.bin, and at a symlink leaving the folder): 1.18 to 1.23.2
# read the file's bytes into the weights; 1.24.1 is the first that refuses both. 1.17 cannot load the export.
ONNXRUNTIME_FLOOR = (1, 24, 1)
# Bounds on the manifest's numbers, far above any export's and low enough that nothing is allocated beyond reason
# before the graphs' own shapes are compared with it.
MAX_BATCH = 4096
MAX_CHANNELS = 4096
MAX_PER_HOP = 1 << 16
MAX_DELAY = 1 << 24  # samples or frames: hours
MAX_STATES = 1024
MAX_STATE_VALUES = 1 << 26  # 256 MB of float32 states, all together


def require_onnxruntime():
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(
            "the onnxruntime backend needs onnxruntime: pip install 'rtcodec[onnx]' (or pip install onnxruntime)"
        ) from err
    version = tuple(int(part) for part in onnxruntime.__version__.split("+")[0].split(".")[:3] if part.isdigit())
    if version < ONNXRUNTIME_FLOOR:
        floor = ".".join(map(str, ONNXRUNTIME_FLOOR))
        raise ImportError(
            f"onnxruntime {onnxruntime.__version__} reads weights from files outside an export folder: "
            f"pip install 'onnxruntime>={floor}'"
        )
    return onnxruntime


# Whether onnxruntime's threads spin while they wait for work (its own default). Off: on a machine with other
# work, a spinning thread takes a core from it and from the next tick (bench.report, busy_* stages).
SPINNING = False


def session(model: bytes | str | Path, threads: int = 1):
    """An onnxruntime CPU session for `model` (serialized, or a file) on `threads` threads."""
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if SPINNING else "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its notes on nodes it cannot fold are not the user's concern
    return ort.InferenceSession(
        model if isinstance(model, bytes) else str(model), options, providers=["CPUExecutionProvider"]
    )


SHARED_GRAPHS = ("quantize.onnx", "front.onnx", "front_content.onnx", "timbre.onnx")  # besides the stages' ticks


def _load(path: Path, threads: int):
    """The session of an exported graph; a file onnxruntime cannot load is named as damaged."""
    try:
        return session(path, threads)
    except ImportError:
        raise
    except Exception as err:  # onnxruntime's own errors (invalid protobuf, bad graph) share no base class
        raise ExportError(f"{path} is damaged: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from err


MAX_MANIFEST_BYTES = 1 << 20
SPEAKER_SIZE = 256


def load_manifest(directory: str | Path) -> dict:
    """The manifest of an export directory, checked before anything is allocated from it: every field in its
    range (an `ExportError` naming the first that is not), its stages as `StageManifest`, and every file it names
    there, inside the folder."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise ExportError(f"{directory} is not an rtcodec ONNX export: {MANIFEST} is missing (rtcodec export --onnx)")
    inside(directory, MANIFEST)
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ExportError(f"{path} is damaged: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict):
            raise TypeError("not a JSON object")
        missing = [key for key in (*TOP_KEYS, "encoder", "decoder") if key not in manifest]
        if missing:
            raise KeyError(", ".join(missing))
        if manifest.get("format") != FORMAT:
            raise ExportError(f"{path} has format {manifest.get('format')!r}; this rtcodec reads format {FORMAT}")
        for stage in ("encoder", "decoder"):
            if not isinstance(manifest[stage], dict):
                raise TypeError(f"{stage} is not a JSON object")
            manifest[stage] = StageManifest(**manifest[stage])
    except (ValueError, KeyError, TypeError, RecursionError) as err:
        if isinstance(err, ExportError):
            raise
        raise ExportError(f"{path} is damaged: {err}") from err
    _check_fields(path, manifest)
    stages = (manifest["encoder"], manifest["decoder"])
    for name in [*(s.settled for s in stages), *(s.edges for s in stages), *SHARED_GRAPHS]:
        if not (directory / name).is_file():
            raise ExportError(f"{directory} is incomplete: {name} is missing")
        inside(directory, name)
    return manifest


def inside(directory: Path, name: str) -> Path:
    """`directory / name`, refused where the name or a symlink leads out of the folder."""
    path = directory / name
    if not path.resolve().is_relative_to(directory.resolve()):
        raise ExportError(f"{directory}: {name} leads outside the export folder (a path or symlink); refused")
    return path


def _check_fields(path: Path, manifest: dict) -> None:
    def check(name: str, value, low: int, high: int) -> None:
        if type(value) is not int or not low <= value <= high:
            raise ExportError(f"{path}: {name} must be an integer within {low}..{high}, got {value!r}")

    check("batch_size", manifest["batch_size"], 1, MAX_BATCH)
    check("hop_length", manifest["hop_length"], 1, MAX_PER_HOP)
    check("open_end", manifest["open_end"], 1, 1 << 62)
    state_values = 0
    for stage in ("encoder", "decoder"):
        spec: StageManifest = manifest[stage]
        for name in ("in_channels", "out_channels"):
            check(f"{stage}.{name}", getattr(spec, name), 1, MAX_CHANNELS)
        for name in ("in_per_hop", "out_per_hop"):
            check(f"{stage}.{name}", getattr(spec, name), 1, MAX_PER_HOP)
        # Outputs lag their inputs: a positive offset would hand out positions before the signal began.
        check(f"{stage}.out_offset", spec.out_offset, -MAX_DELAY, 0)
        check(f"{stage}.settled_hops", spec.settled_hops, 0, MAX_DELAY)
        check(f"{stage}.exact_lookahead_samples", spec.exact_lookahead_samples, 0, MAX_DELAY)
        check(f"{stage}.length_from", spec.length_from, 0, MAX_DELAY)
        table = spec.length_table
        if not isinstance(table, list) or len(table) != spec.in_per_hop:
            raise ExportError(f"{path}: {stage}.length_table must list {spec.in_per_hop} lengths (one per phase)")
        for value in table:
            check(f"{stage}.length_table[]", value, -MAX_DELAY, MAX_DELAY)
        if not isinstance(spec.states, list) or len(spec.states) > MAX_STATES:
            raise ExportError(f"{path}: {stage}.states must list at most {MAX_STATES} shapes")
        for shape in spec.states:
            if not isinstance(shape, list) or len(shape) != 3 or shape[0] != manifest["batch_size"]:
                raise ExportError(f"{path}: {stage}.states holds {shape!r}, not a [batch_size, channels, n] shape")
            check(f"{stage}.states[][1]", shape[1], 1, MAX_CHANNELS)
            check(f"{stage}.states[][2]", shape[2], 0, MAX_PER_HOP)
            state_values += shape[0] * shape[1] * shape[2]
        for name in ("settled", "edges"):
            value = getattr(spec, name)
            if not isinstance(value, str) or Path(value).name != value or not value.endswith(".onnx"):
                raise ExportError(f"{path}: {stage}.{name} must be a .onnx file name in the folder, got {value!r}")
    if state_values > MAX_STATE_VALUES:
        raise ExportError(f"{path}: the states hold {state_values} values; at most {MAX_STATE_VALUES}")


def _check_graph(path: Path, graph, inputs: dict[str, list[int]], outputs: dict[str, list[int]]) -> None:
    """The graph's declared shapes are the manifest's: a manifest that disagrees with its graphs is damaged."""
    for declared, wanted in ((graph.get_inputs(), inputs), (graph.get_outputs(), outputs)):
        shapes = {node.name: node.shape for node in declared}
        for name, shape in wanted.items():
            if name in shapes and list(shapes[name]) != shape:
                raise ExportError(f"{path}: its graph takes {name} shaped {shapes[name]}; the manifest says {shape}")


class OnnxStream:
    """One exported stream, "encoder" (audio `[B, 1, n]` to frames) or "decoder" (normalized frames `[B, 256, k]`
    to audio): `push`, `flush`, `reset`, `lookahead_samples`, as the torch streams."""

    def __init__(self, directory: str | Path, stage: str, lookahead: int | None = None, threads: int = 1) -> None:
        if stage not in ("encoder", "decoder"):
            raise ValueError(f"stage is 'encoder' or 'decoder', got {stage!r}")
        self.directory = Path(directory)
        manifest = load_manifest(self.directory)
        self.spec = manifest[stage]  # this stage's part of the manifest
        self.stage, self.batch_size, self.hop_length = stage, manifest["batch_size"], manifest["hop_length"]
        self.open_end = manifest["open_end"]
        self.settled = _load(self.directory / self.spec.settled, threads)
        self.edges = _load(self.directory / self.spec.edges, threads)
        self.state_names = [f"state_{i}" for i in range(len(self.spec.states))]
        spec, batch = self.spec, self.batch_size
        inputs = {"x": [batch, spec.in_channels, spec.in_per_hop], **dict(zip(self.state_names, spec.states))}
        for name, graph in ((spec.settled, self.settled), (spec.edges, self.edges)):
            _check_graph(self.directory / name, graph, inputs, {"y": [batch, spec.out_channels, spec.out_per_hop]})
        exact = self.spec.exact_lookahead_samples
        if lookahead is not None and (not isinstance(lookahead, int) or lookahead < 0):
            raise ValueError(f"lookahead must be a number of samples >= 0 or None (exact), got {lookahead!r}")
        self.lookahead = lookahead if lookahead is not None and lookahead < exact else None
        self.reset()

    @property
    def lookahead_samples(self) -> int:
        if self.lookahead is None:
            return self.spec.exact_lookahead_samples
        # The decoder's frames arrive whole: its first sample waits a frame's worth at least.
        return self.lookahead if self.stage == "encoder" else max(self.lookahead, self.hop_length - 1)

    def reset(self) -> None:
        """Start a new signal in every row."""
        self.states = [np.zeros(shape, np.float32) for shape in self.spec.states]
        self.pending = np.zeros((self.batch_size, self.spec.in_channels, 0), np.float32)
        self.hops, self.emitted, self.finished = 0, 0, False

    def push(self, x: np.ndarray) -> np.ndarray:
        """Take `[B, C, n]` (any n >= 0); return the outputs final now, `[B, C_out, k]`."""
        if self.finished:
            raise RuntimeError("this stream was flushed: call reset() to start a new signal")
        x = np.asarray(x, dtype=np.float32)
        expected = (self.batch_size, self.spec.in_channels)
        if x.ndim != 3 or x.shape[:2] != expected:
            raise ValueError(f"push takes an array shaped [{expected[0]}, {expected[1]}, n], got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("the pushed samples are not all finite (NaN or infinity)")
        data = np.concatenate([self.pending, x], axis=2)
        per_hop = self.spec.in_per_hop
        hops = data.shape[2] // per_hop
        self.pending = data[..., hops * per_hop :]
        outs = [self._tick(data[..., h * per_hop : (h + 1) * per_hop], None) for h in range(hops)]
        outs = [self._emit(y, start, None) for y, start in outs]
        if self.lookahead is not None:
            outs.append(self._speculate())
        return self._cat(outs)

    def flush(self) -> np.ndarray:
        """End the signal: return every output not handed out yet; then `reset()` to reuse the stream."""
        if self.finished:
            raise RuntimeError("this stream was flushed: call reset() to start a new signal")
        self.finished = True
        return self._drain(self._received(), self._out_length(self._received()))

    # -- ticks -----------------------------------------------------------------------------------------

    def _tick(self, x: np.ndarray, end: int | None) -> tuple[np.ndarray, int]:
        """One hop, through the settled graph where no window can reach an edge; returns the output and the
        position of its first sample."""
        feed = {"x": np.ascontiguousarray(x), **dict(zip(self.state_names, self.states))}
        if end is None and self.hops >= self.spec.settled_hops:
            y, *self.states = self.settled.run(None, feed)
        else:
            feed["hops"] = np.full(self.batch_size, self.hops, np.int64)
            feed["ends"] = np.full(self.batch_size, self.open_end if end is None else end, np.int64)
            y, *self.states = self.edges.run(None, feed)
        start = self.hops * self.spec.out_per_hop + self.spec.out_offset
        self.hops += 1
        return y, start

    def _emit(self, y: np.ndarray, start: int, stop: int | None) -> np.ndarray:
        """The part of `y` (first sample at `start`) from the first position not handed out, up to `stop`."""
        lo = max(self.emitted, 0, start)
        hi = start + y.shape[2] if stop is None else min(stop, start + y.shape[2])
        if hi <= lo:
            return y[..., :0]
        self.emitted = hi
        return y[..., lo - start : hi - start]

    def _drain(self, end: int, stop: int) -> np.ndarray:
        """Feed the pending input, then silence, as if the signal ended at `end`, until `stop` is handed out."""
        per_hop, outs = self.spec.in_per_hop, []
        data, self.pending = self.pending, self.pending[..., :0]
        while self.emitted < stop:
            x = np.zeros((self.batch_size, self.spec.in_channels, per_hop), np.float32)
            x[..., : data.shape[2]] = data[..., :per_hop]
            data = data[..., per_hop:]
            outs.append(self._emit(*self._tick(x, end), stop))
        return self._cat(outs)

    def _speculate(self) -> np.ndarray:
        """The outputs up to the lookahead, as if the signal ended now, on copies of the states."""
        received = self._received()
        if self.stage == "encoder":
            stop = (received - self.lookahead) // self.hop_length
        else:  # frames in, samples out
            stop = received * self.hop_length + min(self.hop_length - 1 - self.lookahead, 0)
        if stop <= self.emitted:
            return self._cat([])
        saved = (list(self.states), self.pending, self.hops)
        out = self._drain(received, stop)
        self.states, self.pending, self.hops = saved
        return out

    # -- helpers ---------------------------------------------------------------------------------------

    def _received(self) -> int:
        return self.hops * self.spec.in_per_hop + self.pending.shape[2]

    def _out_length(self, n: int) -> int:
        """The offline output length of an input of length n."""
        per_hop, first = self.spec.in_per_hop, self.spec.length_from
        if n < first:  # shorter than any live signal: count it out from the table's first period
            hops = -(-(first - n) // per_hop)
            return self._out_length(n + hops * per_hop) - hops * self.spec.out_per_hop
        return self.spec.length_table[n % per_hop] + (n // per_hop) * self.spec.out_per_hop

    def _cat(self, outs: list[np.ndarray]) -> np.ndarray:
        empty = np.zeros((self.batch_size, self.spec.out_channels, 0), np.float32)
        return np.concatenate([empty, *outs], axis=2)


class OnnxVoiceConversion:
    """Voice conversion on the exported graphs: audio `[B, 1, n]` in, audio in the target voice out, as
    `rtcodec.VoiceConversion`. `speaker`: the target's speaker embedding `[256]` (default: the `speaker.npy`
    that `rtcodec export --voice` wrote); `lookahead`: (encoder, decoder) samples, None for exact."""

    def __init__(self, directory, speaker=None, lookahead=(None, None), threads: int = 1) -> None:
        directory = Path(directory)
        manifest = load_manifest(directory)
        if speaker is None:
            path = directory / "speaker.npy"
            if not path.is_file():
                raise ExportError(f"{directory} has no speaker.npy: export with --voice, or pass speaker=")
            try:
                speaker = np.load(inside(directory, "speaker.npy"), allow_pickle=False)
            except (OSError, ValueError) as err:
                raise ExportError(f"{path} is damaged: {err}") from None
            if speaker.shape != (SPEAKER_SIZE,) or not np.isfinite(speaker).all():
                raise ExportError(f"{path} is damaged: not {SPEAKER_SIZE} finite values")
        speaker = np.asarray(speaker, np.float32).reshape(1, -1)
        if speaker.shape != (1, SPEAKER_SIZE) or not np.isfinite(speaker).all():
            raise ValueError(f"speaker must be {SPEAKER_SIZE} finite values, got shape {speaker.shape[1:]}")
        batch = manifest["batch_size"]
        self.encoder = OnnxStream(directory, "encoder", lookahead[0], threads)
        self.decoder = OnnxStream(directory, "decoder", lookahead[1], threads)
        self.quantizer = _load(directory / "quantize.onnx", threads)
        self.front = _load(directory / "front_content.onnx", threads)
        gamma, beta = _load(directory / "timbre.onnx", threads).run(None, {"speaker": np.repeat(speaker, batch, 0)})
        self.timbre = {"gamma": gamma, "beta": beta}
        self.samples = 0

    @property
    def latency_samples(self) -> int:
        return self.encoder.lookahead_samples + self.decoder.lookahead_samples

    def codes(self, frames: np.ndarray) -> np.ndarray:
        """The codes `[6, B, k]` of encoder frames `[B, 256, k]`."""
        if frames.shape[2] == 0:
            return np.zeros((6, frames.shape[0], 0), np.int64)
        return self.quantizer.run(None, {"frames": frames})[0]

    def _decode(self, frames: np.ndarray) -> np.ndarray:
        if frames.shape[2]:
            frames = self.front.run(None, {"codes": self.codes(frames), **self.timbre})[0]
        else:
            frames = np.zeros((frames.shape[0], self.decoder.spec.in_channels, 0), np.float32)
        return self.decoder.push(frames)

    def push(self, audio: np.ndarray) -> np.ndarray:
        out = self._decode(self.encoder.push(audio))
        self.samples += np.shape(audio)[2]
        return out

    def flush(self) -> np.ndarray:
        """The rest of the converted audio: in all, as long as what was pushed (the last partial frame is
        coded padded with silence, and the padding is dropped from the output)."""
        padding = -self.samples % self.encoder.hop_length
        frames = self.encoder.push(np.zeros((self.encoder.batch_size, 1, padding), np.float32))
        frames = np.concatenate([frames, self.encoder.flush()], axis=2)
        out = np.concatenate([self._decode(frames), self.decoder.flush()], axis=2)
        return out[..., : out.shape[2] - min(padding, out.shape[2])]

    def reset(self) -> None:
        self.encoder.reset()
        self.decoder.reset()
        self.samples = 0  # pushed since the last reset

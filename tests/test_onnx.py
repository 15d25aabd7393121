"""The onnxruntime backend, the ONNX export and the torch-free runner: the same outputs as the torch streams."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rtcodec.pipelines import VoiceConversion

from .conftest import golden_model, needs_golden, rel_err
from .test_streaming import random_chunks, run_stream

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'rtcodec[onnx]')")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed (pip install 'rtcodec[onnx]')")

TOL = 1e-5
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models():
    return golden_model("encoder"), golden_model("decoder")


@pytest.fixture(scope="module")
def exported(models, vectors, tmp_path_factory) -> Path:
    from rtcodec.export import export_onnx
    from rtcodec.pipelines import speaker_embedding

    encoder, decoder = models
    speaker = speaker_embedding(encoder, decoder, vectors["wav_b"])[0]
    directory = tmp_path_factory.mktemp("onnx")
    names = []
    export_onnx(encoder, decoder, directory, batch_size=2, speaker=speaker, progress=names.append)
    assert sorted(names) == sorted(p.name for p in directory.glob("*.onnx")) and len(names) == 8
    return directory


def sources(vectors) -> torch.Tensor:
    return torch.cat([vectors["wav_a"][..., :9000], vectors["wav_b"][..., :9000]])


@needs_golden
@pytest.mark.parametrize("lookahead", [None, 1600])
def test_onnxruntime_backend_equals_eager(models, vectors, lookahead):
    """Settled ticks through onnxruntime: random chunkings, rows restarting, and lookahead drains between them."""
    encoder, _ = models
    wav = sources(vectors)
    gen = torch.Generator().manual_seed(11)
    streams = [encoder.stream(batch_size=2, lookahead=lookahead, backend=b) for b in ("eager", "onnxruntime")]
    sizes = [200] * 30 + random_chunks(wav.shape[2] - 6000, gen, 900)
    got = [run_stream(stream, wav, sizes) for stream in streams]
    assert streams[1].settled_ticks.sessions, "no tick ran through onnxruntime"
    assert got[0].shape == got[1].shape and rel_err(got[1], got[0]) < TOL
    # Rows restarting: row 1 starts a new signal after 20 hops, both streams again.
    outs = [[], []]
    for stream, out in zip(streams, outs):
        stream.reset()
        for i in range(40):
            if i == 20:
                stream.reset([1])
            out.append(stream.push(wav[..., i * 200 : (i + 1) * 200]))
            out[-1] = out[-1] * stream.valid[:, None, :]
    a, b = torch.cat(outs[0], dim=2), torch.cat(outs[1], dim=2)
    assert a.shape == b.shape and rel_err(b, a) < TOL


@needs_golden
def test_voice_conversion_on_onnxruntime_gives_the_same_codes(models, vectors):
    encoder, decoder = models
    wav = vectors["wav_a"][..., :12000]
    pipelines = [VoiceConversion(encoder, decoder, vectors["wav_b"], backend=b) for b in ("eager", "onnxruntime")]
    codes = []
    for pipeline in pipelines:
        frames = torch.cat(
            [pipeline.sender.encoder_stream.push(wav[..., i : i + 200]) for i in range(0, 12000, 200)], 2
        )
        codes.append(decoder.quantize(frames))
    assert codes[0].shape[2] > 20 and torch.equal(codes[0], codes[1])


@needs_golden
@pytest.mark.parametrize("lookahead", [(None, None), (1600, 1000)])
def test_torch_free_runner_equals_the_torch_pipeline(exported, models, vectors, lookahead):
    from rtcodec.onnx_stream import OnnxVoiceConversion

    encoder, decoder = models
    wav = sources(vectors)[..., :8950]  # not whole frames: both code the last partial one and give 8950 samples
    reference = vectors["wav_b"]
    expected = VoiceConversion(encoder, decoder, reference, batch_size=2, lookahead=lookahead)
    runner = OnnxVoiceConversion(exported, lookahead=lookahead)
    assert runner.latency_samples == expected.latency_samples
    sizes = random_chunks(wav.shape[2], torch.Generator().manual_seed(2), 700)
    want = run_stream(expected, wav, sizes)
    outs, start = [], 0
    for size in sizes:
        outs.append(runner.push(wav[..., start : start + size].numpy()))
        start += size
    got = np.concatenate([*outs, runner.flush()], axis=2)
    assert got.shape == tuple(want.shape) == (2, 1, 8950)
    assert rel_err(torch.from_numpy(got), want) < TOL


@needs_golden
def test_runner_stages_and_codes(exported, models, vectors):
    """The encoder stage alone equals the torch encoder stream, and the exported quantizer gives its codes."""
    from rtcodec.onnx_stream import OnnxStream, OnnxVoiceConversion

    encoder, decoder = models
    wav = sources(vectors)
    want = run_stream(encoder.stream(batch_size=2), wav, [200] * 45)
    stream = OnnxStream(exported, "encoder")
    got = np.concatenate(
        [*(stream.push(wav[..., i : i + 200].numpy()) for i in range(0, 9000, 200)), stream.flush()], 2
    )
    assert rel_err(torch.from_numpy(got), want) < TOL
    codes = OnnxVoiceConversion(exported).codes(got)
    assert np.array_equal(codes, decoder.quantize(want).numpy())
    with pytest.raises(ValueError, match=r"push takes an array shaped \[2, 1, n\]"):
        stream.reset() or stream.push(np.zeros((1, 1, 200), np.float32))
    with pytest.raises(ValueError, match="not all finite"):
        stream.push(np.full((2, 1, 200), np.nan, np.float32))


RUNNER_SCRIPT = """
import sys
import numpy as np
from rtcodec.onnx_stream import OnnxVoiceConversion
export, wav_path, out_path = sys.argv[1:]
vc = OnnxVoiceConversion(export)
wav = np.load(wav_path)
out = np.concatenate([vc.push(wav[..., i : i + 400]) for i in range(0, wav.shape[2], 400)] + [vc.flush()], axis=2)
np.save(out_path, out)
print(sys.modules.get("torch") is not None)  # whether torch was loaded
"""


@needs_golden
def test_runner_needs_no_torch(exported, models, vectors, tmp_path):
    """The runner where torch cannot be imported (blocked here; tests/test_usage.py installs it as the README says,
    in a new venv without torch, and runs the README's example there)."""
    wav = sources(vectors)[..., :6000]
    np.save(tmp_path / "wav.npy", wav.numpy())
    python, prelude = sys.executable, 'import sys; sys.modules["torch"] = None\n'
    args = [str(exported), str(tmp_path / "wav.npy"), str(tmp_path / "out.npy")]
    run = subprocess.run(
        [python, "-c", prelude + RUNNER_SCRIPT, *args],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"  # torch was never imported
    encoder, decoder = models
    want = run_stream(VoiceConversion(encoder, decoder, vectors["wav_b"], batch_size=2), wav, [400] * 15)
    assert rel_err(torch.from_numpy(np.load(tmp_path / "out.npy")), want) < TOL


def test_bad_export_directories(exported, tmp_path):
    from rtcodec.onnx_stream import ExportError, OnnxStream

    with pytest.raises(ExportError, match="manifest.json is missing"):
        OnnxStream(tmp_path, "encoder")
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in exported.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    (broken / "decoder_edges.onnx").unlink()
    with pytest.raises(ExportError, match="incomplete: decoder_edges.onnx is missing"):
        OnnxStream(broken, "encoder")
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(ExportError, match="damaged"):
        OnnxStream(broken, "encoder")
    manifest = json.loads((exported / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(ExportError, match="format 99"):
        OnnxStream(broken, "encoder")
    (broken / "manifest.json").write_text(json.dumps({**manifest, "encoder": {"in_channels": 1}}))
    with pytest.raises(ExportError, match="damaged"):  # a stage with fields missing
        OnnxStream(broken, "encoder")
    (broken / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "batch_size"}))
    with pytest.raises(ExportError, match="damaged: 'batch_size'"):
        OnnxStream(broken, "encoder")
    (broken / "manifest.json").write_text(json.dumps(manifest))
    (broken / "decoder_edges.onnx").write_bytes(b"not a graph")
    with pytest.raises(ExportError, match="decoder_edges.onnx is damaged"):
        OnnxStream(broken, "decoder")
    with pytest.raises(ValueError, match="stage is 'encoder' or 'decoder'"):
        OnnxStream(exported, "vocoder")


def _copy(exported: Path, target: Path, **changes) -> Path:
    """A copy of the export with `changes` made to its manifest ("stage.field" names a stage's field)."""
    target.mkdir()
    for path in exported.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    manifest = json.loads((exported / "manifest.json").read_text())
    for key, value in changes.items():
        stage, _, field = key.partition("__")
        if field:
            manifest[stage][field] = value
        else:
            manifest[key] = value
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"batch_size": 4_000_000}, "batch_size must be an integer within 1..4096"),
        ({"batch_size": True}, "batch_size must be an integer"),
        ({"encoder__in_per_hop": -200}, "encoder.in_per_hop must be an integer within 1.."),
        ({"encoder__in_per_hop": 0}, "encoder.in_per_hop must be an integer within 1.."),
        ({"decoder__out_offset": 1000}, "decoder.out_offset must be an integer within"),
        ({"decoder__length_table": []}, "decoder.length_table must list 1 lengths"),
        ({"encoder__states": [[2, 10**6, 10**4]]}, "encoder.states"),
        ({"encoder__settled": "../../etc/passwd"}, "encoder.settled must be a .onnx file name in the folder"),
        ({"encoder__edges": "/tmp/x.onnx"}, "encoder.edges must be a .onnx file name in the folder"),
        ({"encoder__out_per_hop": 2}, "its graph takes y shaped"),  # in range, but not what the graph gives
        ({"encoder": [[[[[]]]]]}, "encoder is not a JSON object"),
    ],
)
def test_manifest_fields_are_range_checked_before_anything_is_allocated(exported, tmp_path, changes, message):
    from rtcodec.onnx_stream import ExportError, OnnxStream

    with pytest.raises(ExportError, match=message.replace("[", r"\[").replace(".", r"\.")):
        OnnxStream(_copy(exported, tmp_path / "bad", **changes), "encoder")


def test_deeply_nested_manifest_and_bad_speaker_are_named(exported, tmp_path):
    from rtcodec.onnx_stream import ExportError, OnnxStream, OnnxVoiceConversion

    nested = _copy(exported, tmp_path / "nested")
    (nested / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ExportError, match="damaged"):
        OnnxStream(nested, "encoder")
    nan = _copy(exported, tmp_path / "nan")
    np.save(nan / "speaker.npy", np.full(256, np.nan, np.float32))
    with pytest.raises(ExportError, match=r"speaker\.npy is damaged: not 256 finite values"):
        OnnxVoiceConversion(nan)
    with pytest.raises(ValueError, match="speaker must be 256 finite values"):
        OnnxVoiceConversion(exported, speaker=np.zeros(3))


def test_files_leading_out_of_the_folder_are_refused(exported, tmp_path):
    from rtcodec.onnx_stream import ExportError, OnnxStream

    outside = tmp_path / "outside.onnx"
    outside.write_bytes((exported / "decoder_edges.onnx").read_bytes())
    linked = _copy(exported, tmp_path / "linked")
    (linked / "decoder_edges.onnx").unlink()
    (linked / "decoder_edges.onnx").symlink_to(outside)
    with pytest.raises(ExportError, match="decoder_edges.onnx leads outside the export folder"):
        OnnxStream(linked, "decoder")


def test_onnxruntime_that_follows_external_data_out_of_the_folder_is_refused(monkeypatch):
    import onnxruntime

    from rtcodec.onnx_stream import require_onnxruntime

    monkeypatch.setattr(onnxruntime, "__version__", "1.23.2")
    with pytest.raises(ImportError, match=r"onnxruntime 1\.23\.2 reads weights from files outside"):
        require_onnxruntime()
    monkeypatch.setattr(onnxruntime, "__version__", "1.24.1")
    assert require_onnxruntime() is onnxruntime

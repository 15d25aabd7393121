"""The published usage code runs unchanged but for its import, and from_pretrained finds the hub cache."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from rtcodec.hub import REPO_ID

from .conftest import AUDIO, OFFICIAL_KEYS
from .helpers import write_checkpoint_dir

pytestmark = pytest.mark.skipif(
    not (OFFICIAL_KEYS.is_file() and AUDIO.is_dir()), reason="../shared (official keys, audio) not found"
)
SNIPPETS = Path(__file__).parent / "snippets"
README = Path(__file__).resolve().parents[1] / "README.md"
REVISION = "0" * 40  # of the snapshot in the test hub cache


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> Path:
    """A hub cache laid out as huggingface_hub lays it out, holding full-size random checkpoints."""
    cache = tmp_path_factory.mktemp("hub")
    repo = cache / ("models--" + REPO_ID.replace("/", "--"))
    write_checkpoint_dir(
        repo / "snapshots" / REVISION, names=("encoder", "decoder", "encoder_v2", "decoder_v2", "redecoder")
    )
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return cache


def hub_env(hub_cache: Path) -> dict:
    """The environment of a new user whose weights are in `hub_cache`, offline, with this environment's rtcodec."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


README_EXPORT = "rtcodec export --onnx graphs --voice examples/voice.wav"  # as the README's ONNX block says


@pytest.fixture(scope="module")
def readme_dir(hub_cache, tmp_path_factory) -> Path:
    """Where a new user runs the README's code: the repository root (examples/ there), the weights in the hub
    cache (random here) or in ./checkpoints, and the graphs the ONNX block's comment says how to make, made by
    that command once for the tests here (its stderr in `export.log`)."""
    folder = tmp_path_factory.mktemp("readme")
    (folder / "examples").symlink_to(README.parent / "examples")
    snapshot = hub_cache / ("models--" + REPO_ID.replace("/", "--")) / "snapshots" / REVISION
    (folder / "checkpoints").symlink_to(snapshot)
    env = hub_env(hub_cache)
    result = subprocess.run(README_EXPORT, shell=True, cwd=folder, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{README_EXPORT}\n{result.stderr}"
    (folder / "export.log").write_text(result.stderr)
    return folder


def _run(code_or_file, cwd: Path, cache: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PYTHONPATH": str(SNIPPETS)}
    command = [sys.executable, *([str(code_or_file)] if isinstance(code_or_file, Path) else ["-c", code_or_file])]
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _write_clip(path: Path, name: str, seconds: float) -> None:
    wav, rate = sf.read(AUDIO / name, dtype="float32")
    sf.write(path, wav[: int(seconds * rate)], rate)


def test_published_snippets_run_unchanged(hub_cache, tmp_path):
    _write_clip(tmp_path / "test.wav", "slt.wav", 1.3)
    _write_clip(tmp_path / "reference.wav", "rms.wav", 1.0)
    result = _run(SNIPPETS / "published_usage.py", tmp_path, hub_cache)
    assert result.returncode == 0, result.stderr
    assert "vq id shape: torch.Size([6, 1, 104])" in result.stdout
    assert "speaker embedding shape: torch.Size([1, 256])" in result.stdout
    recon, rate = sf.read(tmp_path / "recon.wav")
    assert rate == 16000 and recon.shape == (104 * 200,) and np.isfinite(recon).all() and np.abs(recon).max() > 0
    assert sf.read(tmp_path / "recon_a_to_b.wav")[0].shape == (104 * 200,)
    assert torch.load(tmp_path / "v2_vc.pt")["v2_vc"].shape == (1, 1, 104 * 200)


def test_from_pretrained_reads_the_hub_cache_offline(hub_cache, tmp_path):
    code = (
        "import rtcodec, torch\n"
        "m = rtcodec.from_pretrained('v2', redecoder=True)\n"
        "print(type(m.encoder).__name__, type(m.decoder).__name__, type(m.redecoder).__name__, m.decoder.training)\n"
    )
    result = _run(code, tmp_path, hub_cache)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["FACodecEncoderV2", "FACodecDecoderV2", "FACodecRedecoder", "False"]


def test_offline_without_cache_says_how_to_get_the_files(tmp_path):
    code = "import rtcodec\ntry:\n    rtcodec.from_pretrained()\nexcept FileNotFoundError as e:\n    print(e)\n"
    result = _run(code, tmp_path, tmp_path / "empty-cache")
    assert result.returncode == 0, result.stderr
    assert "(ns3_facodec_encoder.bin, ns3_facodec_decoder.bin) are not in the Hugging Face cache" in result.stdout
    assert "rtcodec download" in result.stdout and "checkpoint_dir" in result.stdout


def test_from_pretrained_checkpoint_dir(tmp_path):
    from rtcodec import CheckpointError, from_pretrained

    folder = write_checkpoint_dir(tmp_path / "ckpt")
    models = from_pretrained("v1", checkpoint_dir=folder, dtype=torch.bfloat16)
    assert models.redecoder is None and not models.decoder.training
    # Half precision for the synthesis only: the encoder and the quantizers decide the codes.
    assert models.decoder.dtype == torch.bfloat16 and models.encoder.dtype == torch.float32
    assert models.decoder.quantizer[0].layers[0]._codebook.weight.dtype == torch.float32
    with pytest.raises(FileNotFoundError, match="ns3_facodec_redecoder.bin"):
        from_pretrained("v1", checkpoint_dir=folder, redecoder=True)
    (folder / "ns3_facodec_decoder.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="ns3_facodec_decoder.bin is not a readable PyTorch state dict"):
        from_pretrained("v1", checkpoint_dir=folder)
    with pytest.raises(ValueError, match="version must be one of"):
        from_pretrained("v3", checkpoint_dir=folder)


def _blocks(language: str) -> list[str]:
    """The README's code blocks in `language`, in order."""
    blocks, current = [], None
    for line in README.read_text().splitlines():
        if current is None and line.strip() == f"```{language}":
            current = []
        elif current is not None and line.strip() == "```":
            blocks.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def test_readme_blocks_run_as_written(hub_cache, readme_dir):
    """Every Python block of the README, and the quick start's commands, as a new user copies them. The ONNX
    block runs where it is meant to, without torch (the next test)."""
    root, tmp_path = README.parent, readme_dir
    python = _blocks("python")
    assert len(python) >= 4 and any("onnx_stream" in code for code in python)
    env = hub_env(hub_cache)
    for code in python:
        if "onnx_stream" in code:
            continue
        result = _run(code, tmp_path, hub_cache)
        assert result.returncode == 0, f"{code}\n{result.stderr}"
    quick_start = next(b for b in _blocks("bash") if "examples/speech.wav speech.fac" in b)
    for line in quick_start.splitlines():
        command = line.split("#")[0].strip()
        result = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{command}\n{result.stderr}"
    assert sf.info(tmp_path / "converted.wav").frames == sf.info(root / "examples" / "speech.wav").frames


def test_readme_torch_free_install_runs_the_onnx_block(readme_dir, tmp_path):
    """The README's install without torch, as written, in a clone and a new venv; then its ONNX block there:
    the runner and the example need nothing more, and torch is never installed."""
    match = re.search(r"Without torch, from a clone: `([^`]+)`", README.read_text())
    assert match, "the README's torch-free install line"
    clone = tmp_path / "clone"
    shutil.copytree(README.parent, clone, ignore=shutil.ignore_patterns(".venv", ".git", "*.egg-info", "build"))
    subprocess.run([sys.executable, "-m", "venv", tmp_path / "venv"], check=True, timeout=120)
    venv = tmp_path / "venv" / "bin"
    env = {**os.environ, "PATH": f"{venv}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv.parent)}
    install = subprocess.run(match[1], shell=True, cwd=clone, env=env, capture_output=True, text=True, timeout=900)
    offline = install.returncode and "No matching distribution" in install.stderr
    if offline:  # the block still runs, here
        venv, env = Path(sys.executable).parent, os.environ
    else:
        assert install.returncode == 0, f"{match[1]}\n{install.stderr}"
        assert subprocess.run([venv / "python", "-c", "import torch"], capture_output=True).returncode != 0
    code = next(code for code in _blocks("python") if "onnx_stream" in code)
    check = '\nimport sys\nassert "torch" not in sys.modules, "torch was imported"\n'
    result = subprocess.run(
        [venv / "python", "-c", code + check], cwd=readme_dir, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{code}\n{result.stderr}"
    assert sf.info(readme_dir / "converted_onnx.wav").frames == sf.info(README.parent / "examples/speech.wav").frames
    if offline:
        pytest.skip(f"the package index cannot be reached (the block ran here): {install.stderr.strip()[-300:]}")


def test_readme_export_writes_every_graph_and_the_runner_converts_as_torch(readme_dir):
    """`rtcodec export --onnx graphs --voice examples/voice.wav` (run once for this module, readme_dir): every
    graph with progress, no staging folder left, a plain mkdir's mode; the runner converts as the torch pipeline."""
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from rtcodec import audio
    from rtcodec.hub import from_pretrained
    from rtcodec.onnx_stream import OnnxVoiceConversion
    from rtcodec.pipelines import VoiceConversion

    target, err = readme_dir / "graphs", (readme_dir / "export.log").read_text()
    assert "[8/8]" in err, err
    assert not list(readme_dir.glob(".graphs.*"))  # no staging folder left behind
    assert target.stat().st_mode & 0o777 == 0o777 & ~audio.umask()  # a plain mkdir's mode, not mkdtemp's 0700
    models = from_pretrained("v1", checkpoint_dir=readme_dir / "checkpoints")
    source = audio.read(AUDIO / "slt.wav")[..., 8000:12000]
    pipeline = VoiceConversion(models.encoder, models.decoder, audio.read(readme_dir / "examples" / "voice.wav"))
    with torch.inference_mode():
        want = torch.cat([pipeline.push(source), pipeline.flush()], dim=2)
    runner = OnnxVoiceConversion(target)
    got = np.concatenate([runner.push(source.numpy()), runner.flush()], axis=2)
    assert got.shape == tuple(want.shape) == (1, 1, 4000)
    assert np.abs(got - want.numpy()).max() < 1e-4 * max(1.0, want.abs().max())

"""Voice uploads, decoded in a process of their own at the lowest CPU priority.

An upload is the caller's file: it is parsed, decoded, resampled and embedded away from the server's process, so
its work never takes the GIL from the event loop or the ticks (a thread at low priority did: holding the GIL when
the scheduler preempted it, it stalled the ticks for seconds), and the scheduler gives it only the CPU the ticks
leave. The worker holds its own CPU copy of the models; a worker that dies is replaced for the next upload.
"""

from __future__ import annotations

import asyncio
import copy
import io
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import soundfile as sf
import torch

from .. import audio
from ..hub import Pretrained
from ..pipelines import check_reference, speaker_embedding
from . import protocol

_MODELS: Pretrained | None = None  # in the worker


def _start_worker(models: bytes) -> None:
    global _MODELS
    os.nice(19)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    _MODELS = torch.load(io.BytesIO(models), weights_only=False)  # the server's own models, serialized below


def _exit_with_parent(parent: int) -> None:
    """End this worker once the server is gone (killed, it cannot shut its pool down)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def embed(data: bytes, models: Pretrained) -> torch.Tensor:
    """The speaker embedding `[256]` of a REFERENCE message; `ProtocolError` saying what is wrong with it."""
    kind, _, payload = protocol.parse(data)
    if kind != protocol.REFERENCE:
        raise protocol.ProtocolError("with voice upload, the message after the hello is the REFERENCE clip")
    if len(payload) > protocol.MAX_REFERENCE_BYTES:
        raise protocol.ProtocolError(
            f"the reference clip is {len(payload)} bytes; at most {protocol.MAX_REFERENCE_BYTES}", protocol.TOO_BIG
        )
    try:
        with sf.SoundFile(io.BytesIO(payload)) as file:
            protocol.check_reference_header(file.frames, file.samplerate, file.channels)
            samples, rate = file.read(dtype="float32", always_2d=True), file.samplerate
        wav = audio.to_model_rate(samples, rate, "the reference clip", notice=lambda message: None)
    except audio.AudioError as err:
        raise protocol.ProtocolError(f"the reference clip is not usable audio: {err}") from None
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:  # libsndfile's own words, not our buffer's repr
        reason = getattr(err, "error_string", "") or "not a format soundfile reads"
        raise protocol.ProtocolError(f"the reference clip is not usable audio: {reason}") from None
    try:
        check_reference(wav)
    except ValueError as err:
        raise protocol.ProtocolError(str(err)) from None
    embedding = speaker_embedding(models.encoder, models.decoder, wav)[0].float()
    if not torch.isfinite(embedding).all():  # e.g. samples of 1e30: finite, but far beyond any audio
        raise protocol.ProtocolError("the reference clip gives no usable voice: its samples are far out of range")
    return embedding


def _embed_in_worker(data: bytes) -> torch.Tensor:
    return embed(data, _MODELS)


class UploadWorker:
    """One worker process; `await embed(data)` decodes an upload there."""

    def __init__(self, models: Pretrained) -> None:
        # As bytes: torch would hand tensors to the worker as shared-memory descriptors, one per tensor.
        buffer = io.BytesIO()
        torch.save(Pretrained(*(_cpu_copy(m) for m in (models.encoder, models.decoder))), buffer)
        self.models = buffer.getvalue()
        self.pool: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self.pool is None:  # spawned, not forked: the server's threads (uvicorn, torch) do not fork well
            context = multiprocessing.get_context("spawn")
            self.pool = ProcessPoolExecutor(1, context, initializer=_start_worker, initargs=(self.models,))
        return self.pool

    def start(self) -> None:
        """Start the worker now (at the server's start): starting it hands it the models through a pipe, which
        blocks the caller for a second or two, too long for the event loop while calls are served."""
        self._pool().submit(os.getpid).result()

    async def embed(self, data: bytes) -> torch.Tensor:
        if self.pool is None:  # not started, or its worker died: start one off the event loop
            await asyncio.to_thread(self.start)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.pool, _embed_in_worker, data)
        except BrokenProcessPool:  # the worker died (killed, out of memory): a new one for the next upload
            self.pool = None
            raise protocol.ProtocolError(
                "the reference clip could not be decoded: try again", protocol.TRY_LATER
            ) from None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


def _cpu_copy(model: torch.nn.Module) -> torch.nn.Module:
    return model if next(model.parameters()).device.type == "cpu" else copy.deepcopy(model).cpu()

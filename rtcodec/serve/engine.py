"""The server's engine: a `CallerScheduler` per latency preset, ticking in real time on a worker thread.

A tick runs when every caller of its scheduler has sent its next block, or when its deadline (one and a half
blocks of audio after the previous tick) passes: a late caller gets silence, the others are not held back.
Ticks run on a thread of their own, so the event loop keeps taking messages meanwhile; the scheduler is only
touched under its lock.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from ..config import SAMPLE_RATE
from ..scheduler import Caller, CallerScheduler

COMPUTE_WINDOW = 2000  # ticks kept for the compute percentiles
JITTER_BLOCKS = 0.5
# Every tick on one thread: torch's OpenMP workers belong to the thread that calls in, so ticks spread over a pool
# of threads would each bring their own team of workers (measured: 72 ms a tick instead of 27 on 2 cores).
TICK_THREAD = ThreadPoolExecutor(
    max_workers=1, thread_name_prefix="rtcodec-tick"
)  # how late past its time a caller's block may come before silence stands in


@dataclass(eq=False)
class Session:
    """One connection's link to its scheduler: blocks in, output messages out."""

    caller: Caller
    outbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    pending: deque = field(default_factory=deque)  # (seq, block) received, not yet handed to the scheduler
    output_seq: int = 0
    first_block: float | None = None  # when its first block came (monotonic clock)
    received: int = 0  # blocks received


class Engine:
    """Callers of one latency preset on one batched stream."""

    def __init__(self, scheduler: CallerScheduler, max_pending_blocks: int) -> None:
        self.scheduler, self.max_pending_blocks = scheduler, max_pending_blocks
        self.lock = threading.Lock()
        self.sessions: dict[Caller, Session] = {}
        self.compute_s: deque[float] = deque(maxlen=COMPUTE_WINDOW)
        self.ticks = self.refused = 0
        self.wake = asyncio.Event()
        self.period = scheduler.block / SAMPLE_RATE

    async def join(self, speaker: torch.Tensor, mode: str) -> Session:
        """SlotsFullError where every slot is taken."""
        with self.lock:
            session = Session(self.scheduler.join(speaker, mode))
            self.sessions[session.caller] = session
        self.wake.set()
        return session

    def leave(self, session: Session) -> None:
        with self.lock:
            self.sessions.pop(session.caller, None)
            self.scheduler.leave(session.caller)

    def put(self, session: Session, seq: int, block: torch.Tensor) -> bool:
        """False where the caller sends faster than real time: more than `max_pending_blocks` beyond what the
        wall clock allows since its first block. Where the server falls behind instead, the oldest waiting block
        is dropped (and counted), so a caller's queue stays bounded either way."""
        now = time.monotonic()
        if session.first_block is None:
            session.first_block = now
        session.received += 1
        if session.received > (now - session.first_block) / self.period + self.max_pending_blocks:
            return False
        if len(session.pending) >= self.max_pending_blocks:
            session.pending.popleft()
            session.caller.dropped_blocks += 1
        session.pending.append((seq, block))
        if self._all_ready():
            self.wake.set()
        return True

    def _all_ready(self) -> bool:
        """Every caller that has started sending has its next block here: a tick now waits for nobody."""
        return all(s.pending for s in list(self.sessions.values()) if s.first_block is not None)

    async def run(self) -> None:
        """Tick forever (cancel to stop)."""
        deadline = time.monotonic()
        while True:
            if not any(s.first_block is not None for s in list(self.sessions.values())):
                self.wake.clear()  # nobody sends yet: sleep until a first block comes
                await self.wake.wait()
                deadline = time.monotonic() + self.period
                continue
            self.wake.clear()
            if not self._all_ready():
                try:
                    await asyncio.wait_for(self.wake.wait(), max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    pass
            started = time.monotonic()
            outputs = await asyncio.get_running_loop().run_in_executor(TICK_THREAD, self._tick)
            for session, message in outputs:
                session.outbox.put_nowait(message)
            # The next tick waits for every caller's next block, but for no one more than half a block late.
            deadline = started + self.period * (1 + JITTER_BLOCKS)

    def _tick(self) -> list[tuple[Session, tuple]]:
        with self.lock:
            for session in self.sessions.values():
                if session.pending:
                    seq, block = session.pending.popleft()
                    self.scheduler.put(session.caller, block, seq)
            start = time.perf_counter()
            outputs = self.scheduler.tick()
            self.compute_s.append(time.perf_counter() - start)
            self.ticks += 1
            result = []
            for caller, audio in outputs.items():
                session = self.sessions[caller]
                result.append((session, (session.output_seq, caller.consumed, audio)))
                session.output_seq += 1
            return result

    def compute_ms(self) -> tuple[float, float]:
        """p50 and p99 of the recent ticks' compute, in milliseconds."""
        times = sorted(self.compute_s)
        if not times:
            return 0.0, 0.0
        return 1000 * statistics.median(times), 1000 * times[min(len(times) - 1, int(0.99 * len(times)))]

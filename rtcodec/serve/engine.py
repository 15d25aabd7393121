"""The server's engine: a `CallerScheduler` per latency preset, ticking on a fixed real-time clock.

Tick k is due at `start + (k + JITTER_BLOCKS) * period` (a block of audio a period; `start` when the first block
came). It runs as soon as every sending caller's next block is here, and at the latest when it is due: a caller
whose block has not come by then gets silence (counted late; its later blocks wait one tick longer), and the
schedule never moves with when ticks ran, so no caller, stalled, slow or early, delays the others' ticks. A
caller that sent less than half of its blocks over the last `STALL_SECONDS` loses its slot with a reason. Ticks
run on a thread of their own, so the event loop keeps taking messages meanwhile; the scheduler is only touched
under its lock.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from ..config import SAMPLE_RATE
from ..scheduler import Caller, CallerScheduler
from . import protocol

COMPUTE_WINDOW = 2000  # ticks kept for the compute percentiles
STALL_SECONDS = 3.0  # the window over which a caller must send at least half of its blocks
STALL_FRACTION = 0.5
MAX_BEHIND_TICKS = 8  # a server this far behind its clock starts the clock again instead of ticking in a burst
JITTER_BLOCKS = 0.5  # how late past its time a block may come before silence stands in
OVERLOAD_SECONDS = 5.0  # the recent past that says whether the server keeps up
# Every tick on one thread: torch's OpenMP workers belong to the thread that calls in, so ticks spread over a pool
# of threads would each bring their own team of workers (measured: 72 ms a tick instead of 27 on 2 cores).
TICK_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtcodec-tick")


@dataclass(eq=False)
class Session:
    """One connection's link to its scheduler: blocks in, output messages out. The outbox holds AUDIO message
    fields, or a `ProtocolError` where the engine ends the call."""

    caller: Caller
    window: int  # ticks in the stall window
    outbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    pending: deque = field(default_factory=deque)  # (seq, block) received, not yet handed to the scheduler
    output_seq: int = 0
    first_block: float | None = None  # when its first block came (the engine's clock)
    received: int = 0  # blocks received
    recent: deque = field(init=False)  # per tick of the stall window: whether its block had come

    def __post_init__(self) -> None:
        self.recent = deque(maxlen=self.window)

    def stalled(self) -> bool:
        return len(self.recent) == self.window and sum(self.recent) < STALL_FRACTION * self.window

    def delay_blocks(self) -> int:
        """The caller's blocks waiting for their tick: delay the server adds beyond the algorithm's."""
        return len(self.pending) + len(self.caller.inbox)


class Engine:
    """Callers of one latency preset on one batched stream. `clock` and `sleep` are the real time's unless a test
    gives its own."""

    def __init__(
        self,
        scheduler: CallerScheduler,
        max_pending_blocks: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable] = asyncio.sleep,
    ) -> None:
        self.scheduler, self.max_pending_blocks = scheduler, max_pending_blocks
        self.clock, self.sleep = clock, sleep
        self.lock = threading.Lock()
        self.sessions: dict[Caller, Session] = {}
        self.compute_s: deque[float] = deque(maxlen=COMPUTE_WINDOW)
        self.ticks = self.restarts = self.evicted = 0
        self.last_restart = -math.inf  # when the clock last restarted (the engine's clock)
        self.wake = asyncio.Event()
        self.period = scheduler.block / SAMPLE_RATE
        self.window = max(1, round(STALL_SECONDS / self.period))

    async def join(self, speaker: torch.Tensor, mode: str) -> Session:
        """SlotsFullError where every slot is taken."""
        with self.lock:
            session = Session(self.scheduler.join(speaker, mode), self.window)
            self.sessions[session.caller] = session
        return session

    def leave(self, session: Session) -> None:
        with self.lock:
            self.sessions.pop(session.caller, None)
            self.scheduler.leave(session.caller)

    def put(self, session: Session, seq: int, block: torch.Tensor) -> bool:
        """False where the caller sends faster than real time: more than `max_pending_blocks` beyond what the
        clock allows since its first block. Where the server falls behind instead, the oldest waiting block is
        dropped (and counted), so a caller's queue stays bounded either way."""
        now = self.clock()
        if session.first_block is None:
            session.first_block = now
            self.wake.set()
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

    def _sending(self) -> bool:
        return any(s.first_block is not None for s in list(self.sessions.values()))

    def _all_ready(self) -> bool:
        """Every caller that has started sending has its next block here: the tick need wait for nobody."""
        return all(s.pending for s in list(self.sessions.values()) if s.first_block is not None)

    async def _until(self, due: float) -> None:
        """Until every sending caller's block is here, or the clock reaches `due`."""
        self.wake.clear()
        if self._all_ready():
            return
        waits = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(self.sleep(due - self.clock()))]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def run(self) -> None:
        """Tick forever on the clock (cancel to stop); asleep while no caller sends."""
        loop = asyncio.get_running_loop()
        start, k = self.clock(), 0
        while True:
            if not self._sending():
                self.wake.clear()
                await self.wake.wait()
                start, k = self.clock(), 0  # the first block is here: the schedule starts now
            due = start + (k + JITTER_BLOCKS) * self.period
            if due > self.clock():
                await self._until(due)
            outputs, stalled = await loop.run_in_executor(TICK_THREAD, self._tick)
            for session, message in outputs:
                session.outbox.put_nowait(message)
            self.ticks += 1  # counted once its outputs are out, so whoever sees the count sees them too
            for session in stalled:
                self.evicted += 1
                self.leave(session)
                seconds = f"{STALL_SECONDS:g}"
                reason = f"less than half of the audio of the last {seconds} s came: the call is too slow to go on"
                session.outbox.put_nowait(protocol.ProtocolError(reason))
            k += 1
            if self.clock() - (start + k * self.period) > MAX_BEHIND_TICKS * self.period:
                self.restarts += 1  # the machine cannot keep up: start the clock again rather than burst
                start, k = self.clock(), 0
                self.last_restart = start

    def _tick(self) -> tuple[list[tuple[Session, tuple]], list[Session]]:
        """One tick: every sending caller's next block in (silence where it has none), its output out. Returns the
        outputs and the callers that stalled."""
        with self.lock:
            for session in self.sessions.values():
                if session.first_block is None:
                    continue
                session.recent.append(bool(session.pending))
                if session.pending:
                    seq, block = session.pending.popleft()
                    self.scheduler.put(session.caller, block, seq)
            start = self.clock()
            outputs = self.scheduler.tick()
            self.compute_s.append(self.clock() - start)
            result = []
            for caller, audio in outputs.items():
                session = self.sessions[caller]
                result.append((session, (session.output_seq, caller.consumed, audio)))
                session.output_seq += 1
            return result, [s for s in self.sessions.values() if s.stalled()]

    def overloaded(self) -> bool:
        """Whether the ticks have not kept up over the last `OVERLOAD_SECONDS`: the clock had to restart, or the
        ticks took longer than the audio they carry (their median)."""
        if self.clock() - self.last_restart < OVERLOAD_SECONDS:
            return True
        recent = list(self.compute_s)[-max(1, round(OVERLOAD_SECONDS / self.period)) :]
        return bool(recent) and self._sending() and statistics.median(recent) > self.period

    def compute_ms(self) -> tuple[float, float]:
        """p50 and p99 of the recent ticks' compute, in milliseconds."""
        times = sorted(self.compute_s)
        if not times:
            return 0.0, 0.0
        return 1000 * statistics.median(times), 1000 * times[min(len(times) - 1, int(0.99 * len(times)))]

"""uvicorn's HTTP protocol with the two bounds it lacks: a deadline on request headers and a cap on connections.

uvicorn starts no timer when a connection opens, so a client that sends its headers a byte at a time (slowloris)
holds a connection, and a file descriptor, for as long as it likes; enough of them exhaust the process's
descriptors, and asyncio then logs a traceback for every refused accept. Here every request must complete its
headers within `header_timeout` seconds of the connection opening (or of the previous response), and a
connection beyond `max_connections` (WebSockets included) is closed as soon as it is accepted.
"""

from __future__ import annotations

import asyncio
import resource

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .protocol import HEADER_TIMEOUT_S


def max_connections() -> int:
    """Half the process's file descriptors, at most 1024: the rest stay for the models, logs and the accept."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(4, min(1024, (soft if soft != resource.RLIM_INFINITY else 2048) // 2))


def guarded_protocol(header_timeout: float = HEADER_TIMEOUT_S, connections: int | None = None) -> type:
    """An HTTP protocol class for `uvicorn.run(..., http=...)` with these bounds."""
    cap = connections or max_connections()

    class GuardedH11Protocol(H11Protocol):
        refused = timed_out = 0  # counted over the process, for tests and logs

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > cap:
                type(self).refused += 1
                transport.close()
                return
            self._deadline: asyncio.TimerHandle | None = None
            self._arm()

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(header_timeout, self._headers_late)

        def _headers_late(self) -> None:
            self._deadline = None
            # Only while the client still owes a request's headers: a WebSocket it became belongs to another
            # protocol, and a request being answered has its headers.
            if self.transport.get_protocol() is self and self.conn.their_state is h11.IDLE:
                type(self).timed_out += 1
                self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's headers, on a kept-alive connection

        def connection_lost(self, exc: Exception | None) -> None:
            deadline = getattr(self, "_deadline", None)
            if deadline is not None:
                deadline.cancel()
            super().connection_lost(exc)

    return GuardedH11Protocol

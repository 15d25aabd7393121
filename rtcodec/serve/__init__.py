"""`rtcodec serve`: many callers over one batched stream, a page to use it, and its WebSocket protocol.

Needs the `serve` extra (`pip install 'rtcodec[serve]'`); `import rtcodec` does not import this package. The app
(Starlette) is imported when first named, so the command line, which reads this package's constants, runs without
the extra.
"""

from ..backends import default_threads

__all__ = ["ServeOptions", "create_app", "default_threads"]


def __getattr__(name: str):
    if name in ("ServeOptions", "create_app"):
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

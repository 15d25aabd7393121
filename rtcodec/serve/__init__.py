"""`rtcodec serve`: many callers over one batched stream, a page to use it, and its WebSocket protocol.

Needs the `serve` extra (`pip install 'rtcodec[serve]'`); `import rtcodec` does not import this package.
"""

from ..backends import default_threads
from .app import ServeOptions, create_app

__all__ = ["ServeOptions", "create_app", "default_threads"]

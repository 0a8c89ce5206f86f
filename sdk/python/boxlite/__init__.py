"""boxlite: run untrusted (AI-written) code in a micro-VM, from Python.

    async with boxlite.CodeBox() as box:
        result = await box.run("print(2 + 2)")

SimpleBox runs commands; CodeBox keeps a Python interpreter whose state
lasts across run() calls. boxlite.sync has the same classes without asyncio.
boxlite.connect(url, token) gives the same classes on a `boxlite serve`.
"""

from .errors import (AgentError, BackendError, BoxFileError, BoxliteError, CancelledError, DiskFullError,
                     HostError, ImageNotFoundError, InvalidArgumentError, NotFoundError, OutOfMemoryError,
                     ProcessLimitError, ProtocolError, RegistryError, ResourceError, StateError, TimeoutError, UnsupportedError,
                     RemoteError, AuthenticationError, QuotaExceededError)
from ._box import ExecResult, OutputChunk, SimpleBox
from ._codebox import CodeBox
from ._remote import Remote, connect

__version__ = "0.1.0"

__all__ = [
    "SimpleBox", "CodeBox", "ExecResult", "OutputChunk",
    "BoxliteError", "TimeoutError", "ResourceError", "OutOfMemoryError", "ProcessLimitError", "DiskFullError",
    "NotFoundError", "ImageNotFoundError", "InvalidArgumentError", "BackendError", "AgentError", "ProtocolError",
    "HostError", "RegistryError", "StateError", "CancelledError", "UnsupportedError", "BoxFileError",
    "RemoteError", "AuthenticationError", "QuotaExceededError", "connect", "Remote",
]

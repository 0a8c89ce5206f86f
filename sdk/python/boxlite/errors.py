"""The exceptions of the boxlite SDK.

BoxliteError is the base of everything the SDK raises on purpose. The kinds
follow libboxlite's bl_code (common/boxlite_error.h); each carries the library's
message and its `code` name ("BL_ETIMEOUT", ...).
"""

import builtins

BL_OK = 0
BL_EINVAL = 1
BL_ETIMEOUT = 2
BL_EOOM = 3
BL_ENOTFOUND = 4
BL_EBACKEND = 5
BL_EAGENTLOST = 6
BL_ESYSTEM = 7
BL_EPROTO = 8
BL_EEXIST = 9
BL_ESTATE = 10
BL_ECANCELED = 11
BL_EUNSUPPORTED = 12
BL_EAUTH = 13
BL_ENETWORK = 14

_NAMES = {
    0: "BL_OK", 1: "BL_EINVAL", 2: "BL_ETIMEOUT", 3: "BL_EOOM", 4: "BL_ENOTFOUND",
    5: "BL_EBACKEND", 6: "BL_EAGENTLOST", 7: "BL_ESYSTEM", 8: "BL_EPROTO",
    9: "BL_EEXIST", 10: "BL_ESTATE", 11: "BL_ECANCELED", 12: "BL_EUNSUPPORTED",
    13: "BL_EAUTH", 14: "BL_ENETWORK",
}


class BoxliteError(Exception):
    """Base of every boxlite error. `code` is the library's bl_code name (or
    None for errors found by the SDK itself), `sys_errno` the host errno when
    a system call failed, `result` the ExecResult when a process ran."""

    code = None

    def __init__(self, message="", *, code=None, sys_errno=0, result=None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.sys_errno = sys_errno
        self.result = result


class InvalidArgumentError(BoxliteError, ValueError):
    """A bad option or argument (negative memory, cpus=0, bad env, ...)."""
    code = "BL_EINVAL"


class TimeoutError(BoxliteError, builtins.TimeoutError):
    """The box's deadline (timeout_seconds: the VM is destroyed) or one call's
    timeout (the process or interpreter is killed; the box stays usable)."""
    code = "BL_ETIMEOUT"

    def __init__(self, message="", *, scope="call", **kw):
        super().__init__(message, **kw)
        self.scope = scope  # "box" or "call"


class ResourceError(BoxliteError):
    """A resource limit of the box was hit. `kind` says which: "memory",
    "pids" (too many processes) or "disk" (writable layer full)."""
    kind = None

    def __init__(self, message="", *, kind=None, **kw):
        super().__init__(message, **kw)
        if kind is not None:
            self.kind = kind


class OutOfMemoryError(ResourceError):
    kind = "memory"
    code = "BL_EOOM"


class ProcessLimitError(ResourceError):
    kind = "pids"


class DiskFullError(ResourceError):
    kind = "disk"


class NotFoundError(BoxliteError):
    code = "BL_ENOTFOUND"


class ImageNotFoundError(NotFoundError):
    pass


class BackendError(BoxliteError):
    """libvirt, QEMU or virtiofsd failed (the VM could not start or died)."""
    code = "BL_EBACKEND"


class AgentError(BoxliteError):
    """The guest agent went away or broke its protocol."""
    code = "BL_EAGENTLOST"


class ProtocolError(BoxliteError):
    """Malformed data from the guest (or an image)."""
    code = "BL_EPROTO"


class HostError(BoxliteError):
    """A host system call failed (sys_errno says which)."""
    code = "BL_ESYSTEM"


class StateError(BoxliteError):
    """Not valid in the box's current state (closed, already exists, ...)."""
    code = "BL_ESTATE"


class CancelledError(BoxliteError):
    """The box was cancelled (closed while a call was in flight)."""
    code = "BL_ECANCELED"


class UnsupportedError(BoxliteError):
    code = "BL_EUNSUPPORTED"


class RegistryError(BoxliteError):
    """Pulling an image failed: the registry refused the credentials
    (BL_EAUTH) or could not be reached (BL_ENETWORK)."""


class BoxFileError(BoxliteError, OSError):
    """A file operation inside the box failed (copy_in, read_file, ...)."""


class RemoteError(BoxliteError):
    """A boxlite server (boxlite.connect) refused a request or could not be
    reached. `status` is the HTTP status (0 when none came back), `code` the
    server's error code."""

    def __init__(self, message="", *, status=0, **kw):
        super().__init__(message, **kw)
        self.status = status


class AuthenticationError(RemoteError, PermissionError):
    """The server did not accept the token (HTTP 401)."""


class QuotaExceededError(ResourceError):
    """The tenant's quota (sandboxes, memory or CPUs) on the server is used up."""
    kind = "quota"


_BY_CODE = {
    BL_EINVAL: InvalidArgumentError,
    BL_ETIMEOUT: TimeoutError,
    BL_EOOM: OutOfMemoryError,
    BL_ENOTFOUND: NotFoundError,
    BL_EBACKEND: BackendError,
    BL_EAGENTLOST: AgentError,
    BL_ESYSTEM: HostError,
    BL_EPROTO: ProtocolError,
    BL_EEXIST: StateError,
    BL_ESTATE: StateError,
    BL_ECANCELED: CancelledError,
    BL_EUNSUPPORTED: UnsupportedError,
    BL_EAUTH: RegistryError,
    BL_ENETWORK: RegistryError,
}


def from_code(code, message, sys_errno=0, cls=None):
    if cls is None:
        cls = _BY_CODE.get(code, BoxliteError)
    e = cls(message, code=_NAMES.get(code, "BL_E%d" % code), sys_errno=sys_errno)
    if isinstance(e, TimeoutError):
        e.scope = "box"
    return e

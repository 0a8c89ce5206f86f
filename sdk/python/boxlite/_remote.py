"""Remote mode: the same SimpleBox and CodeBox over a `boxlite serve` HTTP API.

    remote = boxlite.connect("http://127.0.0.1:8100", token)
    async with remote.CodeBox() as box:
        print((await box.run("print(6 * 7)")).stdout)
    with remote.sync.SimpleBox() as box:
        box.exec("echo", "hi")

The classes are the local ones with a different engine underneath: a box is a
sandbox on the server (POST /v1/sandboxes), a process is a streaming exec
(server-sent events, stdin through .../execs/ID/stdin, signals through
.../signal), so exec, stream, timeouts, CodeBox's interpreter and the file
helpers behave as they do locally. Standard library only (http.client).
"""

import base64
import http.client
import json
import queue
import ssl
import threading
import urllib.parse
import weakref

from . import errors
from ._box import SimpleBox, _close_quietly, _finalize, _live, in_thread
from ._codebox import CodeBox

_CODES = {v: k for k, v in errors._NAMES.items()}
STREAM_IDLE = 90.0  # the server sends a keepalive every 15 s
STDIN_PIECE = 64 << 10  # a body limit smaller than this breaks remote stdin (413)


def _error(status, body, what):
    """The server's {"error": {"code", "message"}} as the SDK's exception."""
    code, msg = None, None
    try:
        e = json.loads(body.decode("utf-8"))["error"]
        code, msg = str(e.get("code")), str(e.get("message"))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        msg = body[:200].decode("utf-8", "replace") or "HTTP %d" % status
    text = "%s: %s" % (what, msg) if what else msg
    if status == 401:
        return errors.AuthenticationError(text, status=status, code=code)
    if code == "quota_exceeded":
        return errors.QuotaExceededError(text, code=code)
    if code == "image_not_found":
        return errors.ImageNotFoundError(text, code="BL_ENOTFOUND")
    if code in _CODES:
        e = errors.from_code(_CODES[code], text)
        if isinstance(e, errors.TimeoutError):
            e.scope = "box"
        return e
    if code in ("bad_request", "payload_too_large"):
        return errors.InvalidArgumentError(text, code=code)
    if code == "not_found" or status == 404:
        return errors.NotFoundError(text, code=code)
    return errors.RemoteError(text, status=status, code=code)


class Remote:
    """A connection to a boxlite server: .SimpleBox, .CodeBox (asyncio) and
    .sync.SimpleBox, .sync.CodeBox, bound to this server and token."""

    def __init__(self, url, token, *, cafile=None, timeout=600.0):
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise errors.InvalidArgumentError("url must be http(s)://HOST[:PORT], not %r" % (url,))
        if not isinstance(token, str) or not token:
            raise errors.InvalidArgumentError("token must be a non-empty string")
        self.url = url.rstrip("/")
        self._https = u.scheme == "https"
        self._host = u.hostname
        self._port = u.port or (443 if self._https else 80)
        self._prefix = u.path.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._ssl = ssl.create_default_context(cafile=cafile) if self._https else None
        remote = self

        class _Simple(_RemoteBox, SimpleBox):
            __doc__ = SimpleBox.__doc__
            _remote = remote

        class _Code(_RemoteBox, CodeBox):
            __doc__ = CodeBox.__doc__
            _remote = remote

        _Simple.__name__ = _Simple.__qualname__ = "SimpleBox"
        _Code.__name__ = _Code.__qualname__ = "CodeBox"
        self.SimpleBox, self.CodeBox = _Simple, _Code
        from . import sync

        class _Sync:
            SimpleBox = type("SimpleBox", (sync.SimpleBox,), {"_async_cls": _Simple})
            CodeBox = type("CodeBox", (sync.CodeBox,), {"_async_cls": _Code})
        self.sync = _Sync

    def __repr__(self):
        return "boxlite.Remote(%r)" % self.url

    # ---------------------------------------------------------------- HTTP

    def _conn(self, timeout):
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self._ssl)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _send(self, method, path, body=None, ctype="application/json", timeout=None, accept=None):
        conn = self._conn(self._timeout if timeout is None else timeout)
        headers = {"Authorization": "Bearer " + self._token}
        if body is not None:
            headers["Content-Type"] = ctype
        if accept:
            headers["Accept"] = accept
        try:
            conn.request(method, self._prefix + path, body=body, headers=headers)
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise errors.RemoteError("%s %s: cannot reach %s: %s" % (method, path, self.url, e))

    def request(self, method, path, body=None, what=None, raw=False, ctype="application/json"):
        """One request; returns the decoded JSON (or bytes with raw=True)."""
        if body is not None and not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body).encode()
        conn, resp = self._send(method, path, body, ctype)
        try:
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise errors.RemoteError("%s %s: connection lost: %s" % (method, path, e))
        finally:
            conn.close()
        if resp.status >= 400:
            raise _error(resp.status, data, what)
        if raw:
            return data
        return json.loads(data.decode("utf-8")) if data.strip() else {}

    # ---------------------------------------------------------------- API

    def health(self):
        return self.request("GET", "/health")

    def sandboxes(self):
        """The tenant's sandboxes on the server (dicts)."""
        return self.request("GET", "/v1/sandboxes")["sandboxes"]

    def images(self):
        return self.request("GET", "/v1/images")["images"]

    def pull(self, ref):
        return self.request("POST", "/v1/images/pull", {"ref": ref}, what="pull %s" % ref)

    def metrics(self):
        return self.request("GET", "/metrics", raw=True).decode()


def connect(url, token, *, cafile=None, timeout=600.0):
    """A Remote for the server at url (http:// or https://; cafile: the CA of
    a server with its own certificate) with a tenant's token."""
    return Remote(url, token, cafile=cafile, timeout=timeout)


class _RemoteBox:
    """Mixed in before SimpleBox/CodeBox: the box lives on the server."""

    _remote = None

    async def start(self):
        if self._started:
            return self
        if self._sb is not None:
            raise errors.StateError("the box is already starting or closed")
        for k in ("rootfs", "state_dir", "image_store", "network"):
            if self._opts.get(k):
                raise errors.InvalidArgumentError("%s is not available on a remote box" % k)
        sb = _Sandbox(self._remote)
        self._sb = sb
        self._finalizer = weakref.finalize(self, _finalize, sb, self._kind)
        fut = in_thread(sb.create, dict(self._opts))
        try:
            await fut
        except BaseException:
            await _close_quietly(sb)
            raise
        self._started = True
        _live.add(self)
        await self._after_start()
        return self

    async def write_file(self, path, data, mode=0o644):
        from . import _files
        if mode != 0o644:
            return await _files.write_file(self, path, data, mode)
        path = _files._box_path(path)
        if isinstance(data, str):
            data = data.encode()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise errors.InvalidArgumentError("data must be bytes or str")
        sb = self._require()
        await in_thread(sb.put_file, path, bytes(data))

    async def read_file(self, path, max_bytes=64 << 20):
        from . import _files
        path = _files._box_path(path)
        sb = self._require()
        data = await in_thread(sb.get_file, path)
        if len(data) > max_bytes:
            raise errors.BoxFileError("read_file %s: over %d bytes" % (path, max_bytes))
        return data


class _Sandbox:
    """The remote twin of _core.Sandbox (blocking calls, run in threads)."""

    def __init__(self, remote):
        self.r = remote
        self.id = None
        self.dir = None
        self._closed = False
        self._lock = threading.Lock()
        self._procs = weakref.WeakSet()

    @property
    def closed(self):
        return self._closed

    def _path(self, tail=""):
        return "/v1/sandboxes/%s%s" % (urllib.parse.quote(self.id, safe=""), tail)

    def create(self, o):
        body = {"image": o.get("image"), "memory_mb": o.get("memory_mib"), "cpus": o.get("vcpus"),
                "disk_mb": o.get("disk_mib"), "pids_max": o.get("pids_max"),
                "timeout_seconds": o.get("timeout_sec"), "env": o.get("env"), "cwd": o.get("cwd"),
                "user": o.get("user"), "name": o.get("id")}
        body = {k: v for k, v in body.items() if v is not None}
        res = self.r.request("POST", "/v1/sandboxes", body, what="create box")
        with self._lock:
            self.id = res["id"]
            closed = self._closed
        if closed:
            self._delete()
            raise errors.CancelledError("box closed while it started")

    def exec(self, argv, env=None, cwd=None, user=None, stdin_open=False):
        if self._closed:
            raise errors.StateError("the box is closed")
        body = {"cmd": list(argv), "stream": True, "stdin_open": bool(stdin_open)}
        if env is not None:
            body["env"] = list(env)
        if cwd is not None:
            body["cwd"] = cwd
        if user is not None:
            body["user"] = user
        p = _Process(self, body)
        self._procs.add(p)
        return p

    def put_file(self, path, data):
        q = "?path=" + urllib.parse.quote(path, safe="/")
        try:
            self.r.request("PUT", self._path("/files" + q), data, ctype="application/octet-stream",
                           what="write_file %s" % path)
        except errors.BoxliteError as e:
            raise errors.BoxFileError(e.message) from e

    def get_file(self, path):
        q = "?path=" + urllib.parse.quote(path, safe="/")
        try:
            return self.r.request("GET", self._path("/files" + q), raw=True, what="read_file %s" % path)
        except errors.NotFoundError as e:
            err = errors.BoxFileError(e.message)
            err.errno = 2
            raise err from e
        except errors.BoxliteError as e:
            raise errors.BoxFileError(e.message) from e

    def _delete(self):
        try:
            self.r.request("DELETE", self._path())
        except errors.NotFoundError:
            pass

    def cancel(self):
        """Kills the box now (the server destroys it); calls in flight fail."""
        threading.Thread(target=self.close, daemon=True).start()

    def close(self):
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sid = self.id
        for p in list(self._procs):
            p._drop()
        if sid is not None:
            self._delete()


class _Process:
    """A streaming exec: a thread reads its events into two queues."""

    def __init__(self, sb, body):
        self.sb = sb
        self.r = sb.r
        self._q = {1: queue.Queue(), 2: queue.Queue()}
        self._eof = {1: False, 2: False}
        self._done = threading.Event()
        self._result = None
        self._error = None
        conn, resp = self.r._send("POST", sb._path("/exec"), json.dumps(body).encode(), timeout=STREAM_IDLE,
                                  accept="text/event-stream")
        if resp.status != 200:
            data = resp.read()
            conn.close()
            raise _error(resp.status, data, "exec %s" % body["cmd"][0])
        self._conn, self._resp = conn, resp
        ev, data = self._next_event()
        if ev != "start":
            conn.close()
            raise errors.ProtocolError("exec: the server sent %r before start" % ev)
        self.exec_id = data["exec_id"]
        self.pid = data.get("pid", 0)
        threading.Thread(target=self._read_events, daemon=True, name="boxlite-remote-read").start()

    def _next_event(self):
        ev, lines = None, []
        while True:
            line = self._resp.readline(8 << 20)
            if not line:
                return None, None
            line = line.rstrip(b"\r\n")
            if not line:
                if ev or lines:
                    return ev, json.loads(b"\n".join(lines).decode("utf-8")) if lines else {}
                continue
            if line.startswith(b":"):
                continue
            if line.startswith(b"event:"):
                ev = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                lines.append(line[5:].lstrip())

    def _read_events(self):
        try:
            while True:
                ev, data = self._next_event()
                if ev in ("stdout", "stderr"):
                    self._q[1 if ev == "stdout" else 2].put(base64.b64decode(data["data"]))
                elif ev == "exit":
                    self._result = data
                    break
                elif ev == "error":
                    e = data.get("error", {})
                    self._error = _error(500, json.dumps({"error": e}).encode(), None)
                    break
                elif ev is None:
                    self._error = errors.RemoteError("exec: the server closed the stream")
                    break
        except (OSError, ValueError, KeyError, http.client.HTTPException) as e:
            self._error = errors.RemoteError("exec: stream lost: %s" % e)
        finally:
            self._conn.close()
            self._q[1].put(b"")
            self._q[2].put(b"")
            self._done.set()

    def _drop(self):
        try:
            self._conn.sock and self._conn.sock.shutdown(2)
        except OSError:
            pass

    def _sub(self, tail):
        return self.sb._path("/execs/%s/%s" % (self.exec_id, tail))

    def read(self, stream, n=None):
        if self._eof[stream]:
            return b""
        data = self._q[stream].get()
        if not data:
            self._eof[stream] = True
        return data

    def write(self, data):
        # In pieces within the server's body limit (1 MiB by default).
        view = memoryview(bytes(data))
        for off in range(0, len(view), STDIN_PIECE):
            self.r.request("POST", self._sub("stdin"), bytes(view[off:off + STDIN_PIECE]),
                           ctype="application/octet-stream", what="write stdin")

    def close_stdin(self):
        self.r.request("POST", self._sub("stdin?close=1"), b"", ctype="application/octet-stream",
                       what="close stdin")

    def signal(self, sig):
        self.r.request("POST", self._sub("signal"), {"signal": int(sig)}, what="signal")

    def wait(self):
        self._done.wait()
        if self._error is not None:
            raise self._error
        r = self._result
        if r.get("timed_out"):
            raise errors.TimeoutError("the server's exec timeout passed (the process was killed)",
                                      scope="call")
        oom = "the process ran out of memory" if r.get("oom_killed") else None
        return r["exit_code"], r.get("signal", 0), bool(r.get("oom_killed")), oom

    def release(self):
        if not self._done.is_set():
            self._drop()

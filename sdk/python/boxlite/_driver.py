# The CodeBox interpreter driver. This file is not imported on the host: its
# source is passed to `python3 -c` inside the box, where it runs as the
# persistent interpreter. It is the ONE copy of the driver: the SDK reads it
# (_codebox.py) and the C library's code sessions (runtime/codebox.c,
# bl_codebox_*) embed it at build time (build/gen/codebox_driver.h). It speaks a framed protocol on the stdin/stdout the
# agent gave it (moved to private descriptors), and runs each piece of code in
# one namespace that lives as long as the process.
#
#   frame = type (1 byte) + payload length (4 bytes, big-endian) + payload
#   host -> guest: b"C" id (8 bytes, big-endian) + code (UTF-8)   run code
#   guest -> host: b"H" {"v": 1, "pid": P}             ready (once)
#                  b"O" bytes / b"E" bytes             output of the run
#                  b"R" {"id": N, "exit_code": C, "error": NAME|null,
#                        "resource": "memory"|"disk"|"pids"|null}
#
# SIGINT interrupts a run (KeyboardInterrupt, state kept); the host uses it
# when a run passes its timeout, and kills the process group when that fails.
#
# The code's stdout and stderr (also those of its child processes: they are
# descriptors 1 and 2) are pipes read by a thread that forwards them as O/E
# frames; after the code returns the thread drains them before R is sent.
# Compatible with Python >= 3.7 (the image's interpreter).
import builtins, errno, fcntl, io, os, select, signal, struct, sys, threading
# ast, traceback and linecache load lazily (json not at all): each costs a
# few hundred ms at start-up under TCG.

MAXF = 1 << 20
PIN, POUT = os.dup(0), os.dup(1)  # not inheritable: child processes never see them
MAIN = os.getpid()
try:
    os.setsid()  # our own process group: the host kills it whole
except OSError:
    pass
# A keeper in its own process group: when the driver dies (the host kills it
# at a timeout or a restart) it kills the driver's whole process group, so
# nothing the code started (a fork bomb included) outlives the interpreter.
_keep_r, _keep_w = os.pipe()
if os.fork() == 0:
    try:
        os.setpgid(0, 0)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        os.close(_keep_w)
        for _fd in (PIN, POUT):
            os.close(_fd)
        while os.read(_keep_r, 1):
            pass
        os.killpg(MAIN, signal.SIGKILL)
    finally:
        os._exit(0)
os.close(_keep_r)
_nul = os.open(os.devnull, os.O_RDWR)
os.dup2(_nul, 0)
_r1, _w1 = os.pipe()
_r2, _w2 = os.pipe()
for _fd in (_r1, _r2):
    fcntl.fcntl(_fd, fcntl.F_SETFL, fcntl.fcntl(_fd, fcntl.F_GETFL) | os.O_NONBLOCK)
_ctl_r, _ctl_w = os.pipe()
_wlock = threading.Lock()


def _child():
    # A fork of the interpreter (os.fork, multiprocessing) must not speak the
    # protocol.
    for fd in (PIN, POUT, _keep_w):
        try:
            os.close(fd)
        except OSError:
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_child)


def send(t, data=b""):
    with _wlock:
        for off in range(0, max(len(data), 1), MAXF):
            chunk = data[off:off + MAXF]
            buf = t + struct.pack(">I", len(chunk)) + chunk
            while buf:
                n = os.write(POUT, buf)
                buf = buf[n:]


def read_exact(n):
    out = b""
    while len(out) < n:
        b = os.read(PIN, n - len(out))
        if not b:
            os._exit(0)  # the host went away
        out += b
    return out


_drain_req = threading.Event()
_drained = threading.Event()


def pump():
    fds = {_r1: b"O", _r2: b"E"}
    while True:
        r, _, _ = select.select([_r1, _r2, _ctl_r], [], [])
        draining = _ctl_r in r
        if draining:
            os.read(_ctl_r, 64)
        for fd in (_r1, _r2):
            if fd in r or draining:
                while True:
                    try:
                        b = os.read(fd, 65536)
                    except BlockingIOError:
                        break
                    if not b:
                        break
                    send(fds[fd], b)
                    if not draining:
                        break
        if draining:
            _drained.set()


def _stream(fd):
    return io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding="utf-8",
                            errors="backslashreplace", line_buffering=True)


ns = {"__name__": "__main__", "__builtins__": builtins}
threading.Thread(target=pump, daemon=True).start()


def _resource(e, tb):
    # Which limit of the box an uncaught exception comes from, if any.
    if isinstance(e, MemoryError):
        return "memory"
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk"
    if isinstance(e, RuntimeError) and "can't start new thread" in str(e):
        return "pids"
    if isinstance(e, BlockingIOError) and e.errno == errno.EAGAIN:
        try:
            import traceback
            frames = traceback.extract_tb(tb)
            last = frames[-1].line or "" if frames else ""
            if "fork" in last or any(f.name in ("_execute_child", "_launch") for f in frames):
                return "pids"
        except Exception:
            pass
    return None


def _end_fork_bomb():
    # The code hit the process limit and its forks may still be forking:
    # kill every other process of our group (the keeper has its own), then
    # reap the zombies, which count against the limit too.
    me = os.getpid()
    for _ in range(200):
        live = 0
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == me:
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    st = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if len(st) > 2 and st[0] != "Z" and int(st[2]) == MAIN:
                live += 1
                try:
                    os.kill(int(d), signal.SIGKILL)
                except OSError:
                    pass
        if not live:
            break
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def run(code, rid):
    # The host interrupts a run that passes its timeout with SIGINT
    # (KeyboardInterrupt here, the namespace kept); outside runs it is ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.dup2(_w1, 1)
    os.dup2(_w2, 2)
    sys.stdout, sys.stderr = _stream(1), _stream(2)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    status, error, resource = 0, None, None
    name = "<cell-%d>" % rid
    try:
        import ast
        tree = ast.parse(code, name, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, name, "exec"), ns)
        if last is not None:
            value = eval(compile(last, name, "eval"), ns)
            if value is not None:
                ns["_"] = value
                print(repr(value))
    except SystemExit as e:
        c = e.code
        if c is None:
            status = 0
        elif isinstance(c, int):
            status = c & 0xFF
        else:
            print(c, file=sys.stderr)
            status = 1
    except BaseException as e:
        error = type(e).__name__
        status = 1
        tb = e.__traceback__
        # Drop the driver's own frame from the traceback.
        if tb is not None and tb.tb_frame.f_code is run.__code__:
            tb = tb.tb_next
        import linecache, traceback
        # Tracebacks show the code's lines.
        linecache.cache[name] = (len(code), None, code.splitlines(True), name)
        traceback.print_exception(type(e), e, tb)
        resource = _resource(e, tb)
    if os.getpid() != MAIN:
        os._exit(status)
    if resource == "pids":
        _end_fork_bomb()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except Exception:
            pass
    _drained.clear()
    os.write(_ctl_w, b"d")
    _drained.wait()
    send(b"R", ('{"id": %d, "exit_code": %d, "error": %s, "resource": %s}' % (
        rid, status, _jstr(error), _jstr(resource))).encode())


signal.signal(signal.SIGINT, signal.SIG_IGN)
def _jstr(v):
    # A JSON string of identifier characters only (exception names can be anything).
    if v is None:
        return "null"
    return '"%s"' % "".join(c for c in v[:100] if c.isascii() and (c.isalnum() or c in "_."))


def _preload():
    try:
        import ast  # noqa: F401  (while the host sends the first run)
    except Exception:
        pass


threading.Thread(target=_preload, daemon=True).start()
send(b"H", ('{"v": 1, "pid": %d}' % MAIN).encode())
while True:
    head = read_exact(5)
    t, n = head[:1], struct.unpack(">I", head[1:])[0]
    if n > (64 << 20):
        os._exit(3)
    body = read_exact(n)
    if t == b"C" and n >= 8:
        run(body[8:].decode("utf-8", "surrogatepass"), struct.unpack(">Q", body[:8])[0])

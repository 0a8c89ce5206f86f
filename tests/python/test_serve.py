"""`boxlite serve`: the HTTP API driven by curl and by the SDK's remote mode
(boxlite.connect) against a real server on 127.0.0.1 with real VMs; tenant
isolation, quotas, limits, concurrency, and the server's ownership of its
sandboxes across SIGTERM and SIGKILL.

At most two VMs run at once: tenant A's long-lived box (module fixture) and
one more in some tests."""

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import BUILD, assert_clean, leftovers, run

import boxlite

TOKEN_A = "token-tenant-a-0123456789"
TOKEN_B = "token-tenant-b-0123456789"
TOKEN_C = "token-tenant-c-0123456789"
BOXLITE = os.path.join(BUILD, "boxlite")
CURL = shutil.which("curl")


class Server:
    """A `boxlite serve` on 127.0.0.1 with a free port chosen by the kernel."""

    def __init__(self, root, extra_limits=None):
        self.root = root
        self.state = os.path.join(root, "state")
        self.serve_dir = os.path.join(root, "serve")
        os.makedirs(self.state, exist_ok=True)
        os.chmod(self.state, 0o711)
        self.config = os.path.join(root, "config.json")
        limits = {"max_body_bytes": 65536, "max_file_bytes": 1 << 20, "exec_timeout_seconds": 300}
        limits.update(extra_limits or {})
        cfg = {
            "tenants": [
                {"name": "a", "token": TOKEN_A, "quota": {"sandboxes": 2, "memory_mb": 1024, "cpus": 2}},
                {"name": "b", "token": TOKEN_B, "quota": {"sandboxes": 1, "memory_mb": 512}},
                {"name": "c", "token": TOKEN_C, "quota": {"memory_mb": 128}, "pull": False},
            ],
            "limits": limits,
        }
        with open(self.config, "w") as f:
            json.dump(cfg, f)
        os.chmod(self.config, 0o600)
        self.proc = None
        self.log = os.path.join(root, "server.log")

    def start(self, extra=()):
        env = dict(os.environ, BOXLITE_SERVE_DIR=self.serve_dir)
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen([BOXLITE, "serve", "--listen", "127.0.0.1:0", "--config", self.config,
                                      "--state-dir", self.state, "-v"] + list(extra), stdout=subprocess.DEVNULL,
                                     stderr=self.logf, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with open(self.log, "rb") as f:
                text = f.read().decode("utf-8", "replace")
            lines = [ln for ln in text.splitlines() if "listening on http" in ln]
            if len(lines) > self.starts:
                self.url = lines[-1].split("listening on ")[1].strip()
                self.starts += 1
                return self
            if self.proc.poll() is not None:
                raise AssertionError("server exited: %s" % text[-2000:])
            time.sleep(0.05)
        raise AssertionError("server did not start")

    starts = 0

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            rc = self.proc.wait(60)
            self.proc = None
            self.logf.close()
            return rc
        return None

    cacert = None

    def curl(self, method, path, token=TOKEN_A, body=None, data_file=None, headers=(), stream=False):
        """(status, body bytes) of one curl request."""
        cmd = [CURL, "-sS", "-X", method, "-o", "-", "-w", "\n%{http_code}", self.url + path]
        if self.cacert:
            cmd[1:1] = ["--cacert", self.cacert]
        if stream:
            cmd.insert(1, "-N")
        if token:
            cmd += ["-H", "Authorization: Bearer " + token]
        for h in headers:
            cmd += ["-H", h]
        if body is not None:
            cmd += ["-H", "Content-Type: application/json", "--data-binary",
                    body if isinstance(body, str) else json.dumps(body)]
        if data_file is not None:
            cmd += ["--data-binary", "@" + data_file]
        out = subprocess.run(cmd, stdout=subprocess.PIPE, check=True, timeout=300).stdout
        body, _, code = out.rpartition(b"\n")
        return int(code), body

    def json(self, method, path, token=TOKEN_A, body=None, expect=200):
        code, out = self.curl(method, path, token, body)
        assert code == expect, (method, path, code, out)
        return json.loads(out) if out.strip() else None


def error_of(out):
    e = json.loads(out)["error"]
    assert isinstance(e["code"], str) and isinstance(e["message"], str) and e["message"]
    return e


@pytest.fixture(scope="module")
def server():
    if CURL is None:
        pytest.skip("curl is not installed")
    if not os.path.exists(BOXLITE):
        pytest.skip("%s missing (run make)" % BOXLITE)
    root = tempfile.mkdtemp(prefix="boxlite-serve-test-")
    srv = Server(root).start()
    yield srv
    try:
        assert srv.stop() == 0
        assert_clean(srv.state)
        assert os.listdir(os.path.join(srv.serve_dir, "owners")) == []
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def box_a(server):
    """Tenant A's sandbox, shared by the tests of this module."""
    sb = server.json("POST", "/v1/sandboxes", body={"image": "default", "memory_mb": 256, "disk_mb": 64,
                                                    "env": {"GREETING": "hi"}}, expect=201)
    yield sb["id"]
    server.curl("DELETE", "/v1/sandboxes/" + sb["id"])


def metric(server, name):
    code, out = server.curl("GET", "/metrics")
    assert code == 200
    for line in out.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("no metric %s in %s" % (name, out[:500]))


# ------------------------------------------------------------------ no VM

@pytest.mark.novm
def test_health_auth_limits(server):
    assert server.json("GET", "/health", token=None)["status"] == "ok"
    code, out = server.curl("GET", "/", token=None)
    assert code == 200 and b"<textarea" in out
    assert b'src="http' not in out and b'href="http' not in out and b"@import" not in out  # no external assets
    for tok in (None, "wrong-token-123456", TOKEN_A + "x", TOKEN_A[:-1]):
        for method, path in (("GET", "/v1/sandboxes"), ("POST", "/v1/sandboxes"), ("GET", "/metrics"),
                             ("GET", "/v1/images"), ("DELETE", "/v1/sandboxes/abc")):
            code, out = server.curl(method, path, token=tok, body={} if method == "POST" else None)
            assert code == 401, (tok, method, path, code)
            assert error_of(out)["code"] == "unauthorized"
    code, out = server.curl("GET", "/v1/sandboxes", token=None, headers=["Authorization: Basic YTpi"])
    assert code == 401
    starts = metric(server, "boxlite_sandbox_starts_total")
    failures = metric(server, "boxlite_sandbox_start_failures_total")
    # Oversized (declared and chunked), malformed, wrong types: 4xx, nothing created.
    big = os.path.join(server.root, "big.json")
    with open(big, "w") as f:
        f.write('{"image": "default", "pad": "' + "x" * 70000 + '"}')
    code, out = server.curl("POST", "/v1/sandboxes", data_file=big, headers=["Content-Type: application/json"])
    assert code == 413 and error_of(out)["code"] == "payload_too_large"
    code, out = server.curl("POST", "/v1/sandboxes", data_file=big,
                            headers=["Content-Type: application/json", "Transfer-Encoding: chunked"])
    assert code == 413
    for bad in ('{"image": "default"', "not json", "[1, 2]", '{"a": 1} trailing', "", '{"memory_mb": "lots"}',
                '{"memory_mb": 1}', '{"cpus": 0}', '{"image": "/etc"}', '{"image": "../x"}',
                '{"env": {"A=B": "c"}}', '{"cwd": "relative"}', '{"timeout_seconds": -1}',
                '{"network": true}'):
        code, out = server.curl("POST", "/v1/sandboxes", body=bad)
        assert code == 400, (bad, code, out)
        error_of(out)
    code, out = server.curl("POST", "/v1/nothing", body={})
    assert code == 404 and error_of(out)
    code, out = server.curl("PATCH", "/v1/sandboxes", body={})
    assert code in (404, 405) and error_of(out)
    assert server.json("GET", "/v1/sandboxes")["sandboxes"] == []
    assert metric(server, "boxlite_sandbox_starts_total") == starts
    assert metric(server, "boxlite_sandbox_start_failures_total") == failures
    assert [e for e in os.listdir(server.state)] == []
    assert os.listdir(os.path.join(server.serve_dir, "owners")) == []


@pytest.mark.novm
def test_quota_refused_before_boot(server):
    # C may use 128 MiB: the default 512 MiB box is refused at once.
    code, out = server.curl("POST", "/v1/sandboxes", token=TOKEN_C, body={})
    assert code == 403 and error_of(out)["code"] == "quota_exceeded"
    code, out = server.curl("POST", "/v1/sandboxes", token=TOKEN_A, body={"cpus": 3})
    assert code == 403 and "CPUs" in error_of(out)["message"]
    code, out = server.curl("POST", "/v1/images/pull", token=TOKEN_C, body={"ref": "busybox"})
    assert code == 403
    assert os.listdir(server.state) == []


@pytest.mark.novm
def test_openapi_and_images(server):
    code, out = server.curl("GET", "/openapi.yaml")
    assert code == 200 and out.startswith(b"openapi: 3")
    for p in ("/v1/sandboxes:", "/v1/sandboxes/{id}/exec:", "/v1/sandboxes/{id}/run_code:",
              "/v1/sandboxes/{id}/files:", "/v1/images:", "/metrics:", "/health:"):
        assert p.encode() in out, p
    imgs = server.json("GET", "/v1/images")["images"]
    assert isinstance(imgs, list)
    # A registry that is not there: a clear 502, not a hang.
    code, out = server.curl("POST", "/v1/images/pull", body={"ref": "127.0.0.1:1/none/such:tag"})
    assert code == 502 and error_of(out)["code"] == "BL_ENETWORK"


@pytest.mark.novm
def test_sdk_errors_without_vm(server):
    bad = boxlite.connect(server.url, "not-the-token")
    with pytest.raises(boxlite.AuthenticationError):
        bad.sandboxes()
    r = boxlite.connect(server.url, TOKEN_C)
    with pytest.raises(boxlite.QuotaExceededError):
        with r.sync.SimpleBox():
            pass
    with pytest.raises(boxlite.InvalidArgumentError):
        r.sync.SimpleBox(memory_mb=-1)
    with pytest.raises(boxlite.InvalidArgumentError):
        boxlite.connect("ftp://x", TOKEN_A)
    with pytest.raises(boxlite.InvalidArgumentError):
        with r.sync.SimpleBox(network=True):
            pass


@pytest.mark.novm
def test_tls():
    openssl = shutil.which("openssl")
    if CURL is None or openssl is None or not os.path.exists(BOXLITE):
        pytest.skip("curl, openssl or the boxlite binary missing")
    root = tempfile.mkdtemp(prefix="boxlite-serve-tls-")
    srv = Server(root)
    try:
        key, cert = os.path.join(root, "key.pem"), os.path.join(root, "cert.pem")
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        srv.start(["--tls-cert", cert, "--tls-key", key])
        assert srv.url.startswith("https://127.0.0.1:")
        srv.cacert = cert
        assert srv.json("GET", "/health", token=None)["status"] == "ok"
        assert srv.json("GET", "/v1/sandboxes")["sandboxes"] == []
        code, _ = srv.curl("GET", "/v1/sandboxes", token="bad-token-000000")
        assert code == 401
        plain = subprocess.run([CURL, "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                srv.url.replace("https:", "http:") + "/health"], stdout=subprocess.PIPE)
        assert plain.stdout != b"200"  # no plain HTTP on a TLS port
        r = boxlite.connect(srv.url, TOKEN_A, cafile=cert)
        assert r.health()["status"] == "ok" and r.sandboxes() == []
        with pytest.raises(boxlite.RemoteError):
            boxlite.connect(srv.url, TOKEN_A).sandboxes()  # the test CA is not trusted by default
        assert srv.stop() == 0
    finally:
        srv.stop(signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------ VMs

def test_sandbox_lifecycle_and_exec(server, box_a):
    sb = server.json("GET", "/v1/sandboxes/" + box_a)
    assert sb["id"] == box_a and sb["status"] == "running" and sb["memory_mb"] == 256
    assert [s["id"] for s in server.json("GET", "/v1/sandboxes")["sandboxes"]] == [box_a]
    r = server.json("POST", "/v1/sandboxes/%s/exec" % box_a,
                    body={"cmd": ["sh", "-c", "echo out $GREETING $X; echo err >&2; exit 3"], "env": {"X": "y"}})
    assert (r["stdout"], r["stderr"], r["exit_code"], r["timed_out"]) == ("out hi y\n", "err\n", 3, False)
    r = server.json("POST", "/v1/sandboxes/%s/exec" % box_a, body={"cmd": "cat; pwd", "stdin": "fed\n",
                                                                  "cwd": "/tmp"})
    assert r["stdout"] == "fed\n/tmp\n" and r["exit_code"] == 0
    r = server.json("POST", "/v1/sandboxes/%s/exec" % box_a, body={"cmd": ["no-such-command"]})
    assert r["exit_code"] == 127 and "command not found" in r["stderr"]
    r = server.json("POST", "/v1/sandboxes/%s/exec" % box_a, body={"cmd": ["sleep", "30"], "timeout_seconds": 1})
    assert r["timed_out"] is True and r["exit_code"] == 137
    r = server.json("POST", "/v1/sandboxes/%s/exec" % box_a, body={"cmd": ["sh", "-c", "kill -TERM $$"]})
    assert r["exit_code"] == 143 and r["signal"] == 15
    code, out = server.curl("POST", "/v1/sandboxes/%s/exec" % box_a, body={"cmd": "x" * 10, "env": 5})
    assert code == 400
    # Streaming: server-sent events, in order, then exit.
    code, out = server.curl("POST", "/v1/sandboxes/%s/exec" % box_a, stream=True,
                            body={"cmd": ["sh", "-c", "for i in 1 2 3; do echo line$i; done; echo e >&2"],
                                  "stream": True})
    assert code == 200
    events = [blk for blk in out.decode().split("\n\n") if blk.strip() and not blk.startswith(":")]
    kinds = [e.split("\n")[0][len("event: "):] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "exit", kinds
    data = {"stdout": b"", "stderr": b""}
    for e in events[1:-1]:
        kind, payload = e.split("\n", 1)
        data[kind[len("event: "):]] += base64.b64decode(json.loads(payload[len("data: "):])["data"])
    assert data == {"stdout": b"line1\nline2\nline3\n", "stderr": b"e\n"}
    assert json.loads(events[-1].split("data: ", 1)[1])["exit_code"] == 0
    assert metric(server, "boxlite_sandboxes") == 1
    assert metric(server, "boxlite_sandbox_starts_total") >= 1
    code, out = server.curl("GET", "/metrics")
    assert b'boxlite_sandbox_start_seconds_bucket{le="+Inf"}' in out


def test_files(server, box_a):
    src = os.path.join(server.root, "up.bin")
    payload = bytes(range(256)) * 40
    with open(src, "wb") as f:
        f.write(payload)
    code, out = server.curl("PUT", "/v1/sandboxes/%s/files?path=/tmp/up.bin" % box_a, data_file=src)
    assert code == 200, out
    r = server.json("POST", "/v1/sandboxes/%s/exec" % box_a, body={"cmd": ["sha256sum", "/tmp/up.bin"]})
    import hashlib
    assert r["stdout"].split()[0] == hashlib.sha256(payload).hexdigest()
    code, out = server.curl("GET", "/v1/sandboxes/%s/files?path=/tmp/up.bin" % box_a)
    assert code == 200 and out == payload
    code, out = server.curl("GET", "/v1/sandboxes/%s/files?path=/tmp/none" % box_a)
    assert code == 404 and error_of(out)
    code, out = server.curl("GET", "/v1/sandboxes/%s/files?path=relative" % box_a)
    assert code == 400
    big = os.path.join(server.root, "big.bin")
    with open(big, "wb") as f:
        f.write(b"\0" * ((1 << 20) + 1))
    code, out = server.curl("PUT", "/v1/sandboxes/%s/files?path=/tmp/big" % box_a, data_file=big)
    assert code == 413


def test_run_code(server, box_a):
    code, out = server.curl("POST", "/v1/sandboxes/%s/run_code" % box_a, body={"code": "x = 6 * 7\nprint(x)"})
    if code == 400 and error_of(out)["code"] == "BL_EUNSUPPORTED":
        pytest.skip("stateful code runs are not in this build (bl_codebox)")
    assert code == 200, out
    r = json.loads(out)
    assert r["stdout"] == "42\n" and r["exit_code"] == 0
    r = server.json("POST", "/v1/sandboxes/%s/run_code" % box_a, body={"code": "x + 1"})
    assert r["stdout"].strip() == "43"
    r = server.json("POST", "/v1/sandboxes/%s/run_code" % box_a, body={"code": "1/0"})
    assert r["exit_code"] == 1 and "ZeroDivisionError" in r["stderr"]
    r = server.json("POST", "/v1/sandboxes/%s/run_code" % box_a,
                    body={"code": "import time\ntime.sleep(60)", "timeout_seconds": 2})
    assert r["timed_out"] is True and "KeyboardInterrupt" in r["stderr"]
    r = server.json("POST", "/v1/sandboxes/%s/run_code" % box_a, body={"code": "print(x)"})
    assert r["stdout"] == "42\n"  # the interrupted run kept the state
    code, out = server.curl("POST", "/v1/sandboxes/%s/run_code" % box_a, body={"code": 5})
    assert code == 400
    server.json("POST", "/v1/sandboxes/%s/run_code/reset" % box_a, body={})
    r = server.json("POST", "/v1/sandboxes/%s/run_code" % box_a, body={"code": "print('x' in dir())"})
    assert r["stdout"] == "False\n"


def test_stream_client_gone_kills_process(server, box_a):
    """A client that drops a streaming exec: its process is killed (the
    server notices at its next write, a keepalive at the latest)."""
    import http.client
    import urllib.parse
    u = urllib.parse.urlsplit(server.url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    c.request("POST", "/v1/sandboxes/%s/exec" % box_a, body=json.dumps({"cmd": ["sleep", "1234"], "stream": True}),
              headers={"Authorization": "Bearer " + TOKEN_A, "Content-Type": "application/json"})
    resp = c.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
    assert resp.readline().startswith(b"event: start")

    def sleeping():
        r = server.json("POST", "/v1/sandboxes/%s/exec" % box_a, body={"cmd": "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' <$f; echo; done"})
        return "sleep 1234" in r["stdout"]

    assert sleeping()
    c.sock.shutdown(2)
    c.close()
    deadline = time.monotonic() + 60
    while sleeping():
        assert time.monotonic() < deadline, "the dropped exec's process still runs"
        time.sleep(1)


def test_tenant_isolation(server, box_a):
    for method, path, body in (("GET", "", None), ("DELETE", "", None),
                               ("POST", "/exec", {"cmd": ["true"]}),
                               ("POST", "/run_code", {"code": "1"}),
                               ("GET", "/files?path=/etc/hostname", None),
                               ("POST", "/execs/x1/signal", {"signal": 9})):
        code, out = server.curl(method, "/v1/sandboxes/" + box_a + path, token=TOKEN_B, body=body)
        assert code == 404, (method, path, code, out)
        assert error_of(out)
    assert server.json("GET", "/v1/sandboxes", token=TOKEN_B)["sandboxes"] == []
    # Still A's and alive.
    assert server.json("GET", "/v1/sandboxes/" + box_a)["status"] == "running"


def test_concurrent_requests(server, box_a):
    results = []
    lock = threading.Lock()

    def one(i):
        if i % 12 == 0:
            code, out = server.curl("POST", "/v1/sandboxes/%s/exec" % box_a, body={"cmd": ["echo", str(i)]})
            ok = code == 200 and json.loads(out)["stdout"] == "%d\n" % i
        elif i % 2:
            code, out = server.curl("GET", "/v1/sandboxes")
            ok = code == 200 and [s["id"] for s in json.loads(out)["sandboxes"]] == [box_a]
        else:
            code, out = server.curl("GET", "/v1/sandboxes/" + box_a, token=TOKEN_B)
            ok = code == 404
        with lock:
            results.append((i, ok, code))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(results) == 50
    assert [r for r in results if not r[1]] == []


def test_quota_sandboxes(server, box_a):
    # A has one box; memory quota 1024: 256 used, 900 more is refused.
    code, out = server.curl("POST", "/v1/sandboxes", body={"memory_mb": 900})
    assert code == 403 and "memory" in error_of(out)["message"]
    # B may have one: the second is refused while the first lives.
    b1 = server.json("POST", "/v1/sandboxes", token=TOKEN_B, body={"image": "busybox", "memory_mb": 128,
                                                                  "disk_mb": 16}, expect=201)
    try:
        code, out = server.curl("POST", "/v1/sandboxes", token=TOKEN_B, body={"memory_mb": 128})
        assert code == 403 and error_of(out)["code"] == "quota_exceeded"
        code, _ = server.curl("GET", "/v1/sandboxes/" + b1["id"], token=TOKEN_A)
        assert code == 404
    finally:
        code, _ = server.curl("DELETE", "/v1/sandboxes/" + b1["id"], token=TOKEN_B)
        assert code == 204
    code, _ = server.curl("GET", "/v1/sandboxes/" + b1["id"], token=TOKEN_B)
    assert code == 404
    assert b1["id"] not in os.listdir(server.state)


def test_sdk_remote(server, box_a):
    remote = boxlite.connect(server.url, TOKEN_B)

    async def main():
        async with remote.CodeBox(memory_mb=256, disk_mb=64) as box:
            assert box.id in [s["id"] for s in remote.sandboxes()]
            r = await box.run("x = 6 * 7\nprint(x)")
            assert (r.stdout, r.exit_code) == ("42\n", 0)
            r = await box.run("x + 1")
            assert r.stdout.strip() == "43"
            r = await box.run("raise ValueError('bad')")
            assert r.exit_code == 1 and "ValueError: bad" in r.stderr
            with pytest.raises(boxlite.TimeoutError):
                await box.run("import time\ntime.sleep(60)", timeout=2)
            r = await box.run("print(x)")
            assert r.stdout == "42\n"  # state kept across the interrupted run
            r = await box.exec("sh", "-c", "echo $0 $1; echo e >&2; exit 5", "a", "b")
            assert (r.stdout, r.stderr, r.exit_code) == ("a b\n", "e\n", 5)
            r = await box.exec("cat", stdin=b"in\n")
            assert r.stdout == "in\n"
            big = "y = %r\nprint(len(y))" % ("z" * (3 << 20))  # over the server's body limit: sent in pieces
            r = await box.run(big)
            assert r.stdout == "%d\n" % (3 << 20)
            r = await box.exec("nope-not-here")
            assert r.exit_code == 127
            with pytest.raises(boxlite.TimeoutError):
                await box.exec("sleep", "60", timeout=1)
            chunks = [c async for c in box.stream("sh", "-c", "echo a; echo b >&2")]
            assert sorted((c.stream, c.text) for c in chunks) == [("stderr", "b\n"), ("stdout", "a\n")]
            await box.write_file("/tmp/f.txt", "content\n")
            assert await box.read_file("/tmp/f.txt") == b"content\n"
            with pytest.raises(boxlite.BoxFileError):
                await box.read_file("/tmp/missing")
            # B may have one box: a second is over quota.
            with pytest.raises(boxlite.QuotaExceededError):
                async with remote.SimpleBox(memory_mb=128):
                    pass
        assert remote.sandboxes() == []

    run(main())
    with remote.sync.SimpleBox(image="busybox", memory_mb=128, disk_mb=16) as box:
        assert box.exec("echo", "sync").stdout == "sync\n"
    assert remote.sandboxes() == []
    with pytest.raises(boxlite.ImageNotFoundError):
        with remote.sync.SimpleBox(image="no-such-image-here"):
            pass


def test_shutdown_and_crash_release_sandboxes():
    """SIGTERM releases every sandbox; after SIGKILL a new server removes the
    dead one's sandboxes (its own server fixture: no VM of A's runs)."""
    if CURL is None or not os.path.exists(BOXLITE):
        pytest.skip("curl or the boxlite binary missing")
    root = tempfile.mkdtemp(prefix="boxlite-serve-crash-")
    srv = Server(root)
    try:
        srv.start()
        sb = srv.json("POST", "/v1/sandboxes", body={"image": "busybox", "memory_mb": 128, "disk_mb": 16},
                      expect=201)
        assert sb["id"] in os.listdir(srv.state)
        assert srv.stop(signal.SIGTERM) == 0
        assert_clean(srv.state)
        assert os.listdir(os.path.join(srv.serve_dir, "owners")) == []

        srv.start()
        sb = srv.json("POST", "/v1/sandboxes", body={"image": "busybox", "memory_mb": 128, "disk_mb": 16},
                      expect=201)
        with open(os.path.join(srv.state, sb["id"], "meta.json")) as f:
            qemu = json.load(f).get("qemu_pid")
        assert os.listdir(os.path.join(srv.serve_dir, "owners")) == [sb["id"]]
        srv.stop(signal.SIGKILL)
        srv.start()  # finds the record of the killed server and cleans up
        me = "process %d:" % srv.proc.pid
        left = [x for x in leftovers(srv.state) if not x.startswith(me)]
        assert left == [], left
        assert os.listdir(os.path.join(srv.serve_dir, "owners")) == []
        if qemu:
            assert not os.path.exists("/proc/%d" % qemu) or b"qemu" not in open(
                "/proc/%d/cmdline" % qemu, "rb").read()
        assert srv.json("GET", "/v1/sandboxes")["sandboxes"] == []
        assert srv.stop() == 0
        assert leftovers(srv.state) == []
    finally:
        srv.stop(signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)

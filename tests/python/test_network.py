"""Networking on request (issue 12), through the SDK with real VMs: no
device without network=, an allow-list the host's firewall enforces, the
guest's DNS, published ports, isolation between sandboxes, the connection
limit, and nothing left behind. Every server here listens on 127.0.0.1 and
nothing is sent anywhere else (names come from /etc/hosts or the sandbox's
own resolver)."""

import hashlib
import http.server
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

import boxlite
from conftest import run

NFT = shutil.which("nft") or "/usr/sbin/nft"
pytestmark = pytest.mark.skipif(not os.access(NFT, os.X_OK), reason="needs nftables (nft)")

NET = dict(memory_mb=256, disk_mb=64)


def boxlite_tables():
    out = subprocess.run([NFT, "list", "tables"], capture_output=True, text=True, check=True).stdout
    return {l.split()[-1] for l in out.splitlines() if " boxlite_" in l}


def socket_fds():
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink("/proc/self/fd/" + fd).startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


class Server:
    """An HTTP server on 127.0.0.1 serving `root`, counting connections."""

    def __init__(self, root):
        handler = lambda *a, **kw: Quiet(*a, directory=root, **kw)  # noqa: E731
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Holder:
    """A TCP listener on 127.0.0.1 that accepts and holds connections (a
    stand-in for a host service such as containerd's or libvirtd's)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        self.stop = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
                self.accepted.append(c)
            except OSError:
                pass

    def drop(self):
        for c in self.accepted:
            c.close()

    def close(self):
        self.stop = True
        self.thread.join()
        self.drop()
        self.sock.close()


@pytest.fixture
def web(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "hello").write_text("hello from the host\n")
    big = os.urandom(10 << 20)
    (root / "big").write_bytes(big)
    s = Server(str(root))
    s.sha256 = hashlib.sha256(big).hexdigest()
    yield s
    s.close()


@pytest.fixture
def clean_net():
    """Nothing of the network is left: no firewall table, no socket of the
    DNS responder."""
    tables, fds = boxlite_tables(), socket_fds()
    yield
    assert boxlite_tables() == tables
    assert socket_fds() <= fds


class UdpEcho:
    """A UDP echo on 127.0.0.1:port, counting datagrams."""

    def __init__(self, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.port = port
        self.sock.settimeout(0.2)
        self.got = 0
        self.stop = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stop:
            try:
                d, a = self.sock.recvfrom(2048)
                self.got += 1
                self.sock.sendto(b"echo:" + d, a)
            except OSError:
                pass

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


UDP = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
try:
    s.sendto(b"ping", ("10.0.2.2", int(sys.argv[1])))
    print(s.recv(100).decode())
except OSError as e:
    print("refused", type(e).__name__)
"""


def py(code):
    return ("python3", "-c", code)


CONNECT = """
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
    s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
    print("connected", s.recv(100)[:20])
except OSError as e:
    print("refused", type(e).__name__)
"""

DNS = r"""
import socket, struct, sys
def query(name):
    q = struct.pack(">HHHHHH", 7, 0x100, 1, 0, 0, 0)
    q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    ns = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    s.sendto(q, (ns, 53))
    r = s.recv(512)
    rcode, an = r[3] & 15, struct.unpack(">H", r[6:8])[0]
    return rcode, socket.inet_ntoa(r[-4:]) if an else None
for n in sys.argv[1:]:
    print(n, *query(n))
"""


def test_no_network_by_default(opts):
    async def main():
        async with boxlite.SimpleBox(image="busybox", **opts) as box:
            r = await box.exec("ls", "/sys/class/net")
            assert r.stdout.split() == ["lo"]
            with pytest.raises(boxlite.StateError):
                box.network_refused()
    run(main())


def test_allow_list_dns_and_refusals(opts, web, clean_net):
    other = Holder()  # not allowed: another port of the host's loopback
    service = Holder()  # stands for containerd's / libvirtd's TCP endpoint
    udp = UdpEcho(web.port)
    udp_other = UdpEcho(other.port)
    try:
        net = {"allow": ["host:%d" % web.port, "localhost:%d" % web.port]}

        async def main():
            async with boxlite.SimpleBox(image="default", network=net, **dict(opts, **NET)) as box:
                r = await box.exec("ls", "/sys/class/net")
                assert r.stdout.split() == ["eth0", "lo"]
                r = await box.exec(*py("import urllib.request as u; print(u.urlopen("
                                       "'http://host.boxlite.internal:%d/hello', timeout=60).read().decode())"
                                       % web.port))
                assert r.stdout == "hello from the host\n\n", r
                r = await box.exec(*py("import urllib.request as u, hashlib; d = u.urlopen("
                                       "'http://host.boxlite.internal:%d/big', timeout=300).read(); "
                                       "print(len(d), hashlib.sha256(d).hexdigest())" % web.port),
                                   timeout=400)
                assert r.stdout.split() == [str(10 << 20), web.sha256], r
                for port in (other.port, service.port):
                    r = await box.exec(*py(CONNECT), "host.boxlite.internal", str(port))
                    assert r.stdout.startswith("refused"), r
                    r = await box.exec(*py(CONNECT), "10.0.2.2", str(port))
                    assert r.stdout.startswith("refused"), r
                # DNS: the allowed name and the host's alias resolve, others do not.
                r = await box.exec(*py(DNS), "localhost", "host.boxlite.internal", "example.com",
                                   "pypi.org")
                assert r.stdout.splitlines() == ["localhost 0 10.0.2.2",
                                                 "host.boxlite.internal 0 10.0.2.2",
                                                 "example.com 3 None", "pypi.org 3 None"], r
                r = await box.exec(*py("import socket; print(socket.gethostbyname('localhost.'))"))
                assert r.stdout == "10.0.2.2\n", r
                # UDP follows the same rules: the allowed port's number, not another.
                r = await box.exec(*py(UDP), str(web.port))
                assert r.stdout == "echo:ping\n", r
                r = await box.exec(*py(UDP), str(udp_other.port))
                assert r.stdout.startswith("refused"), r
                refused = dict(box.network_refused())
                for port in (other.port, service.port):
                    assert refused.get("127.0.0.1:%d/tcp" % port, 0) >= 2, refused
                assert refused.get("127.0.0.1:%d/udp" % udp_other.port, 0) >= 1, refused
                assert not any(d.startswith("127.0.0.1:%d/" % web.port) for d in refused), refused
        run(main())
        assert other.accepted == [] and service.accepted == []
        assert udp.got == 1 and udp_other.got == 0
    finally:
        other.close()
        service.close()
        udp.close()
        udp_other.close()


def test_nothing_allowed_reaches_nothing(opts, web, clean_net):
    async def main():
        async with boxlite.SimpleBox(image="default", network=True, **dict(opts, **NET)) as box:
            r = await box.exec(*py(CONNECT), "host.boxlite.internal", str(web.port))
            assert r.stdout.startswith("refused"), r
            assert ("127.0.0.1:%d/tcp" % web.port) in dict(box.network_refused())
    run(main())


SERVE = "cd /tmp && echo guest-page > index.html && exec python3 -m http.server %d >/dev/null 2>&1 </dev/null &"


def fetch(url, deadline=120):
    end = time.monotonic() + deadline
    while True:
        try:
            return urllib.request.urlopen(url, timeout=10).read().decode()
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.5)


def test_published_port_and_isolation(opts, web, clean_net):
    async def main():
        async with boxlite.SimpleBox(image="default", network={"ports": [8000]}, **dict(opts, **NET)) as a:
            await a.exec("sh", "-c", SERVE % 8000)
            host, port = a.port(8000)
            assert host == "127.0.0.1" and port > 0
            assert fetch("http://%s:%d/index.html" % (host, port)) == "guest-page\n"
            with pytest.raises(boxlite.NotFoundError):
                a.port(9)
            # Another sandbox, even one allowed to reach the host's web server,
            # cannot reach the first one's published port.
            net = {"allow": ["host:%d" % web.port]}
            async with boxlite.SimpleBox(image="default", network=net, **dict(opts, **NET)) as b:
                r = await b.exec(*py(CONNECT), "host.boxlite.internal", str(web.port))
                assert r.stdout.startswith("connected"), r
                r = await b.exec(*py(CONNECT), "host.boxlite.internal", str(port))
                assert r.stdout.startswith("refused"), r
            published = port
        # The published port is free again.
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", published))
        s.close()
    run(main())


FLOOD = """
import socket, sys
ok, held = 0, []
for i in range(int(sys.argv[3])):
    try:
        held.append(socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20))
        ok += 1
    except OSError:
        pass
print(ok)
"""


def test_connection_flood_cut_at_limit(opts, web, clean_net):
    holder = Holder()
    try:
        net = {"allow": ["host:%d" % holder.port, "host:%d" % web.port], "max_conns": 20}

        async def main():
            async with boxlite.SimpleBox(image="default", network=net, **dict(opts, **NET)) as box:
                r = await box.exec(*py(FLOOD), "host.boxlite.internal", str(holder.port), "60",
                                   timeout=400)
                assert 1 <= int(r.stdout) <= 20, r
                assert 1 <= len(holder.accepted) <= 20
                refused = dict(box.network_refused())
                assert refused.get("over-limit", 0) > 0, refused
                # The host stays responsive, and so does the sandbox once its
                # connections are gone.
                holder.drop()
                assert urllib.request.urlopen("http://127.0.0.1:%d/hello" % web.port,
                                              timeout=30).read() == b"hello from the host\n"
                r = await box.exec(*py(CONNECT), "host.boxlite.internal", str(web.port))
                assert r.stdout.startswith("connected"), r
        run(main())
    finally:
        holder.close()


def test_bad_network_options(opts):
    with pytest.raises(boxlite.InvalidArgumentError):
        boxlite.SimpleBox(image="busybox", network={"allow": "host:80"}, **opts)
    with pytest.raises(boxlite.InvalidArgumentError):
        boxlite.SimpleBox(image="busybox", network={"bogus": 1}, **opts)

    async def main():
        with pytest.raises(boxlite.InvalidArgumentError):
            async with boxlite.SimpleBox(image="busybox", network={"allow": ["1.2.3.4/40"]}, **opts):
                pass
    run(main())

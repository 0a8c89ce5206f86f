#!/bin/sh
# `boxlite serve` figures (never pass/fail), beside the local SDK's:
#   - REST exec round trip: POST /v1/sandboxes/ID/exec {"cmd": ["true"]}
#     (non-streaming), one client on a keep-alive connection, median of N;
#   - requests per second for that exec with 16 clients at once (each its own
#     keep-alive connection; a small Python client: no wrk needed);
#   - the same exec through the local SDK (boxlite.sync.SimpleBox.exec) and
#     GET /v1/sandboxes (no VM work) for the HTTP floor.
# Usage: serve.sh BUILD [N]     (root; N defaults to $BENCH_N or 20)
set -u
build=$(cd "${1:-build}" && pwd)
n=${2:-${BENCH_N:-20}}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "serve: needs root"; exit 0; }
[ -x "$build/boxlite" ] || { echo "serve: build $build/boxlite first"; exit 1; }
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
work=$(mktemp -d /tmp/boxlite-bench-serve.XXXXXX)
chmod 711 "$work"
mkdir -m 711 "$work/state"
token=bench-token-0123456789
printf '{"tenants": [{"name": "bench", "token": "%s"}]}\n' "$token" >"$work/config.json"
chmod 600 "$work/config.json"
BOXLITE_SERVE_DIR="$work/serve" "$build/boxlite" serve --listen 127.0.0.1:0 --config "$work/config.json" \
	--state-dir "$work/state" 2>"$work/log" &
pid=$!
cleanup() {
	kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
url=
for i in $(seq 100); do
	url=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$work/log")
	[ -n "$url" ] && break
	sleep 0.1
done
[ -n "$url" ] || { echo "serve: the server did not start"; cat "$work/log"; exit 1; }

BOXLITE_LIBRARY="$build/libboxlite.so" BOXLITE_BUILD="$build" BOXLITE_STATE_DIR="$work/state" \
PYTHONPATH="$top/sdk/python" "$PY" - "$url" "$token" "$n" <<'PY'
import http.client, json, statistics, sys, threading, time, urllib.parse
import boxlite.sync
url, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
u = urllib.parse.urlsplit(url)
H = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}

def req(c, method, path, body=None):
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=H)
    r = c.getresponse()
    data = r.read()
    assert r.status < 300, (r.status, data)
    return json.loads(data) if data.strip() else None

c = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
sid = req(c, "POST", "/v1/sandboxes", {"image": "busybox", "memory_mb": 256})["id"]
path = "/v1/sandboxes/%s/exec" % sid
try:
    for _ in range(3):
        req(c, "POST", path, {"cmd": ["true"]})
    def timed(fn, k):
        out = []
        for _ in range(k):
            t0 = time.monotonic(); fn(); out.append((time.monotonic() - t0) * 1000)
        return statistics.median(out)
    rt = timed(lambda: req(c, "POST", path, {"cmd": ["true"]}), n)
    lst = timed(lambda: req(c, "GET", "/v1/sandboxes"), n)
    per, clients, done = 10, 16, []
    def client():
        cc = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
        for _ in range(per):
            r = req(cc, "POST", path, {"cmd": ["true"]})
            assert r["exit_code"] == 0
        done.append(per)
    ts = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.monotonic()
    for t in ts: t.start()
    for t in ts: t.join()
    rps = sum(done) / (time.monotonic() - t0)
finally:
    # A fresh connection: the first one may have idled past the server's timeout.
    req(http.client.HTTPConnection(u.hostname, u.port, timeout=300), "DELETE", "/v1/sandboxes/" + sid)
with boxlite.sync.SimpleBox(image="busybox", memory_mb=256) as box:
    for _ in range(3):
        box.exec("true")
    local = timed(lambda: box.exec("true"), n)
    lrps_done = []
    def lclient():
        for _ in range(per):
            box.exec("true")
        lrps_done.append(per)
    ts = [threading.Thread(target=lclient) for _ in range(clients)]
    t0 = time.monotonic()
    for t in ts: t.start()
    for t in ts: t.join()
    lrps = sum(lrps_done) / (time.monotonic() - t0)
print("REST exec round trip (true, non-streaming, keep-alive): %.1f ms  (local SDK exec: %.1f ms)" % (rt, local))
print("REST GET /v1/sandboxes (HTTP + auth floor):             %.2f ms" % lst)
print("REST exec with 16 clients: %.1f requests/s  (local SDK, 16 threads on one box: %.1f execs/s)" % (rps, lrps))
PY

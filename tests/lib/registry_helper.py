#!/usr/bin/python3
"""Loopback-only helpers for the registry tests (tests/integration/test_pull.c).

  proxy --port P --upstream U [--tamper] [--rate BYTES_PER_S] [--log FILE]
      HTTP reverse proxy to 127.0.0.1:U. --tamper flips one byte in the middle
      of every blob body (same length); --rate throttles bodies; --log appends
      "METHOD PATH STATUS RANGE" per request; --status429 N answers the first N
      blob GETs 429 (Retry-After: 1); --redirect answers blob GETs 307 to the
      upstream itself.
  token --port P --key KEY --cert CERT --issuer I --service S --user U --password W
      A Docker token server: GET /token with basic auth U:W answers a JWT
      (RS256, x5c = CERT) granting the scope asked; anything else is 401.

Both print "ready" on stdout once listening, and listen on 127.0.0.1 only.
"""
import argparse
import base64
import http.client
import http.server
import json
import socketserver
import subprocess
import sys
import time
import uuid
from urllib.parse import urlparse, parse_qs


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def proxy_handler(args):
    state = {"429": 0}

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def handle_any(self):
            blob = "/blobs/sha256:" in self.path and self.command == "GET"
            if blob and args.status429 > state["429"]:
                state["429"] += 1
                self.log_line(429)
                self.send_response(429)
                self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if blob and args.redirect:
                self.log_line(307)
                self.send_response(307)
                self.send_header("Location", "http://127.0.0.1:%d%s" % (args.upstream, self.path))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else None
            up = http.client.HTTPConnection("127.0.0.1", args.upstream, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            headers["Host"] = "127.0.0.1:%d" % args.upstream
            up.request(self.command, self.path, body=body, headers=headers)
            r = up.getresponse()
            data = r.read()
            self.log_line(r.status)
            if args.tamper and "/blobs/" in self.path and r.status in (200, 206) and data:
                b = bytearray(data)
                b[len(b) // 2] ^= 0xFF
                data = bytes(b)
            self.send_response(r.status)
            for k, v in r.getheaders():
                if k.lower() in ("content-length", "connection", "transfer-encoding"):
                    continue
                if k.lower() == "location":
                    v = v.replace("127.0.0.1:%d" % args.upstream, "127.0.0.1:%d" % args.port)
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command == "HEAD":
                return
            if not args.rate:
                self.wfile.write(data)
                return
            chunk = 16384
            for i in range(0, len(data), chunk):
                self.wfile.write(data[i:i + chunk])
                self.wfile.flush()
                time.sleep(chunk / args.rate)

        def log_line(self, status):
            if args.log:
                with open(args.log, "a") as f:
                    f.write("%s %s %d %s\n" % (self.command, self.path, status,
                                               self.headers.get("Range", "-")))

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_any

    return H


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token_handler(args):
    with open(args.cert) as f:
        pem = f.read()
    der_b64 = "".join(l for l in pem.splitlines() if "-----" not in l)
    good = "Basic " + base64.b64encode(("%s:%s" % (args.user, args.password)).encode()).decode()

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def deny(self):
            body = b'{"details":"bad credentials"}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            u = urlparse(self.path)
            q = parse_qs(u.query)
            if u.path != "/token" or self.headers.get("Authorization") != good:
                return self.deny()
            access = []
            for s in q.get("scope", []):
                parts = s.split(":")
                if len(parts) == 3:
                    access.append({"type": parts[0], "name": parts[1],
                                   "actions": parts[2].split(",")})
            now = int(time.time())
            header = {"typ": "JWT", "alg": "RS256", "x5c": [der_b64]}
            claims = {"iss": args.issuer, "sub": args.user, "aud": args.service,
                      "exp": now + 600, "nbf": now - 60, "iat": now,
                      "jti": uuid.uuid4().hex, "access": access}
            signing = (b64url(json.dumps(header).encode()) + "." +
                       b64url(json.dumps(claims).encode())).encode()
            sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", args.key],
                                 input=signing, capture_output=True, check=True).stdout
            tok = signing.decode() + "." + b64url(sig)
            body = json.dumps({"token": tok, "expires_in": 600}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return H


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["proxy", "token"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", type=int)
    ap.add_argument("--tamper", action="store_true")
    ap.add_argument("--rate", type=int, default=0)
    ap.add_argument("--status429", type=int, default=0)
    ap.add_argument("--redirect", action="store_true")
    ap.add_argument("--log")
    ap.add_argument("--key")
    ap.add_argument("--cert")
    ap.add_argument("--issuer")
    ap.add_argument("--service")
    ap.add_argument("--user")
    ap.add_argument("--password")
    args = ap.parse_args()
    h = proxy_handler(args) if args.mode == "proxy" else token_handler(args)
    srv = Server(("127.0.0.1", args.port), h)
    print("ready", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()

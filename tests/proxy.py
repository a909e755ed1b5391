#!/usr/bin/env python3
"""proxy.py - a small real HTTP CONNECT proxy on loopback for the tests
(tests/e2e/test-proxy.sh), in front of the Microsoft 365 emulator.

  proxy.py --port PORT --log FILE [--auth USER:PASSWORD] [--deny HOST]
  proxy.py --tls-front CERT KEY --port PORT --upstream HOST:PORT --log FILE

Proxy mode: CONNECT only (anything else: 405); with --auth a CONNECT
without the right Proxy-Authorization: Basic gets 407 with
Proxy-Authenticate: Basic; a CONNECT to a --deny host gets 403; a target
that cannot be reached gets 502.  Otherwise 200, then bytes are copied
both ways until either side closes.  Every CONNECT is one line of the log:
"CONNECT host:port STATUS".

TLS front mode: a TLS server with CERT/KEY (another CA than the emulator's,
the "public" host of the ca_extra_file test) that copies the decrypted
bytes to a new TLS connection to --upstream (certificate not checked: it
is the emulator on loopback).  Log lines: "FRONT accepted" or
"FRONT handshake failed: ...".

Listens on 127.0.0.1 only; prints "proxy ready on PORT" (PORT 0: the
kernel's choice) once it accepts connections.
"""
import argparse
import base64
import select
import socket
import ssl
import sys
import threading

lock = threading.Lock()


def log(path, line):
    with lock, open(path, "a") as f:
        f.write(line + "\n")


def pump(a, b):
    """Copy a -> b until EOF or error, then shut b down for writing."""
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    try:
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def splice(a, b):
    t = threading.Thread(target=pump, args=(b, a), daemon=True)
    t.start()
    pump(a, b)
    t.join(timeout=60)
    for s in (a, b):
        try:
            s.close()
        except OSError:
            pass


def read_head(c):
    """The request head (up to the blank line), or None."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(4096)
        if not chunk or len(data) > 65536:
            return None
        data += chunk
    return data.split(b"\r\n\r\n", 1)[0].decode("latin-1")


def answer(c, status, reason, extra=""):
    c.sendall(("HTTP/1.1 %d %s\r\n%sContent-Length: 0\r\n\r\n"
               % (status, reason, extra)).encode())


def serve_proxy(c, args):
    """One client connection: CONNECT requests until a tunnel or a
    refusal; after a 407 the connection stays open for the retry with
    credentials (as real proxies do for the authentication handshake)."""
    try:
        while True:
            head = read_head(c)
            if head is None:
                c.close()
                return
            lines = head.split("\r\n")
            parts = lines[0].split()
            if len(parts) != 3 or parts[0] != "CONNECT":
                log(args.log, "%s 405" % lines[0])
                answer(c, 405, "Method Not Allowed")
                c.close()
                return
            target = parts[1]
            host, _, port = target.rpartition(":")
            host = host.strip("[]")
            status = 200
            if args.auth:
                want = "Basic " + base64.b64encode(args.auth.encode()).decode()
                got = [l.split(":", 1)[1].strip() for l in lines[1:]
                       if l.lower().startswith("proxy-authorization:")]
                if not got or got[0] != want:
                    status = 407
            if status == 200 and host.lower() in args.deny:
                status = 403
            if status == 200:
                try:
                    up = socket.create_connection((host, int(port)), timeout=10)
                    up.settimeout(None)
                except (OSError, ValueError):
                    status = 502
            log(args.log, "CONNECT %s %d" % (target, status))
            if status == 407:
                answer(c, 407, "Proxy Authentication Required",
                       'Proxy-Authenticate: Basic realm="test proxy"\r\n')
                continue
            if status != 200:
                answer(c, status, "Refused", "Connection: close\r\n")
                c.close()
                return
            c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            splice(c, up)
            return
    except OSError:
        c.close()


def splice_tls(a, b):
    """Copy both ways in one thread (an SSLSocket must not be read and
    written by two threads at once) until either side closes."""
    socks = [a, b]
    try:
        while True:
            ready = [x for x in socks if getattr(x, "pending", lambda: 0)()]
            if not ready:
                ready, _, _ = select.select(socks, [], [], 300)
                if not ready:
                    break
            x = ready[0]
            data = x.recv(65536)
            if not data:
                break
            (b if x is a else a).sendall(data)
    except (OSError, ssl.SSLError):
        pass
    for x in socks:
        try:
            x.close()
        except OSError:
            pass


def serve_front(c, args, ctx):
    try:
        s = ctx.wrap_socket(c, server_side=True)
    except (OSError, ssl.SSLError) as e:
        log(args.log, "FRONT handshake failed: %s" % e)
        c.close()
        return
    log(args.log, "FRONT accepted")
    host, _, port = args.upstream.rpartition(":")
    up_ctx = ssl.create_default_context()
    up_ctx.check_hostname = False
    up_ctx.verify_mode = ssl.CERT_NONE
    try:
        up = up_ctx.wrap_socket(socket.create_connection((host, int(port))),
                                server_hostname=host)
    except OSError:
        s.close()
        return
    splice_tls(s, up)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log", required=True)
    ap.add_argument("--auth")
    ap.add_argument("--deny", action="append", default=[])
    ap.add_argument("--tls-front", nargs=2, metavar=("CERT", "KEY"))
    ap.add_argument("--upstream")
    args = ap.parse_args()
    args.deny = [d.lower() for d in args.deny]
    ctx = None
    if args.tls_front:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_front[0], args.tls_front[1])
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", args.port))
    ls.listen(64)
    print("proxy ready on %d" % ls.getsockname()[1], flush=True)
    while True:
        c, _ = ls.accept()
        if ctx is not None:
            t = threading.Thread(target=serve_front, args=(c, args, ctx))
        else:
            t = threading.Thread(target=serve_proxy, args=(c, args))
        t.daemon = True
        t.start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)

#!/usr/bin/env python3
"""lmtp-client.py - a small LMTP client for the tests and the benchmark

  lmtp-client.py SOCKET raw FILE
      send FILE in one write (pipelined commands, dot-stuffed data as
      they are in FILE), print every reply line until the server closes
  lmtp-client.py SOCKET send SENDER RCPTS FILE [COUNT] [CONNS] [FIRST]
      deliver FILE (a message, LF or CRLF) COUNT times (default 1) to
      RCPTS (comma list) over CONNS connections (default 1), each kept
      for all its messages (LHLO once, then MAIL/RCPT/DATA pipelined);
      the Subject gets "#N " and the Message-ID "N." when COUNT > 1
      (each a message of its own; N counts from FIRST, default 0);
      print one line
      per recipient reply: "N RCPT CODE TEXT"

SOCKET is a unix socket path or HOST:PORT.  Exit status 0 when every
reply to a delivery was 2xx, 1 otherwise, 2 on a protocol error.
"""
import socket
import sys
import threading


def connect(spec):
    if spec.startswith("/"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(spec)
    else:
        host, port = spec.rsplit(":", 1)
        s = socket.create_connection((host.strip("[]"), int(port)))
    return s


class Conn:
    def __init__(self, spec):
        self.s = connect(spec)
        self.buf = b""

    def line(self):
        while b"\n" not in self.buf:
            data = self.s.recv(65536)
            if not data:
                raise EOFError("server closed the connection")
            self.buf += data
        ln, self.buf = self.buf.split(b"\n", 1)
        return ln.rstrip(b"\r").decode("utf-8", "replace")

    def reply(self):
        """one (possibly multi-line) reply: (code, last line text)"""
        while True:
            ln = self.line()
            if len(ln) < 4 or ln[3] != "-":
                return int(ln[:3]), ln[4:]


def stuff(data):
    """dot-stuff a message, CRLF line ends, with the final dot"""
    lines = data.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = [(b"." + ln if ln.startswith(b".") else ln) for ln in lines]
    return b"\r\n".join(out) + b"\r\n.\r\n"


def raw(spec, path):
    c = Conn(spec)
    c.s.sendall(open(path, "rb").read())
    try:
        while True:
            print(c.line())
    except EOFError:
        pass


def send(spec, sender, rcpts, msg, count, results, lock, first):
    c = Conn(spec)
    if c.reply()[0] != 220:
        raise SystemExit(2)
    c.s.sendall(b"LHLO client.test\r\n")
    if c.reply()[0] != 250:
        raise SystemExit(2)
    for n in range(first, first + count):
        data = msg
        if count > 1 or first > 0:
            data = msg.replace(b"Subject: ", b"Subject: #%d " % n, 1)
            # A message of its own: the send ledger knows Message-IDs.
            data = data.replace(b"Message-ID: <", b"Message-ID: <%d." % n, 1)
        cmd = b"MAIL FROM:<%s>\r\n" % sender.encode()
        for r in rcpts:
            cmd += b"RCPT TO:<%s>\r\n" % r.encode()
        cmd += b"DATA\r\n"
        c.s.sendall(cmd)
        c.reply()
        took = []
        for r in rcpts:
            code, text = c.reply()
            if code // 100 == 2:
                took.append(r)
            else:
                with lock:
                    results.append((n, r, code, text))
        code, text = c.reply()
        if code != 354:
            with lock:
                results.append((n, "*", code, text))
            continue
        c.s.sendall(stuff(data))
        for r in took:
            code, text = c.reply()
            with lock:
                results.append((n, r, code, text))
    c.s.sendall(b"QUIT\r\n")
    c.reply()


def main():
    if len(sys.argv) >= 4 and sys.argv[2] == "raw":
        raw(sys.argv[1], sys.argv[3])
        return 0
    if len(sys.argv) < 6 or sys.argv[2] != "send":
        print(__doc__, file=sys.stderr)
        return 2
    spec, sender = sys.argv[1], sys.argv[3]
    rcpts = [r for r in sys.argv[4].split(",") if r]
    msg = open(sys.argv[5], "rb").read()
    count = int(sys.argv[6]) if len(sys.argv) > 6 else 1
    conns = int(sys.argv[7]) if len(sys.argv) > 7 else 1
    results, lock, threads = [], threading.Lock(), []
    per = [count // conns + (1 if i < count % conns else 0)
           for i in range(conns)]
    first = int(sys.argv[8]) if len(sys.argv) > 8 else 0
    for i in range(conns):
        t = threading.Thread(target=send, args=(spec, sender, rcpts, msg,
                                                per[i], results, lock, first))
        first += per[i]
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    bad = 0
    for n, r, code, text in sorted(results, key=lambda x: x[0]):
        print("%d %s %d %s" % (n, r, code, text))
        bad += code // 100 != 2
    return 1 if bad or len(results) < count * len(rcpts) else 0


if __name__ == "__main__":
    sys.exit(main())

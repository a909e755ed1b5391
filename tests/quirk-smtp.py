#!/usr/bin/env python3
"""quirk-smtp.py PORT MODEFILE LOGFILE - a scripted SMTP server on
127.0.0.1:PORT for the m365-fetch tests (tests/fetch.sh: fx_quirk), for
MTA behaviour a real Postfix will not show.  MODEFILE holds one word,
read for each new connection:

  greet554  554 greeting (an MTA refusing all clients)
  mail530   530 5.7.0 to MAIL FROM (the MTA wants TLS/AUTH: a setup issue)
  data451   451 4.3.0 to the end of the data (a definite "not taken")
  7bit      like ok, but EHLO does not offer 8BITMIME (RFC 6152)
  helo554   220 greeting, then 554 to EHLO and HELO (Postfix's
            smtpd_helo_restrictions refusing this client)
  ok        250 to everything

LOGFILE gets each MAIL command as sent, and "accepted N" or "data451 N"
(N data bytes) for each message that reached the end of its data."""
import socket
import sys
import threading

port, modef, logf = int(sys.argv[1]), sys.argv[2], sys.argv[3]
lock = threading.Lock()


def log(x):
    with lock, open(logf, "a") as f:
        f.write(x + "\n")


def serve(c):
    mode = open(modef).read().strip()
    f = c.makefile("rb")

    def say(x):
        c.sendall(x.encode() + b"\r\n")
    say("554 5.3.2 quirk.test closed for maintenance" if mode == "greet554"
        else "220 quirk.test ESMTP")
    while True:
        line = f.readline()
        if not line:
            break
        u = line.strip().upper()
        if u.startswith(b"EHLO") or u.startswith(b"HELO"):
            if mode == "greet554":
                say("554 5.3.2 quirk.test closed")
            elif mode == "helo554":
                say("554 5.7.1 <%s>: Helo command rejected: Access denied"
                    % line.decode("ascii", "replace").split()[-1])
            elif mode == "7bit":
                say("250-quirk.test")
                say("250 SIZE 10000000")
            else:
                say("250-quirk.test")
                say("250 8BITMIME")
        elif u.startswith(b"MAIL"):
            log(line.decode("ascii", "replace").strip())
            say("530 5.7.0 Must issue a STARTTLS command first"
                if mode == "mail530" else "250 2.1.0 Ok")
        elif u.startswith(b"RCPT"):
            say("250 2.1.5 Ok")
        elif u == b"DATA":
            say("354 End data with <CR><LF>.<CR><LF>")
            n = 0
            while True:
                d = f.readline()
                if not d or d == b".\r\n":
                    break
                n += len(d)
            if mode == "data451":
                log("data451 %d" % n)
                say("451 4.3.0 Error: queue file write error")
            else:
                log("accepted %d" % n)
                say("250 2.0.0 Ok: queued as Q%d" % n)
        elif u == b"QUIT":
            say("221 2.0.0 Bye")
            break
        else:
            say("250 2.0.0 Ok")
    c.close()


s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(16)
while True:
    conn, _ = s.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()

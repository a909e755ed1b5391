-- t-reload.lua - configuration reload (SIGHUP) while messages are in flight
--
-- Globals (miltertest -D): SOCK, LUADIR, PHASE, RELOAD (a shell script
-- that installs config 2, sends SIGHUP to the pid in the pid file and
-- waits until the milter logged the reload).
-- Config 1: unknown_sender = accept, rewrite_sender = no.
-- Config 2: unknown_sender = reject, rewrite_sender = yes.
-- PHASE "first": a message starts under config 1, the configuration is
-- reloaded, a new message gets config 2 while the first one finishes
-- under config 1.  PHASE "after": a broken configuration was refused,
-- config 2 still applies.  PHASE "conf1": config 1 applies (again).

dofile(LUADIR .. "/mt-lib.lua")

local function hdrs(from, id)
  return {{"From", from}, {"To", "r@example.net"}, {"Subject", "reload"},
    {"Date", "Sat, 28 Nov 2026 10:00:00 +0000"}, {"Message-ID", id}}
end

local conn

if PHASE == "first" then
  conn = connect()
  call("mailfrom", mt.mailfrom, conn, "<nobody@unknown.test>")
  expect(conn, SMFIR_ACCEPT, "config 1: unknown sender accepted")
  mt.disconnect(conn)

  -- A message in flight under config 1 ...
  local old = connect()
  call("macro", mt.macro, old, SMFIC_MAIL, "i", "INFLIGHT")
  call("mailfrom", mt.mailfrom, old, "<app@app.test>")
  expect(old, SMFIR_CONTINUE, "in-flight message started under config 1")
  call("rcptto", mt.rcptto, old, "<r@example.net>")

  -- ... the configuration changes ...
  check(os.execute("bash '" .. RELOAD .. "'"), "SIGHUP reload logged")

  -- ... new messages get config 2,
  conn = connect()
  call("mailfrom", mt.mailfrom, conn, "<nobody@unknown.test>")
  expect(conn, SMFIR_REPLYCODE, "config 2: unknown sender rejected")
  mt.disconnect(conn)
  conn = connect()
  message(conn, {qid = "NEWCONF", from = "<app@app.test>",
    headers = hdrs("App <app@app.test>", "<new@app.test>"), body = "new\r\n"})
  expect(conn, SMFIR_CONTINUE, "config 2: message continues")
  mt.disconnect(conn)

  -- ... and the one in flight finishes with config 1.
  call("header", mt.header, old, "From", "App <app@app.test>")
  call("header", mt.header, old, "Message-ID", "<old@app.test>")
  call("body", mt.bodystring, old, "old\r\n")
  call("eom", mt.eom, old)
  expect(old, SMFIR_CONTINUE, "in-flight message finished")
  mt.disconnect(old)
elseif PHASE == "conf1" then
  conn = connect()
  call("mailfrom", mt.mailfrom, conn, "<nobody@unknown.test>")
  expect(conn, SMFIR_ACCEPT, "config 1: unknown sender accepted")
  mt.disconnect(conn)
else
  conn = connect()
  call("mailfrom", mt.mailfrom, conn, "<nobody@unknown.test>")
  expect(conn, SMFIR_REPLYCODE, "after a failed reload: config 2 still applies")
  mt.disconnect(conn)
end

done()

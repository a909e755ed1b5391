-- mt-lib.lua - helpers shared by the m365-milter miltertest scripts
--
-- Loaded with dofile(LUADIR .. "/mt-lib.lua").  Globals from the command
-- line (miltertest -D): SOCK (the milter's socket), LUADIR.
--
-- Failing checks are counted and reported with "FAIL:"; done() raises an
-- error at the end when any failed.  error() (never os.exit) ends the
-- script so that miltertest cleans up.  Protocol steps go through call(),
-- which wraps them in pcall: miltertest raises a Lua error without a
-- message when a step was negotiated away.

FAILS = 0

local names = {
  [SMFIR_CONTINUE] = "continue", [SMFIR_ACCEPT] = "accept",
  [SMFIR_REJECT] = "reject", [SMFIR_TEMPFAIL] = "tempfail",
  [SMFIR_DISCARD] = "discard", [SMFIR_REPLYCODE] = "replycode",
}

function reply_name(r)
  if r == nil then return "nil" end
  return names[r] or ("0x" .. string.format("%x", math.floor(r)))
end

function fail(msg)
  FAILS = FAILS + 1
  mt.echo("FAIL: " .. msg)
end

function pass(msg)
  mt.echo("ok: " .. msg)
end

function check(cond, msg)
  if cond then pass(msg) else fail(msg) end
end

-- call(what, f, ...) - one protocol step; a failure ends the script
function call(what, f, ...)
  local ok, err = pcall(f, ...)
  if not ok or err ~= nil then
    fail(what .. ": " .. tostring(err))
    error("protocol step failed: " .. what)
  end
end

-- connect([sock]) - a new milter connection
function connect(sock)
  local conn = mt.connect(sock or SOCK, 40, 0.05)
  if conn == nil then
    fail("cannot connect to " .. tostring(sock or SOCK))
    error("no connection")
  end
  return conn
end

-- expect(conn, want, msg) - the last reply is want
function expect(conn, want, msg)
  local r = mt.getreply(conn)
  if r == want then
    pass(msg .. " (" .. reply_name(r) .. ")")
  else
    fail(msg .. ": reply " .. reply_name(r) .. ", want " .. reply_name(want))
  end
  return r == want
end

-- message(conn, m) - send one message; stops at the first reply that is
-- not "continue" and returns the stage name ("mail", "rcpt", "header",
-- "body", "eom").  m: qid (macro i at MAIL), qid_rcpt (macro i at RCPT),
-- from, args (ESMTP args of MAIL FROM), rcpts, headers ({name, value}
-- pairs), body.
function message(conn, m)
  if m.qid then call("macro MAIL", mt.macro, conn, SMFIC_MAIL, "i", m.qid) end
  call("mailfrom", mt.mailfrom, conn, m.from, table.unpack(m.args or {}))
  if mt.getreply(conn) ~= SMFIR_CONTINUE then return "mail" end
  if m.qid_rcpt then
    call("macro RCPT", mt.macro, conn, SMFIC_RCPT, "i", m.qid_rcpt)
  end
  for _, r in ipairs(m.rcpts or {"<rcpt@example.net>"}) do
    call("rcptto " .. r, mt.rcptto, conn, r)
    if mt.getreply(conn) ~= SMFIR_CONTINUE then return "rcpt" end
  end
  for _, h in ipairs(m.headers or {}) do
    call("header " .. h[1], mt.header, conn, h[1], h[2])
    if mt.getreply(conn) ~= SMFIR_CONTINUE then return "header" end
  end
  if m.body ~= nil and m.body ~= "" then
    -- libmilter hands bodies over in chunks of at most 64 KB
    local pos = 1
    while pos <= #m.body do
      call("body", mt.bodystring, conn, string.sub(m.body, pos, pos + 65535 - 1))
      if mt.getreply(conn) ~= SMFIR_CONTINUE then return "body" end
      pos = pos + 65535
    end
  end
  call("eom", mt.eom, conn)
  return "eom"
end

-- send(m, want, msg) - message(m) on a new connection (to m.sock, or
-- SOCK); its last reply is want (expect); returns the connection, still
-- open, and the stage message() reached
function send(m, want, msg)
  local conn = connect(m.sock)
  local stage = message(conn, m)
  expect(conn, want, msg)
  return conn, stage
end

-- mail_only(m, want, msg) - a new connection (to m.sock, or SOCK): only
-- MAIL FROM m.from with the ESMTP args m.args (macro i = m.qid when
-- given); its reply is want; the connection is closed
function mail_only(m, want, msg)
  local conn = connect(m.sock)
  if m.qid then call("macro", mt.macro, conn, SMFIC_MAIL, "i", m.qid) end
  call("mailfrom", mt.mailfrom, conn, m.from, table.unpack(m.args or {}))
  expect(conn, want, msg)
  mt.disconnect(conn)
end

-- canon_size(m) - header + CRLF + body, as the milter counts it
function canon_size(m)
  local n = 2
  for _, h in ipairs(m.headers or {}) do
    n = n + #h[1] + 2 + #h[2] + 2
  end
  return n + #(m.body or "")
end

-- done() - end of script: error out when a check failed
function done()
  if FAILS > 0 then
    error(FAILS .. " check(s) failed")
  end
  mt.echo("all checks passed")
end

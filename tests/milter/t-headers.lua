-- t-headers.lua - m365-milter deliver mode: header lines reach Graph
-- reading the same as they read to the milter
--
-- Globals (miltertest -D): SOCK, LUADIR.  The milter (t-headers.sh) runs
-- in deliver mode for every recipient with a domain; the account "app"
-- sends for @contoso.test.  Each message has its own Message-ID; the
-- wrapper then checks, per Message-ID, what the emulator recorded.

dofile(LUADIR .. "/mt-lib.lua")

local function send(mid, hdrs, body, rcpts)
  local h = {{"From", "Bob <bob@contoso.test>"}}
  for _, x in ipairs(hdrs) do h[#h + 1] = x end
  h[#h + 1] = {"Message-ID", "<" .. mid .. "@contoso.test>"}
  local conn = connect()
  local stage = message(conn, {qid = string.upper(mid), from = "<bob@contoso.test>",
    rcpts = rcpts or {"<carol@contoso.test>"}, headers = h, body = body})
  check(stage == "eom", mid .. ": reaches end of message")
  expect(conn, SMFIR_DISCARD, mid .. ": sent through Graph")
  mt.disconnect(conn)
end

-- Issue 7.2: a bare CR in a header value is not a line break for Graph.
send("cr-subject", {{"To", "carol@contoso.test"},
  {"Subject", "hello\rBcc: evil@example.net"}}, "body\r\n")
send("cr-xhdr", {{"X-Note", "a\rCc: evil@example.net"},
  {"Subject", "x"}}, "body\r\n")
send("cr-comment", {{"To", "carol@contoso.test (c\rBcc: evil@example.net)"},
  {"Subject", "comment"}}, "body\r\n")
send("cr-cr", {{"X-Early", "a\r\r"}, {"Subject", "cr cr"}}, "body\r\n")
-- Issue 7.10: white space before the colon.
send("to-space", {{"To ", "carol@contoso.test"}, {"Subject", "to space"}},
  "body\r\n")
-- Issue 8.2: a repeated address is kept as written.
send("dup", {{"To", "carol@contoso.test, Carol <carol@contoso.test>"},
  {"Cc", "dan@contoso.test, carol@contoso.test"}, {"Subject", "dup"}},
  "body\r\n", {"<carol@contoso.test>", "<dan@contoso.test>"})
-- Issue 8.7 (no body) cannot be driven from here: miltertest sends a
-- dummy body when a script sends none; tests/unit/test_msg.c covers it.

done()

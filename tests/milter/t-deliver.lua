-- t-deliver.lua - m365-milter in deliver mode, against the M365 emulator
--
-- Globals (miltertest -D): SOCK, LUADIR, EMU_URL, CA_FILE, STATE (the
-- state_dir, to clear Retry-After state), SOCK_ALL (a second milter
-- with the same configuration but no deliver_domains).  The configuration
-- (t-deliver.sh): mode = deliver, deliver_domains = contoso.test
-- .graph.test, on_account_offline = reject, memory_limit = 1K (bodies
-- over 1 KB are spooled), accounts from tests/lib.sh write_conf: "app"
-- (client secret, mailbox bob@contoso.test, senders @contoso.test,
-- default) and "deleg" (delegated, alice@contoso.test, never signed in).
-- The wrapper checks what the emulator recorded and the log afterwards.

dofile(LUADIR .. "/mt-lib.lua")

-- emu(method, path, json) - call the emulator's control API
local function emu(method, path, json)
  local cmd = "curl -sS --noproxy '*' --fail --cacert '" .. CA_FILE .. "' -X " ..
    method .. " -H 'Content-Type: application/json'"
  if json then cmd = cmd .. " --data-binary '" .. json .. "'" end
  cmd = cmd .. " '" .. EMU_URL .. path .. "' >/dev/null"
  local ok = os.execute(cmd)
  if not ok then
    fail("emulator call " .. method .. " " .. path)
    error("emulator control failed")
  end
end

local function clear_throttle()
  os.execute("rm -f '" .. STATE .. "'/throttle/* 2>/dev/null")
end

local function headers(subject, from)
  return {
    {"From", from or "Bob <bob@contoso.test>"},
    {"To", "Carol <carol@contoso.test>, Dave <dave@sub.graph.test>, local@mta.test"},
    {"Subject", subject},
    {"Date", "Sat, 28 Nov 2026 10:00:00 +0000"},
    {"Message-ID", "<" .. subject .. "@contoso.test>"},
    {"MIME-Version", "1.0"},
    {"Content-Type", "text/plain; charset=us-ascii"},
  }
end

-- A 20 KB body: spooled to a file (memory_limit = 1K).
local body = ""
for i = 1, 400 do
  body = body .. string.format("line %04d of the deliver-mode test body ..........\r\n", i)
end

-- to_carol(qid, body) - a message from bob to carol alone; its subject
-- (and Message-ID) is qid in lower case
local function to_carol(qid, body)
  return {qid = qid, from = "<bob@contoso.test>", rcpts = {"<carol@contoso.test>"},
    headers = headers(string.lower(qid)), body = body}
end

local conn, stage

-------------------------------------------------------- all recipients by Graph
conn = connect()
check(mt.test_action(conn, SMFIF_DELRCPT), "negotiated: delete recipient")
stage = message(conn, {qid = "DLV1", from = "<bob@contoso.test>",
  rcpts = {"<carol@contoso.test>", "<dave@sub.graph.test>"},
  headers = headers("dlv1"), body = body})
check(stage == "eom", "all-Graph message reaches end of message")
expect(conn, SMFIR_DISCARD, "sent through Graph, no recipient left: discarded")
check(mt.eom_check(conn, MT_RCPTDELETE, "<carol@contoso.test>"), "carol removed")
check(mt.eom_check(conn, MT_RCPTDELETE, "<dave@sub.graph.test>"),
  "dave (subdomain of .graph.test) removed")
mt.disconnect(conn)

----------------------------------------------------------- mixed recipients
conn = send({qid = "DLV2", from = "<bob@contoso.test>",
  rcpts = {"<carol@contoso.test>", "<local@mta.test>"},
  headers = headers("dlv2"), body = "mixed\r\n"},
  SMFIR_CONTINUE, "mixed: message continues to the MTA")
check(mt.eom_check(conn, MT_RCPTDELETE, "<carol@contoso.test>"), "mixed: carol removed")
check(not mt.eom_check(conn, MT_RCPTDELETE, "<local@mta.test>"),
  "mixed: local@mta.test stays for the MTA")
mt.disconnect(conn)

-- No recipient for Graph: the MTA gets it all, Graph is not asked.
conn = send({qid = "DLV3", from = "<bob@contoso.test>",
  rcpts = {"<local@mta.test>"}, headers = headers("dlv3"), body = "local\r\n"},
  SMFIR_CONTINUE, "no Graph recipient: continues")
check(not mt.eom_check(conn, MT_RCPTDELETE, "<local@mta.test>"), "no recipient removed")
mt.disconnect(conn)

------------------------------------------------- transient failure, then retry
emu("POST", "/_emu/faults", '[{"match": "sendMail", "status": 503, ' ..
  '"code": "ServiceUnavailable", "message": "The service is busy.", "count": 1}]')
conn = send(to_carol("DLV4", "retry me\r\n"),
  SMFIR_REPLYCODE, "Graph 503: temporary failure reply")
check(not mt.eom_check(conn, MT_RCPTDELETE, "<carol@contoso.test>"),
  "503: recipient not removed")
mt.disconnect(conn)
clear_throttle()
-- The client tries again after the fault cleared: delivered once.
conn = send(to_carol("DLV4", "retry me\r\n"),
  SMFIR_DISCARD, "retry after the fault: sent, discarded")
mt.disconnect(conn)

-------------------------------------------------------- permanent failure
emu("POST", "/_emu/faults", '[{"match": "sendMail", "status": 400, ' ..
  '"code": "ErrorInvalidRecipients", "message": "At least one recipient is not valid.", "count": 1}]')
conn = send(to_carol("DLV5", "bad rcpt\r\n"),
  SMFIR_REPLYCODE, "ErrorInvalidRecipients: permanent failure reply")
check(not mt.eom_check(conn, MT_RCPTDELETE, "<carol@contoso.test>"),
  "permanent failure: recipient not removed")
mt.disconnect(conn)

---------------------------------------------------- 202 with Retry-After
emu("POST", "/_emu/faults", '[{"match": "sendMail", "action": "accept_retry_after", ' ..
  '"retry_after": 30, "count": 1}]')
conn = send(to_carol("DLV6", "accepted\r\n"),
  SMFIR_DISCARD, "202 + Retry-After: success, discarded")
check(mt.eom_check(conn, MT_RCPTDELETE, "<carol@contoso.test>"), "202 + Retry-After: carol removed")
mt.disconnect(conn)
-- The mailbox now waits: the next message is deferred without asking Graph.
conn = send(to_carol("DLV7", "wait\r\n"),
  SMFIR_REPLYCODE, "during Retry-After: temporary failure")
mt.disconnect(conn)
clear_throttle()

------------------------------------------------------------- account offline
conn = send({qid = "DLV8", from = "<alice@contoso.test>",
  rcpts = {"<carol@contoso.test>"},
  headers = headers("dlv8", "Alice <alice@contoso.test>"), body = "offline\r\n"},
  SMFIR_REPLYCODE, "account offline: on_account_offline = reject")
check(mt.eom_check(conn, MT_SMTPREPLY, "550", "5.7.0",
  "account deleg has not signed in yet: run m365ctl login deleg"),
  "offline reply: 550 5.7.0 with the remedy")
mt.disconnect(conn)

--------------------------------------------- slow Graph: progress replies
-- The milter on SOCK runs with M365_MILTER_PROGRESS_INTERVAL=1 (t-deliver.sh).
-- Graph answers sendMail after 7 s; miltertest gives up on a milter that
-- stays silent for 4 s (like an MTA's milter timeout), so the message
-- only gets through when progress replies keep the connection alive.
emu("POST", "/_emu/faults", '[{"match": "sendMail", "action": "slow", ' ..
  '"delay": 7, "count": 1}]')
mt.set_timeout(4)
conn = connect()
stage = message(conn, to_carol("DLV10", "slow\r\n"))
check(stage == "eom", "slow Graph: end of message answered within the 4 s timeout")
expect(conn, SMFIR_DISCARD, "slow Graph (7 s): sent, discarded")
check(mt.eom_check(conn, MT_RCPTDELETE, "<carol@contoso.test>"), "slow Graph: carol removed")
mt.disconnect(conn)
mt.set_timeout(10)

------------------------------------------- no deliver_domains, local name
-- SOCK_ALL: the same configuration without deliver_domains (every
-- recipient).  "<root>" (Sendmail passes local recipients so) has no
-- domain: Graph cannot deliver it, so it stays with the MTA and the
-- message is not discarded.
conn = send({qid = "DLV9", from = "<bob@contoso.test>", sock = SOCK_ALL,
  rcpts = {"<carol@contoso.test>", "<root>"}, headers = headers("dlv9"), body = "root too\r\n"},
  SMFIR_CONTINUE, "no deliver_domains, local name: continues to the MTA")
check(mt.eom_check(conn, MT_RCPTDELETE, "<carol@contoso.test>"), "carol sent and removed")
check(not mt.eom_check(conn, MT_RCPTDELETE, "<root>"), "<root> stays for the MTA")
mt.disconnect(conn)

done()

-- t-filter.lua - m365-milter in filter mode, driven by miltertest
--
-- Globals (miltertest -D): SOCK = milter with config A (unknown_sender =
-- accept, rewrite_sender, rewrite_from, add_reply_to, add_message_id,
-- message_id_domain = milter.test), SOCK_B = milter with config B
-- (unknown_sender = reject, no rewriting, add_message_id = no), LUADIR.
-- Accounts in both: "app" (mailbox bob@contoso.test, senders @app.test
-- and bob@contoso.test, max_message_size 2K), "big" (shared@contoso.test,
-- senders @big.test, default 35M).  No account is the default.
-- The shell wrapper t-filter.sh checks the log lines afterwards.

dofile(LUADIR .. "/mt-lib.lua")

local DATE = "Sat, 28 Nov 2026 10:00:00 +0000"

local function std_headers(from, extra)
  local h = {
    {"From", from},
    {"To", "Rcpt <rcpt@example.net>"},
    {"Subject", "milter test"},
    {"Date", DATE},
  }
  for _, x in ipairs(extra or {}) do table.insert(h, x) end
  return h
end

-- no_changes(conn, what) - nothing added, changed, inserted or deleted
local function no_changes(conn, what)
  check(not mt.eom_check(conn, MT_HDRADD), what .. ": no header added")
  check(not mt.eom_check(conn, MT_HDRINSERT), what .. ": no header inserted")
  check(not mt.eom_check(conn, MT_HDRCHANGE), what .. ": no header changed")
end

local conn, stage, m

----------------------------------------------------------------- unknown sender
conn = connect()
check(mt.test_action(conn, SMFIF_CHGFROM), "negotiated: change sender")
check(mt.test_action(conn, SMFIF_ADDHDRS), "negotiated: add header")
check(mt.test_action(conn, SMFIF_CHGHDRS), "negotiated: change header")
check(mt.test_option(conn, SMFIP_NOCONNECT), "negotiated: no connect step")
call("macro", mt.macro, conn, SMFIC_MAIL, "i", "UNK1")
call("mailfrom", mt.mailfrom, conn, "<nobody@unknown.test>")
expect(conn, SMFIR_ACCEPT, "A: unknown sender <nobody@unknown.test> accepted untouched")
mt.disconnect(conn)

-- Postfix non_smtpd_milters: the sender comes without angle brackets.
mail_only({from = "nobody@unknown.test"},
  SMFIR_ACCEPT, "A: bare unknown sender accepted untouched")

mail_only({qid = "UNK2", from = "<nobody@unknown.test>", sock = SOCK_B},
  SMFIR_REPLYCODE, "B: unknown sender rejected at MAIL FROM")

mail_only({from = "nobody@unknown.test", sock = SOCK_B},
  SMFIR_REPLYCODE, "B: bare unknown sender rejected at MAIL FROM")

-- A known sender, bare, under config B: accepted, nothing changed even
-- without a Message-ID (add_message_id = no, no rewriting).
conn = connect(SOCK_B)
stage = message(conn, {qid = "BKNOWN", from = "app@app.test",
  headers = std_headers("App <app@app.test>"), body = "hello\r\n"})
check(stage == "eom", "B: bare known sender passes MAIL FROM")
expect(conn, SMFIR_CONTINUE, "B: known sender continues at end of message")
no_changes(conn, "B: rewriting off")
mt.disconnect(conn)

----------------------------------------------------------------------- size
mail_only({qid = "SIZE1", from = "<s@app.test>", args = {"SIZE=5000", "BODY=8BITMIME"}},
  SMFIR_REPLYCODE, "SIZE=5000 over the account's 2K rejected at MAIL FROM")

-- Postfix has no queue id at MAIL FROM: the line must say NOQUEUE.
mail_only({from = "<s@app.test>", args = {"SIZE=2049"}},
  SMFIR_REPLYCODE, "SIZE=2049 rejected at MAIL FROM (no queue id yet)")

mail_only({from = "<s@app.test>", args = {"SIZE=1000"}},
  SMFIR_CONTINUE, "SIZE=1000 within 2K continues")

mail_only({from = "<s@big.test>", args = {"SIZE=5000"}},
  SMFIR_CONTINUE, "SIZE=5000 continues for the 35M account")

-- No SIZE=: the byte count at end of message decides.
local line = string.rep("x", 70) .. "\r\n"
m = {qid = "SIZE2", from = "<s@app.test>",
  headers = std_headers("S <s@app.test>", {{"Message-ID", "<big@app.test>"}}),
  body = string.rep(line, 40)}
conn = connect()
stage = message(conn, m)
check(stage == "eom", "oversized message without SIZE= reaches end of message")
expect(conn, SMFIR_REPLYCODE, "oversized message rejected at end of message")
local size = canon_size(m)
check(mt.eom_check(conn, MT_SMTPREPLY, "552", "5.3.4",
  "message size " .. size .. " exceeds the limit of 2048 bytes for <s@app.test>"),
  "reply is 552 5.3.4 with the byte count " .. size)
mt.disconnect(conn)

-- Just under the limit: accepted.
m = {qid = "SIZE3", from = "<s@app.test>",
  headers = std_headers("S <s@app.test>", {{"Message-ID", "<small@app.test>"}}),
  body = "short\r\n"}
conn = send(m,
  SMFIR_CONTINUE, "message under 2K continues (" .. canon_size(m) .. " bytes)")
mt.disconnect(conn)

------------------------------------------------------------------ rewriting
conn = send({qid = "RW1", from = "<app@app.test>",
  headers = std_headers("Billing Robot <app@app.test>"), body = "Invoice\r\n"},
  SMFIR_CONTINUE, "rewrite: message continues")
check(mt.eom_check(conn, MT_HDRCHANGE, "From", "Billing Robot <bob@contoso.test>"),
  "From: rewritten to the mailbox, display name kept")
check(mt.eom_check(conn, MT_HDRADD, "Reply-To", "Billing Robot <app@app.test>"),
  "Reply-To: the original From mailbox")
local mid = mt.getheader(conn, "Message-ID", 0)
check(mid ~= nil and string.match(mid, "^<" .. string.rep("%x", 32) .. "@milter%.test>$") ~= nil,
  "Message-ID added: " .. tostring(mid))
check(mt.getheader(conn, "Message-ID", 1) == nil, "only one Message-ID added")
check(mt.getheader(conn, "Reply-To", 1) == nil, "only one Reply-To added")
check(not mt.eom_check(conn, MT_HDRADD, "X-Mailer") and not mt.eom_check(conn, MT_HDRINSERT),
  "no other header added or inserted")
check(not mt.eom_check(conn, MT_HDRDELETE), "no header deleted")
mt.disconnect(conn)

-- Quoted display name with a comma; a Reply-To already there stays.
conn = send({qid = "RW2", from = "<app@app.test>",
  headers = std_headers("\"Robot, Billing\" <app@app.test>",
    {{"Reply-To", "help@app.test"}, {"Message-ID", "<rw2@app.test>"}}),
  body = "x\r\n"},
  SMFIR_CONTINUE, "rewrite 2: message continues")
check(mt.eom_check(conn, MT_HDRCHANGE, "From", "\"Robot, Billing\" <bob@contoso.test>"),
  "From: quoted display name kept")
check(not mt.eom_check(conn, MT_HDRADD, "Reply-To"), "existing Reply-To: kept, none added")
check(not mt.eom_check(conn, MT_HDRADD, "Message-ID"), "existing Message-ID: no new one")
check(not mt.eom_check(conn, MT_HDRADD), "no header added at all")
mt.disconnect(conn)

-- A bare From: address: no display name to keep.
conn = send({qid = "RW3", from = "app@app.test",
  headers = std_headers("app@app.test", {{"Message-ID", "<rw3@app.test>"}}),
  body = "x\r\n"},
  SMFIR_CONTINUE, "rewrite 3: message continues")
check(mt.eom_check(conn, MT_HDRCHANGE, "From", "bob@contoso.test"),
  "bare From: becomes the bare mailbox")
check(mt.eom_check(conn, MT_HDRADD, "Reply-To", "app@app.test"),
  "Reply-To: the bare original address")
mt.disconnect(conn)

-- Already the mailbox, Message-ID present: nothing at all changes.
conn = send({qid = "RW4", from = "<bob@contoso.test>",
  headers = std_headers("Bob <bob@contoso.test>", {{"Message-ID", "<rw4@contoso.test>"}}),
  body = "x\r\n"},
  SMFIR_CONTINUE, "mailbox sender: message continues")
no_changes(conn, "mailbox sender with Message-ID")
mt.disconnect(conn)

-- "addr (Name)": the old way of writing a display name; the comment stays.
conn = send({qid = "RW5", from = "<app@app.test>",
  headers = std_headers("app@app.test (Billing Robot)", {{"Message-ID", "<rw5@app.test>"}}),
  body = "x\r\n"},
  SMFIR_CONTINUE, "rewrite 5: message continues")
check(mt.eom_check(conn, MT_HDRCHANGE, "From", "bob@contoso.test (Billing Robot)"),
  "From: addr (Name): the comment display name is kept")
check(mt.eom_check(conn, MT_HDRADD, "Reply-To", "app@app.test (Billing Robot)"),
  "Reply-To: the original mailbox with its comment")
mt.disconnect(conn)

-- RFC 2047 encoded-word display name: kept as written (never decoded).
conn = send({qid = "RW6", from = "<app@app.test>",
  headers = std_headers("=?UTF-8?B?w4RwcA==?= <app@app.test>", {{"Message-ID", "<rw6@app.test>"}}),
  body = "x\r\n"},
  SMFIR_CONTINUE, "rewrite 6: message continues")
check(mt.eom_check(conn, MT_HDRCHANGE, "From", "=?UTF-8?B?w4RwcA==?= <bob@contoso.test>"),
  "From: encoded-word display name kept")
mt.disconnect(conn)

-- A From: without any domain ("root", as cron writes it): rewritten, but
-- no Reply-To: that would send replies to a bare local name.
conn = send({qid = "RW7", from = "<app@app.test>",
  headers = std_headers("root", {{"Message-ID", "<rw7@app.test>"}}),
  body = "x\r\n"},
  SMFIR_CONTINUE, "rewrite 7: message continues")
check(mt.eom_check(conn, MT_HDRCHANGE, "From", "bob@contoso.test"),
  "From: root becomes the mailbox")
check(not mt.eom_check(conn, MT_HDRADD, "Reply-To"), "no Reply-To: root added")
mt.disconnect(conn)

-- An unparseable From: (unbalanced quote) is left alone, with a warning.
conn = send({qid = "BADFROM", from = "<app@app.test>",
  headers = std_headers("\"Billing <app@app.test>", {{"Message-ID", "<bad@app.test>"}}),
  body = "x\r\n"},
  SMFIR_CONTINUE, "unparseable From: message continues")
check(not mt.eom_check(conn, MT_HDRCHANGE, "From"), "unparseable From: not changed")
check(not mt.eom_check(conn, MT_HDRADD, "Reply-To"), "unparseable From: no Reply-To")
mt.disconnect(conn)

-- SIZE= larger than a long: still "too large", not ignored.
mail_only({qid = "SIZEHUGE", from = "<s@app.test>", args = {"SIZE=99999999999999999999"}},
  SMFIR_REPLYCODE, "SIZE=99999999999999999999 (overflows a long) rejected at MAIL FROM")

-- SIZE= that is not a number: left to the MTA, the byte count decides.
mail_only({from = "<s@app.test>", args = {"SIZE=12abc"}},
  SMFIR_CONTINUE, "SIZE=12abc ignored (the MTA checks the syntax)")

---------------------------------------------------------- Message-ID stability
local function mid_of(qid, body)
  local c = connect()
  message(c, {qid = qid, from = "<bob@contoso.test>",
    headers = std_headers("Bob <bob@contoso.test>"), body = body})
  local v = mt.getheader(c, "Message-ID", 0)
  mt.disconnect(c)
  return v
end
local m1 = mid_of("STABLE1", "same body\r\n")
local m2 = mid_of("STABLE1", "same body\r\n")
local m3 = mid_of("STABLE1", "other body\r\n")
local m4 = mid_of("STABLE2", "same body\r\n")
check(m1 ~= nil and m1 == m2, "same message, same Message-ID: " .. tostring(m1))
check(m3 ~= nil and m3 ~= m1, "other body, other Message-ID")
check(m4 ~= nil and m4 ~= m1, "other queue id, other Message-ID")

------------------------------------------------- queue id re-read at end of message
conn = send({qid_rcpt = "LATEQID7", from = "<bob@contoso.test>",
  headers = std_headers("Bob <bob@contoso.test>", {{"Message-ID", "<late@contoso.test>"}}),
  body = "x\r\n"},
  SMFIR_CONTINUE, "queue id known only after RCPT: message continues")
mt.disconnect(conn)

-- Two messages on one connection: per-message state is reset.
conn = send({qid = "TWO1", from = "<app@app.test>",
  headers = std_headers("A <app@app.test>"), body = "1\r\n"},
  SMFIR_CONTINUE, "first of two messages on one connection")
stage = message(conn, {qid = "TWO2", from = "<bob@contoso.test>",
  headers = std_headers("Bob <bob@contoso.test>", {{"Message-ID", "<two2@contoso.test>"}}),
  body = "2\r\n"})
expect(conn, SMFIR_CONTINUE, "second message on the same connection")
no_changes(conn, "second message (nothing left over from the first)")
mt.disconnect(conn)

-- An aborted message, then a normal one.
conn = connect()
call("mailfrom", mt.mailfrom, conn, "<app@app.test>")
call("rcptto", mt.rcptto, conn, "<r@example.net>")
call("abort", mt.abort, conn)
stage = message(conn, {qid = "AFTERABORT", from = "<bob@contoso.test>",
  headers = std_headers("Bob <bob@contoso.test>", {{"Message-ID", "<ab@contoso.test>"}}),
  body = "2\r\n"})
expect(conn, SMFIR_CONTINUE, "message after an abort continues")
mt.disconnect(conn)

done()

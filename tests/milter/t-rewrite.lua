-- t-rewrite.lua - rewrite_sender never gets a 250 for mail the relay
-- cannot send (issue 8.1)
--
-- Globals (miltertest -D): SOCK (filter mode, rewrite_sender = yes,
-- rewrite_from = yes), LUADIR.  Accounts (t-rewrite.sh): "cert" (mailbox
-- bob@contoso.test, senders *@cert.example, no default account), "small"
-- (mailbox shared@contoso.test, senders @small.test, max_message_size
-- 2K) and "big" (the same mailbox, senders @big.test, 35M).
-- The shell wrapper then hands the rewritten message to m365-relay.

dofile(LUADIR .. "/mt-lib.lua")

local DATE = "Sat, 28 Nov 2026 10:00:00 +0000"

local function headers(from, subject)
  return {
    {"From", from},
    {"To", "Rcpt <rcpt@example.net>"},
    {"Subject", subject},
    {"Date", DATE},
    {"Message-ID", "<" .. subject .. "@cert.example>"},
  }
end

local conn, stage

-- The issue's setup: the account's patterns do not cover its own mailbox
-- and there is no default account.  The milter accepts and rewrites the
-- sender to bob@contoso.test; the relay must send for that sender (the
-- wrapper checks it with m365-relay against the emulator).
conn = connect()
stage = message(conn, {qid = "RWC1", from = "<app@cert.example>",
  headers = headers("Cert App <app@cert.example>", "rwc1"),
  body = "rewritten sender\r\n"})
check(stage == "eom", "cert.example sender reaches end of message")
expect(conn, SMFIR_CONTINUE, "rewritten message continues")
check(mt.eom_check(conn, MT_HDRCHANGE, "From", "Cert App <bob@contoso.test>"),
  "From: rewritten to the account's mailbox")
mt.disconnect(conn)

-- Two accounts share one mailbox: mail from @big.test is rewritten to
-- shared@contoso.test, which the relay sends through "small" (the first
-- account with that mailbox), limit 2K.  A 5K message must not get a
-- 250 that ends in a bounce to shared@contoso.test.
local line = string.rep("y", 70) .. "\r\n"
local big = {qid = "RWS1", from = "<u@big.test>",
  headers = headers("U <u@big.test>", "rws1"), body = string.rep(line, 70)}
conn = connect()
stage = message(conn, big)
check(stage == "eom", "big.test sender (35M account) reaches end of message")
expect(conn, SMFIR_REPLYCODE, "over the relay account's 2K: rejected at end of message")
check(mt.eom_check(conn, MT_SMTPREPLY, "552", "5.3.4",
  "message size " .. canon_size(big) .. " exceeds the limit of 2048 bytes "
  .. "for <u@big.test> (account small, which sends for the rewritten sender "
  .. "<shared@contoso.test>)"),
  "552 5.3.4 names the account that would send it")
mt.disconnect(conn)

-- Under the limit: continues, rewritten.
conn = send({qid = "RWS2", from = "<u@big.test>",
  headers = headers("U <u@big.test>", "rws2"), body = "small\r\n"},
  SMFIR_CONTINUE, "under 2K: continues")
mt.disconnect(conn)

done()

-- t-warm.lua - send N messages through m365-milter in deliver mode, each
-- on its own milter connection (as Postfix opens one per SMTP session)
--
-- Globals (miltertest -D): SOCK, LUADIR, N (messages), TAG (subject
-- prefix: subjects TAG-1 .. TAG-N, the queue id in upper case), WANT
-- ("discard": every message must be delivered; "tempfail": every one
-- must be deferred), SIZE (body bytes, about; default 10240).
-- t-warm.sh checks the emulator's records and connection counter.

dofile(LUADIR .. "/mt-lib.lua")

local n = tonumber(N or "1")
local size = tonumber(SIZE or "10240")
-- A tempfail comes with its 451 text: a reply code.
local want = ({discard = SMFIR_DISCARD, tempfail = SMFIR_REPLYCODE})[WANT or "discard"]

local line = "warm connection test body line ......................................\r\n"
local body = string.rep(line, math.max(1, size // #line))

for i = 1, n do
  local subj = string.lower(TAG) .. "-" .. i
  local conn = send({qid = string.upper(TAG) .. "X" .. i, from = "<bob@contoso.test>",
    rcpts = {"<carol@contoso.test>"},
    headers = {
      {"From", "Bob <bob@contoso.test>"},
      {"To", "Carol <carol@contoso.test>"},
      {"Subject", subj},
      {"Date", "Sat, 28 Nov 2026 10:00:00 +0000"},
      {"Message-ID", "<" .. subj .. "@contoso.test>"},
      {"MIME-Version", "1.0"},
      {"Content-Type", "text/plain; charset=us-ascii"},
    }, body = body}, want, subj .. ": " .. (WANT or "discard"))
  mt.disconnect(conn)
end
done()

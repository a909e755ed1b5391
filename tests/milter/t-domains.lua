-- t-domains.lua - deliver mode: the recipients the milter sends through
-- Graph follow conf_milter_delivers() (see t-domains.sh)
--
-- Globals (miltertest -D): SOCK (deliver_domains = contoso.test
-- .graph.test), SOCK_ALL (no deliver_domains), LUADIR.

dofile(LUADIR .. "/mt-lib.lua")

local function headers(subject)
  return {
    {"From", "Bob <bob@contoso.test>"},
    {"To", "Carol <carol@contoso.test>"},
    {"Subject", subject},
    {"Date", "Sat, 28 Nov 2026 10:00:00 +0000"},
    {"Message-ID", "<" .. subject .. "@contoso.test>"},
  }
end

-- sent(conn, rcpt, want) - was rcpt removed (sent through Graph)?
local function sent(conn, rcpt, want)
  local got = mt.eom_check(conn, MT_RCPTDELETE, rcpt)
  check(got == want, rcpt .. (want and " sent through Graph and removed"
                              or " stays with the MTA"))
end

local conn, stage

------------------------------------------------ deliver_domains listed
conn = connect()
stage = message(conn, {qid = "DOM1", from = "<bob@contoso.test>",
  rcpts = {"<carol@contoso.test.>", "<dave@SUB.Graph.Test>",
           "<eve@contoso.test.evil>", "<frank@graph.test>",
           "<gina@evilcontoso.test>", "<root>"},
  headers = headers("dom1"), body = "domains\r\n"})
check(stage == "eom", "listed domains: end of message reached")
expect(conn, SMFIR_CONTINUE, "listed domains: the MTA keeps the rest")
sent(conn, "<carol@contoso.test.>", true)	-- absolute form
sent(conn, "<dave@SUB.Graph.Test>", true)	-- .graph.test, any case
sent(conn, "<eve@contoso.test.evil>", false)
sent(conn, "<frank@graph.test>", false)		-- ".sub" is not the parent
sent(conn, "<gina@evilcontoso.test>", false)
sent(conn, "<root>", false)
mt.disconnect(conn)

------------------------------------------------ deliver_domains unset
conn = connect(SOCK_ALL)
stage = message(conn, {qid = "DOM2", from = "<bob@contoso.test>",
  rcpts = {"<carol@contoso.test.>", "<postmaster>", "<a@.>"},
  headers = headers("dom2"), body = "all\r\n"})
check(stage == "eom", "unset: end of message reached")
expect(conn, SMFIR_CONTINUE, "unset: the MTA keeps the local names")
sent(conn, "<carol@contoso.test.>", true)
sent(conn, "<postmaster>", false)
sent(conn, "<a@.>", false)
mt.disconnect(conn)

done()

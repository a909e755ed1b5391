#!/usr/bin/env python3
"""m365emu - a small Microsoft 365 emulator for the m365relay tests.

It speaks just enough of the Microsoft identity platform (v2.0 token,
devicecode and authorize endpoints) and of Microsoft Graph (/users,
/me, sendMail in MIME and JSON form, mailboxes, drafts with attachments
and upload sessions, send of a draft) over HTTPS for the relay and
m365ctl to be tested end to end, and it records what it received so
tests can assert the exact recipients and MIME bytes.  Faults (429,
503, 202 + Retry-After, connection reset after the body, slow answers,
token endpoint errors with real AADSTS bodies) are injected through a
control API under /_emu.  See tests/emulator/README.md.

Usage:
  m365emu.py --port PORT --cert server.pem --key server.key \
             --data DIR --config emu.json [--host 127.0.0.1]

Python 3 standard library only.  Loopback use only: the control API
has no authentication.
"""

import argparse
import base64
import binascii
import datetime
import email.header
import email.message
import email.parser
import email.policy
import email.utils
import hashlib
import html
import json
import os
import re
import secrets
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_GRAPH_BODY = 4194304        # Graph's 4 MB request limit
# Fault kinds of the mailbox endpoints and their /_emu/stats counters.
MAIL_KINDS = {"mailFolders": "mailfolders_requests",
              "message": "message_requests", "delta": "delta_requests",
              "value": "value_requests", "patch": "patch_requests",
              "move": "move_requests", "delete": "delete_requests",
              "draft": "draft_requests", "attachment": "attachment_requests",
              "createUploadSession": "createuploadsession_requests",
              "upload": "upload_requests", "send": "send_requests"}
# Upload sessions (outlook-large-attachments; README "Drafts, attachments
# and upload sessions"); each can be changed in emu.json or /_emu/config.
UPLOAD_DEFAULTS = {"upload_session_min": 3000000,      # "3 MB"
                   "upload_session_max": 157286400,    # "150 MB"
                   "upload_chunk_max": 4194304,        # "less than 4 MB"
                   "upload_session_lifetime": 900}     # modelled
OUTLOOK_HOSTS = {"graph.microsoft.com": "outlook.office.com"}
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
OIDC_SCOPES = {"openid", "profile", "email", "offline_access"}

# Texts of the AADSTS codes the emulator produces (from Microsoft's
# error-code reference; shortened where Microsoft's are very long).
AADSTS_TEXT = {
    50011: "The redirect URI '{detail}' specified in the request does not "
           "match the redirect URIs configured for the application.",
    50173: "The provided grant has expired due to it being revoked, a fresh "
           "auth token is needed. The user might have changed or reset "
           "their password. The grant was issued on '{detail}' and the "
           "TokensValidFrom date (before which tokens are not valid) for "
           "this user is '{detail2}'.",
    54005: "OAuth2 Authorization code was already redeemed, please retry "
           "with a new valid code or use an existing refresh token.",
    65001: "The user or administrator has not consented to use the "
           "application with ID '{detail}'. Send an interactive "
           "authorization request for this user and resource.",
    65004: "User declined to consent to access the app.",
    70000: "The provided value for the input parameter '{detail}' is not "
           "valid.",
    70003: "The app requested an unsupported grant type '{detail}'.",
    70008: "The provided authorization code or refresh token has expired "
           "due to inactivity. Send a new interactive authorization "
           "request for this user and resource.",
    70016: "OAuth 2.0 device flow error. Authorization is pending. Continue "
           "polling.",
    70018: "Invalid verification code was entered.",
    70019: "Verification code expired.",
    70043: "The refresh token has expired or is invalid due to sign-in "
           "frequency checks by conditional access.",
    90002: "Tenant '{detail}' not found. Check to make sure you have the "
           "correct tenant ID and are signing into the correct cloud.",
    90014: "The required field '{detail}' is missing from the credential. "
           "Ensure that you have all the necessary parameters for the "
           "login request.",
    700016: "Application with identifier '{detail}' was not found in the "
            "directory '{detail2}'. This can happen if the application has "
            "not been installed by the administrator of the tenant or "
            "consented to by any user in the tenant. You may have sent "
            "your authentication request to the wrong tenant.",
    700025: "Client is public so neither 'client_assertion' nor "
            "'client_secret' should be presented.",
    700027: "Client assertion failed signature validation. ({detail})",
    700082: "The refresh token has expired due to inactivity. The token was "
            "issued on {detail} and was inactive for 90.00:00:00.",
    7000215: "Invalid client secret provided. Ensure the secret being sent "
             "in the request is the client secret value, not the client "
             "secret ID, for a secret added to app '{detail}'.",
    7000218: "The request body must contain the following parameter: "
             "'client_assertion' or 'client_secret'.",
    9001023: "The grant type isn't supported over the /common or "
             "/consumers endpoints. Please use the /organizations or "
             "tenant-specific endpoint.",
    900144: "The request body must contain the following parameter: "
            "'{detail}'.",
    1002012: "The provided value for scope {detail} is not valid. Client "
             "credential flows must have a scope value with /.default "
             "suffixed to the resource identifier (application ID URI).",
    9002313: "Invalid request. Request is malformed or invalid.",
    501481: "The Code_Verifier does not match the code_challenge supplied "
            "in the authorization request.",
    90024: "RequestBudgetExceededError: Too many requests.",
    50196: "The server terminated an operation because it encountered a "
           "client request loop.",
}

# Default Graph error codes/messages for injected faults by status.
GRAPH_FAULT_DEFAULTS = {
    400: ("BadRequest", "The request is malformed or incorrect."),
    401: ("InvalidAuthenticationToken",
          "Access token has expired or is not yet valid."),
    403: ("ErrorSendAsDenied",
          "The user account which was used to submit this request does not "
          "have the right to send mail on behalf of the specified sending "
          "account., Cannot submit message."),
    404: ("ErrorInvalidUser", "The requested user is invalid."),
    413: ("RequestEntityTooLarge",
          "The maximum request length supported is 4MB."),
    429: ("ApplicationThrottled",
          "Application is over its MailboxConcurrency limit."),
    500: ("ErrorInternalServerError",
          "An internal server error occurred. The operation failed."),
    502: ("UnknownError", ""),
    503: ("ErrorServerBusy", "The server is busy. Try again later."),
    504: ("UnknownError", ""),
}

SEND_AS_DENIED = GRAPH_FAULT_DEFAULTS[403][1]


def utcnow():
    """utcnow - timezone-aware current UTC time"""
    return datetime.datetime.now(datetime.timezone.utc)


def iso_time(t=None):
    """iso_time - ISO 8601 UTC timestamp"""
    return (t or utcnow()).strftime("%Y-%m-%dT%H:%M:%SZ")


def b64url_decode(s):
    """b64url_decode - decode base64url without padding (strict)"""
    if not isinstance(s, str) or any(c in s for c in "+/= \t\r\n"):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64url(data):
    """b64url - base64url without padding"""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def short_scope(scope):
    """short_scope - 'https://graph.microsoft.com/Mail.Send' -> 'mail.send'"""
    return scope.rsplit("/", 1)[-1].lower()


class EmuError(Exception):
    """A request failed with an identity or Graph error response."""

    def __init__(self, status, body, headers=None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def aad_error(status, error, code, detail="", detail2="", text=None,
              correlation_id=None):
    """aad_error - an EmuError with an identity-platform error body"""
    now = utcnow()
    trace_id = str(uuid.uuid4())
    corr = correlation_id or str(uuid.uuid4())
    if code:
        msg = text or AADSTS_TEXT.get(code, "Error.")
        msg = msg.format(detail=detail, detail2=detail2)
        desc = "AADSTS%d: %s" % (code, msg)
    else:
        desc = text or error
    desc += "\r\nTrace ID: %s\r\nCorrelation ID: %s\r\nTimestamp: %s" % (
        trace_id, corr, now.strftime("%Y-%m-%d %H:%M:%SZ"))
    body = {"error": error, "error_description": desc,
            "error_codes": [code] if code else [],
            "timestamp": now.strftime("%Y-%m-%d %H:%M:%SZ"),
            "trace_id": trace_id, "correlation_id": corr}
    if code:
        body["error_uri"] = ("https://login.microsoftonline.com/error?code=%d"
                             % code)
    return EmuError(status, body)


def graph_error(status, code, message, request_id, client_request_id,
                headers=None):
    """graph_error - an EmuError with a Graph error body"""
    body = {"error": {"code": code, "message": message,
                      "innerError": {"date": iso_time(),
                                     "request-id": request_id,
                                     "client-request-id": client_request_id}}}
    return EmuError(status, body, headers)


class State:
    """All mutable emulator state; every access holds self.lock."""

    def __init__(self, config, data_dir):
        self.lock = threading.RLock()
        self.config = config
        self.data_dir = data_dir
        self.sent_dir = os.path.join(data_dir, "sent")
        os.makedirs(self.sent_dir, exist_ok=True)
        self.log_path = os.path.join(data_dir, "requests.log")
        self.pubkey_cache = {}
        self.spool_dir = os.path.join(data_dir, "mailboxes")
        os.makedirs(self.spool_dir, exist_ok=True)
        # Attachments of drafts and the bytes of open upload sessions live
        # in files: a 150 MB upload is never held in memory.
        self.attach_dir = os.path.join(data_dir, "attachments")
        os.makedirs(self.attach_dir, exist_ok=True)
        self.mailboxes = {}         # upn -> Mailbox
        self.delta_sessions = {}    # $skiptoken -> paging state
        self.uploads = {}           # upload session id -> session dict
        self.inflight = {}          # upn -> requests being served now
        self.upload_log = {}        # upn -> [(time, bytes)] of uploads
        self.pending = []           # [(due, fn)]: Sent Items copies to file
        self.reset(tokens=True)

    def reset(self, tokens=False, mailboxes=False):
        """reset - clear sent messages, stats and faults (tokens and
        mailboxes too)"""
        with self.lock:
            self.sent = []
            self.seq = 0
            for name in os.listdir(self.sent_dir):
                os.unlink(os.path.join(self.sent_dir, name))
            if mailboxes:
                for sess in self.uploads.values():
                    unlink_all([sess["path"]])
                self.uploads = {}
            for mb in self.mailboxes.values():
                if mailboxes:
                    mb.clear()
                    continue
                for mid in [k for k, m in mb.msgs.items()
                            if m["path"].startswith(self.sent_dir)]:
                    mb.remove(mid)      # Sent Items copies of sendMail
            self.faults = []
            self.pending = []
            self.stats = {"requests": 0, "token_requests": 0, "by_grant": {},
                          "sendmail_requests": 0, "sendmail_accepted": 0,
                          "users_requests": 0, "devicecode_requests": 0,
                          "authorize_requests": 0, "drafts_created": 0,
                          "drafts_sent": 0, "upload_bytes": 0,
                          "upload_bytes_sessions": 0,
                          "max_concurrent": {}, "max_upload_window": {},
                          "concurrency_throttled": 0,
                          "sentitems_lookups": 0, "connections": 0,
                          "connections_open": getattr(self, "conn_open", 0)}
            self.upload_log = {}
            for kind in MAIL_KINDS:
                self.stats[MAIL_KINDS[kind]] = 0
            if tokens:
                self.access = {}      # token -> info
                self.refresh = {}     # token -> info
                self.devices = {}     # device_code -> info
                self.codes = {}       # authorization code -> info

    # --- configuration helpers ---------------------------------------

    def cfg(self, key, default=None):
        with self.lock:
            return self.config.get(key, default)

    def app(self, client_id):
        with self.lock:
            return self.config.get("apps", {}).get(client_id)

    def user(self, ident):
        """user - (upn, info) for a UPN, mail address or object id"""
        ident = urllib.parse.unquote(ident).strip().lower()
        with self.lock:
            for upn, info in self.config.get("users", {}).items():
                if ident in (upn.lower(), user_id(upn),
                             str(info.get("mail", "")).lower()):
                    return upn.lower(), info
        return None, None

    def tenant_ok(self, tenant, delegated=True):
        names = {str(self.cfg("tenant", "")).lower(),
                 str(self.cfg("tenant_id", "")).lower()}
        if delegated:
            names |= {"organizations", "common"}
        return tenant.lower() in names

    def log_request(self, method, path, status):
        line = "%s %s %s %s\n" % (iso_time(), method, path, status)
        with self.lock:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(line)

    # --- mailboxes ---------------------------------------------------

    def mbox(self, upn):
        """mbox - the Mailbox of a configured user (made on first use)"""
        with self.lock:
            mb = self.mailboxes.get(upn)
            if mb is None:
                mb = self.mailboxes[upn] = Mailbox(upn, self.spool_dir)
            return mb

    def spool_path(self):
        """spool_path - a new file name for MIME bytes"""
        return os.path.join(self.spool_dir, uuid.uuid4().hex + ".eml")

    def drop_message(self, mb, mid):
        """drop_message - remove a message for good (and its files)"""
        msg = mb.remove(mid)
        unlink_all(message_files(msg))
        self.close_sessions(msg, "orphaned")

    def close_sessions(self, msg, why):
        """close_sessions - end the open upload sessions of a message
        (sent, deleted): their uploadUrl answers 404 from now on"""
        with self.lock:
            for sess in self.uploads.values():
                if sess["message"] == msg.get("immutableId") and \
                        sess["state"] == "open":
                    sess["state"] = why
                    unlink_all([sess["path"]])

    def mailbox_json(self, mb):
        """mailbox_json - GET /_emu/mailbox/{mb}"""
        out = []
        for f in mb.folders.values():
            out.append({"id": f["id"], "displayName": f["displayName"],
                        "wellKnownName": f["wellKnownName"],
                        "parentFolderId": f["parent"],
                        "messages": [
                            {"id": m["id"], "isRead": m["isRead"],
                             "internetMessageId": m["internetMessageId"],
                             "subject": m.get("subject"), "size": m["size"],
                             "receivedDateTime": m["receivedDateTime"],
                             "flagStatus": m.get("flagStatus", "notFlagged"),
                             "isDraft": bool(m.get("isDraft")),
                             "immutableId": m["immutableId"],
                             "attachments": len(m.get("attachments") or []),
                             "path": m["path"]}
                            for m in mb.folder_messages(f["id"])]})
        return {"mailbox": mb.upn, "folders": out}

    def file_later(self, fn):
        """file_later - run fn (file a Sent Items copy) now, or after
        "sent_items_delay" seconds: "The copy of the message is not
        created until the message successfully sends, which may take
        time" (outlook-immutable-id)"""
        delay = float(self.cfg("sent_items_delay", 0) or 0)
        if delay <= 0:
            fn()
            return
        with self.lock:
            self.pending.append((time.time() + delay, fn))

    def flush_pending(self):
        """flush_pending - file the copies whose time has come"""
        now = time.time()
        with self.lock:
            due = [p for p in self.pending if p[0] <= now]
            self.pending = [p for p in self.pending if p[0] > now]
            for _, fn in due:
                fn()

    def file_sent(self, upn, path):
        """file_sent - a copy of an accepted sendMail in Sent Items"""
        try:
            meta = mime_meta(path)
        except OSError:
            return
        with self.lock:
            mb = self.mbox(upn)
            mb.add_message(mb.folder("sentitems")["id"], path, meta, True)

    def deliver_ndrs(self, upn, rec):
        """deliver_ndrs - after a 202: for the recipients that an NDR rule
        (config "ndr_rules": [{"recipient", "action": failed|delayed,
        "status", "lang": en|de|fr, "machine": true, "returned":
        message|headers}]) names, file an NDR or delay notice, one per
        rule kind, into the sending mailbox's Inbox, as Exchange Online
        does (README "Non-delivery reports")"""
        rules = self.cfg("ndr_rules") or []
        sent = {r.lower() for r in rec.get("recipients") or []}
        groups = {}
        for rule in rules:
            r = str(rule.get("recipient", "")).lower()
            if r not in sent:
                continue
            action = rule.get("action", "failed")
            key = (action, rule.get("status", "5.1.10" if action == "failed"
                                    else "4.4.7"), rule.get("lang", "en"),
                   bool(rule.get("machine", True)),
                   rule.get("returned", "message" if action == "failed"
                            else "headers"))
            groups.setdefault(key, []).append(r)
        for key, rcpts in groups.items():
            data = build_ndr(upn, rec, rec["eml_path"], rcpts, *key)
            path = self.spool_path()
            with open(path, "wb") as f:
                f.write(data)
            with self.lock:
                mb = self.mbox(upn)
                mb.add_message(mb.folder("inbox")["id"], path,
                               dict(mime_meta(path), owned=True))
                self.stats["ndrs_delivered"] = \
                    self.stats.get("ndrs_delivered", 0) + 1

    # --- faults ------------------------------------------------------

    def take_fault(self, kind, skip=None, path=None):
        """take_fault - consume one count of the first matching fault
        (skip(fault) true: that fault does not apply to this request;
        a fault with path_contains applies only when the request path,
        URL-decoded, contains that text)"""
        with self.lock:
            for f in self.faults:
                pc = f.get("path_contains")
                if pc is not None and (path is None or pc not in path):
                    continue
                if f["match"] in (kind, "any") and not (skip and skip(f)):
                    if f.get("after", 0) > 0:
                        f["after"] -= 1     # let this one pass
                        continue
                    f["count"] -= 1
                    if f["count"] <= 0:
                        self.faults.remove(f)
                    return dict(f)
        return None

    # --- tokens ------------------------------------------------------

    def issue_tokens(self, client_id, user, scopes, want_refresh, roles=None):
        """issue_tokens - mint an access (+ refresh) token; return JSON"""
        lifetime = int(self.cfg("access_token_lifetime", 3600))
        now = time.time()
        at = secrets.token_urlsafe(48)
        resource_scopes = [s for s in scopes if s.lower() not in OIDC_SCOPES]
        info = {"client_id": client_id, "user": user, "roles": roles or [],
                "scopes": {short_scope(s) for s in resource_scopes},
                "exp": now + lifetime, "issued": now}
        resp = {"token_type": "Bearer", "scope": " ".join(resource_scopes),
                "expires_in": lifetime, "ext_expires_in": lifetime,
                "access_token": at}
        with self.lock:
            self.access[at] = info
            if want_refresh and user:
                rt = secrets.token_urlsafe(64)
                self.refresh[rt] = {"client_id": client_id, "user": user,
                                    "scopes": list(scopes), "issued": now,
                                    "revoked": False}
                resp["refresh_token"] = rt
        return resp

    def check_access(self, token):
        """check_access - token info, or None when unknown or expired"""
        with self.lock:
            info = self.access.get(token)
            if info is None:
                return None, "unknown"
            if info["exp"] <= time.time():
                return None, "expired"
            return dict(info), None

    # --- recording ---------------------------------------------------

    def record(self, rec, eml=None, src=None, counter="sendmail_accepted"):
        """record - write sent/NNNNNN.json and .eml (the bytes eml, or the
        file src, renamed); return the record"""
        with self.lock:
            self.seq += 1
            rec["seq"] = self.seq
            base = os.path.join(self.sent_dir, "%06d" % self.seq)
            if src is not None:
                os.replace(src, base + ".eml")
            else:
                with open(base + ".eml", "wb") as f:
                    f.write(eml)
            with open(base + ".json", "w", encoding="utf-8") as f:
                json.dump(rec, f, indent=1)
            rec = dict(rec, eml_path=base + ".eml")
            self.sent.append(rec)
            self.stats[counter] += 1
            return rec

    # --- load: concurrency and upload volume per mailbox --------------

    def enter(self, upn):
        """enter - a request for mailbox upn starts (max_concurrent)"""
        with self.lock:
            n = self.inflight.get(upn, 0) + 1
            self.inflight[upn] = n
            mc = self.stats["max_concurrent"]
            mc[upn] = max(mc.get(upn, 0), n)
            return n

    def leave(self, upn):
        with self.lock:
            self.inflight[upn] = max(0, self.inflight.get(upn, 1) - 1)

    def upload_window(self, upn, now):
        """upload_window - (bytes uploaded to upn in the budget window,
        the log pruned to it, window seconds)"""
        budget = self.config.get("upload_budget") or {}
        secs = float(budget.get("seconds", 30))
        log = [(t, n) for t, n in self.upload_log.get(upn, [])
               if now - t < secs]
        self.upload_log[upn] = log
        return sum(n for _t, n in log), log, secs

    def note_upload(self, upn, nbytes):
        """note_upload - count nbytes of POST/PUT/PATCH body for upn in
        the sliding window (stats max_upload_window)"""
        now = time.time()
        with self.lock:
            total, log, _ = self.upload_window(upn, now)
            log.append((now, nbytes))
            mw = self.stats["max_upload_window"]
            mw[upn] = max(mw.get(upn, 0), total + nbytes)

    def over_budget(self, upn, nbytes):
        """over_budget - seconds to wait when nbytes more would exceed the
        configured upload_budget of upn (0: within it, or no budget)"""
        budget = self.config.get("upload_budget")
        if not budget:
            return 0
        now = time.time()
        with self.lock:
            total, log, secs = self.upload_window(upn, now)
            limit = int(budget.get("bytes", 15728640))
            if total + nbytes <= limit or not log:
                return 0
            for t, n in log:        # oldest first: when enough has left
                total -= n
                if total + nbytes <= limit:
                    return max(1, int(secs - (now - t) + 0.999))
            return int(secs)


def user_id(upn):
    """user_id - stable object id for a UPN"""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, upn.lower()))


# ---------------------------------------------------------------------
# JWT client assertions (verified with the openssl command)

def cert_der(path):
    """cert_der - DER bytes of the first certificate in a PEM file"""
    with open(path, "r", encoding="ascii") as f:
        pem = f.read()
    start = pem.find("-----BEGIN CERTIFICATE-----")
    end = pem.find("-----END CERTIFICATE-----", start)
    if start < 0 or end < 0:
        raise ValueError("no certificate in %s" % path)
    return ssl.PEM_cert_to_DER_cert(pem[start:end + 25])


def cert_pubkey(state, path):
    """cert_pubkey - PEM public key of a certificate (cached by mtime)"""
    mtime = os.stat(path).st_mtime
    with state.lock:
        hit = state.pubkey_cache.get(path)
        if hit and hit[0] == mtime:
            return hit[1]
    out = subprocess.run(["openssl", "x509", "-in", path, "-noout",
                          "-pubkey"], capture_output=True, check=True)
    with state.lock:
        state.pubkey_cache[path] = (mtime, out.stdout)
    return out.stdout


def openssl_verify(pubkey_pem, alg, signing_input, signature):
    """openssl_verify - check an RS256/PS256 signature with openssl dgst"""
    with tempfile.TemporaryDirectory(prefix="m365emu-jwt.") as tmp:
        paths = {}
        for name, data in (("pub.pem", pubkey_pem), ("data", signing_input),
                           ("sig", signature)):
            paths[name] = os.path.join(tmp, name)
            with open(paths[name], "wb") as f:
                f.write(data)
        cmd = ["openssl", "dgst", "-sha256", "-verify", paths["pub.pem"],
               "-signature", paths["sig"]]
        if alg == "PS256":
            cmd += ["-sigopt", "rsa_padding_mode:pss",
                    "-sigopt", "rsa_pss_saltlen:digest"]
        cmd.append(paths["data"])
        out = subprocess.run(cmd, capture_output=True)
        return out.returncode == 0 and b"Verified OK" in out.stdout


def verify_assertion(state, app, client_id, assertion, tenant):
    """verify_assertion - None when valid, else the reason text"""
    parts = assertion.split(".")
    if len(parts) != 3:
        return "the assertion is not a JWS compact serialization"
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return "the assertion is not valid base64url JSON"
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return "the assertion header or claims are not JSON objects"
    try:
        der = cert_der(app["certificate"])
        pub = cert_pubkey(state, app["certificate"])
    except (OSError, ValueError, subprocess.CalledProcessError) as e:
        return "the registered certificate cannot be read: %s" % e
    alg = header.get("alg")
    if alg == "PS256":
        want, got = b64url(hashlib.sha256(der).digest()), header.get("x5t#S256")
        tp_name = "x5t#S256"
    elif alg == "RS256":
        want, got = b64url(hashlib.sha1(der).digest()), header.get("x5t")
        tp_name = "x5t"
    else:
        return "unsupported alg %r (use PS256 or RS256)" % alg
    if got != want:
        return ("key was not found: %s %r does not match the thumbprint of "
                "the certificate registered for the app" % (tp_name, got))
    signing_input = (parts[0] + "." + parts[1]).encode("ascii")
    if not openssl_verify(pub, alg, signing_input, signature):
        return "the %s signature does not verify with the registered " \
               "certificate's public key" % alg
    aud = claims.get("aud")
    tenants = {tenant, str(state.cfg("tenant")), str(state.cfg("tenant_id"))}
    if not isinstance(aud, str) or not any(
            aud.lower().endswith("/%s/oauth2/v2.0/token" % t.lower())
            for t in tenants):
        return "aud %r is not this tenant's v2.0 token endpoint" % (aud,)
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        return "iss and sub must both be the client id"
    now = time.time()
    exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
    if not isinstance(exp, (int, float)) or exp <= now:
        return "the assertion has expired (exp %r)" % (exp,)
    if not isinstance(nbf, (int, float)):
        return "the assertion has no nbf"
    if nbf > now + 300:
        return "the assertion is not yet valid (nbf in the future)"
    if exp > nbf + 3600:
        return "exp is more than 1 hour after nbf"
    return None


# ---------------------------------------------------------------------
# MIME helpers

def header_text(value):
    """header_text - decode RFC 2047 words in a header value"""
    if value is None:
        return None
    try:
        return str(email.header.make_header(email.header.decode_header(
            str(value).replace("\r\n", "").replace("\n", ""))))
    except Exception:       # any undecodable header: keep it raw
        return str(value)


def addresses(values):
    """addresses - lowercased addr-specs from raw address header values"""
    flat = [str(v).replace("\r\n", " ").replace("\n", " ") for v in values]
    out = []
    for _name, addr in email.utils.getaddresses(flat):
        addr = addr.strip()
        if addr:
            out.append(addr.lower())
    return out


def mime_recipients(msg):
    """mime_recipients - (to, cc, bcc, all in header order, deduplicated)"""
    lists = {"to": [], "cc": [], "bcc": []}
    ordered = []
    for name, value in msg.items():
        key = name.lower()
        if key in lists:
            addrs = addresses([value])
            lists[key] += addrs
            ordered += addrs
    seen, uniq = set(), []
    for a in ordered:
        if a not in seen:
            seen.add(a)
            uniq.append(a)
    return lists["to"], lists["cc"], lists["bcc"], uniq


def json_recipients(message, field):
    """json_recipients - addresses of a JSON-form recipient collection"""
    out = []
    for r in message.get(field) or []:
        addr = ((r or {}).get("emailAddress") or {}).get("address")
        if not isinstance(addr, str) or not addr.strip():
            raise ValueError(field)
        out.append(addr.strip().lower())
    return out


def json_to_eml(message, mailbox):
    """json_to_eml - a readable RFC 5322 rendering of a JSON message"""
    try:
        return json_to_eml_1(message, mailbox)
    except Exception:       # odd input: keep the JSON itself
        return json.dumps({"message": message}, indent=1).encode("utf-8")


def json_to_eml_1(message, mailbox):
    """json_to_eml_1 - worker of json_to_eml"""
    m = email.message.EmailMessage()
    frm = ((message.get("from") or {}).get("emailAddress") or {})
    m["From"] = frm.get("address") or mailbox
    for field, hdr in (("toRecipients", "To"), ("ccRecipients", "Cc"),
                       ("bccRecipients", "Bcc")):
        addrs = [r["emailAddress"]["address"]
                 for r in message.get(field) or []]
        if addrs:
            m[hdr] = ", ".join(addrs)
    m["Subject"] = message.get("subject") or ""
    for h in message.get("internetMessageHeaders") or []:
        m[h["name"]] = h["value"]
    body = message.get("body") or {}
    subtype = "html" if str(body.get("contentType", "")).lower() == "html" \
        else "plain"
    m.set_content(body.get("content") or "", subtype=subtype)
    return m.as_bytes(policy=email.policy.SMTP)


# ---------------------------------------------------------------------
# Mailboxes (for the inbound poller m365-fetch)

WELL_KNOWN_FOLDERS = [
    ("archive", "Archive"), ("deleteditems", "Deleted Items"),
    ("drafts", "Drafts"), ("inbox", "Inbox"), ("junkemail", "Junk Email"),
    ("outbox", "Outbox"), ("sentitems", "Sent Items")]
DEFAULT_DELTA_PAGE = 10         # Graph's default page of messages/delta
MAX_DELTA_PAGE = 1000
DELTA_SESSION_TTL = 3600        # seconds a $skiptoken stays usable
STREAM_CHUNK = 65536
MESSAGE_FIELDS = ["createdDateTime", "lastModifiedDateTime",
                  "receivedDateTime", "sentDateTime", "hasAttachments",
                  "internetMessageId", "subject", "bodyPreview", "isRead",
                  "isDraft", "flag", "categories", "parentFolderId", "from",
                  "sender", "toRecipients", "ccRecipients"]
ITEM_NOT_FOUND = "The specified object was not found in the store."
ACCESS_DENIED = "Access is denied. Check credentials and try again."


def graph_id(prefix, nbytes=42):
    """graph_id - an opaque id shaped like Exchange's (url-safe, '=' pad)"""
    return prefix + b64url(secrets.token_bytes(nbytes)) + "AAA="


def email_address(name, addr):
    """email_address - Graph's emailAddress object"""
    return {"emailAddress": {"name": name or addr, "address": addr}}


class Mailbox:
    """One user's mailbox: folders, messages and the delta change log.

    Every change takes a new sequence number from self.seq: a message
    arriving in (or moved into) a folder gets created = changed = seq, a
    PATCH sets changed = seq, and a message leaving a folder leaves a
    tombstone (seq, id, created) in that folder.  A delta token records
    the sequence number its round saw, so the next round reports exactly
    what changed after it.  MIME bytes live in files, never in memory."""

    def __init__(self, upn, spool):
        self.upn = upn
        self.spool = spool
        self.seq = 0
        self.folders = {}           # id -> folder dict
        self.msgs = {}              # id -> message dict
        self.imm = {}               # immutable id -> current id
        self.tombstones = {}        # folder id -> [(seq, id, created)]
        for wk, name in WELL_KNOWN_FOLDERS:
            self.add_folder(name, wk)

    def next_seq(self):
        self.seq += 1
        return self.seq

    def add_folder(self, name, well_known=None, parent=None):
        fid = graph_id("AQMkAD")
        self.folders[fid] = {"id": fid, "displayName": name,
                             "wellKnownName": well_known,
                             "parent": parent or self.root_id(),
                             "epoch": 1,    # a "gone" fault bumps it
                             "created": self.next_seq()}
        self.tombstones[fid] = []
        return self.folders[fid]

    def folder(self, ref):
        """folder - a folder by id or well-known name (not displayName)"""
        if ref in self.folders:
            return self.folders[ref]
        for f in self.folders.values():
            if f["wellKnownName"] and f["wellKnownName"] == ref.lower():
                return f
        return None

    def folder_by_name(self, name):
        """folder_by_name - id, well-known name, displayName or a path
        "Inbox/Sub" of display names (control API)"""
        f = self.folder(name)
        if f is not None:
            return f
        parent = self.root_id()
        for part in name.split("/"):
            f = None
            for g in self.folders.values():
                if g["parent"] == parent and \
                        g["displayName"].lower() == part.lower():
                    f = g
                    break
            if f is None:
                return None
            parent = f["id"]
        return f

    def children(self, parent):
        """children - folders directly under parent, by display name"""
        return sorted((f for f in self.folders.values()
                       if f["parent"] == parent),
                      key=lambda f: f["displayName"].lower())

    def folder_messages(self, fid):
        return sorted((m for m in self.msgs.values() if m["folder"] == fid),
                      key=lambda m: m["created"])

    def add_message(self, fid, path, meta, is_read=False, received=None):
        """add_message - file the MIME at path into folder fid"""
        seq = self.next_seq()
        now = iso_time()
        msg = dict(meta, id=graph_id("AAMkAG"), folder=fid, path=path,
                   isRead=bool(is_read), created=seq, changed=seq,
                   receivedDateTime=received or now,
                   createdDateTime=now, lastModifiedDateTime=now,
                   immutableId=graph_id("AAkALg"))
        self.msgs[msg["id"]] = msg
        self.imm[msg["immutableId"]] = msg["id"]
        return msg

    def find(self, ref):
        """find - a message by its id or its immutable id, or None"""
        msg = self.msgs.get(ref)
        if msg is None and ref in self.imm:
            msg = self.msgs.get(self.imm[ref])
        return msg

    def remove(self, mid):
        """remove - take a message out of its folder (tombstone it)"""
        msg = self.msgs.pop(mid)
        self.tombstones[msg["folder"]].append(
            (self.next_seq(), mid, msg["created"]))
        return msg

    def move(self, mid, fid):
        """move - move a message; it gets a NEW id, as in Exchange"""
        return self.restore(self.remove(mid), fid)

    def restore(self, old, fid):
        """restore - file a removed message (its immutable id kept) in
        folder fid under a new id"""
        seq = self.next_seq()
        msg = dict(old, id=graph_id("AAMkAG"), folder=fid, created=seq,
                   changed=seq, lastModifiedDateTime=iso_time())
        self.msgs[msg["id"]] = msg
        self.imm[msg["immutableId"]] = msg["id"]
        return msg

    def update(self, mid, changes):
        msg = self.msgs[mid]
        msg.update(changes)
        msg["changed"] = self.next_seq()
        msg["lastModifiedDateTime"] = iso_time()
        return msg

    def changes(self, fid, since):
        """changes - [(kind, id)] for a delta round after seq since"""
        if since is None:
            return [("msg", m["id"]) for m in self.folder_messages(fid)]
        ev = [(m["changed"], "msg", m["id"]) for m in self.msgs.values()
              if m["folder"] == fid and m["changed"] > since]
        ev += [(s, "removed", mid) for s, mid, created in
               self.tombstones.get(fid, []) if s > since and created <= since]
        return [(kind, mid) for _s, kind, mid in sorted(ev)]

    def clear(self):
        """clear - drop every message and custom folder"""
        for m in self.msgs.values():
            unlink_all(message_files(m))
        self.__init__(self.upn, self.spool)

    def render(self, msg, select=None, immutable=False):
        """render - the Graph JSON of a message ($select: list of names;
        immutable: the id as with Prefer: IdType="ImmutableId")"""
        full = {"createdDateTime": msg["createdDateTime"],
                "lastModifiedDateTime": msg["lastModifiedDateTime"],
                "receivedDateTime": msg["receivedDateTime"],
                "sentDateTime": msg.get("sentDateTime") or
                msg["receivedDateTime"],
                "hasAttachments": msg.get("hasAttachments", False) or
                bool(msg.get("attachments")),
                "internetMessageId": msg["internetMessageId"],
                "subject": msg.get("subject") or "",
                "bodyPreview": msg.get("bodyPreview", ""),
                "isRead": msg["isRead"], "isDraft": bool(msg.get("isDraft")),
                "flag": {"flagStatus": msg.get("flagStatus", "notFlagged")},
                "categories": list(msg.get("categories", [])),
                "parentFolderId": msg["folder"],
                "from": email_address(*msg["from"]) if msg.get("from")
                else None,
                "sender": email_address(*msg["from"]) if msg.get("from")
                else None,
                "toRecipients": [email_address(n, a)
                                 for n, a in msg.get("to", [])],
                "ccRecipients": [email_address(n, a)
                                 for n, a in msg.get("cc", [])]}
        sent = self.folder("sentitems")
        if msg.get("isDraft") or (sent and msg["folder"] == sent["id"]):
            # The sender's own copy keeps its Bcc recipients.
            full["bccRecipients"] = [email_address(n, a)
                                     for n, a in msg.get("bcc", [])]
        out = {"@odata.etag": 'W/"CQAAABYAAAD%s"' % b64url(hashlib.sha1(
            ("%s.%d" % (msg["id"], msg["changed"])).encode()).digest()),
               "id": msg["immutableId"] if immutable else msg["id"]}
        if select is None:
            out.update(full)
        else:
            names = {k.lower(): k for k in full}
            for s in select:
                k = names.get(s.lower())
                if k:
                    out[k] = full[k]
        return out

    def render_folder(self, f):
        msgs = self.folder_messages(f["id"])
        return {"id": f["id"], "displayName": f["displayName"],
                "parentFolderId": f["parent"],
                "childFolderCount": len(self.children(f["id"])),
                "unreadItemCount": sum(1 for m in msgs if not m["isRead"]),
                "totalItemCount": len(msgs), "sizeInBytes": sum(
                    m["size"] for m in msgs), "isHidden": False}

    def root_id(self):
        return "AQMkADRootFolder" + b64url(self.upn.encode())[:16] + "AAA="


def unlink_all(paths):
    """unlink_all - remove files, ignoring those already gone"""
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def message_files(msg):
    """message_files - the files a message owns (MIME, attachments)"""
    out = [msg["path"]] if msg.get("owned") else []
    return out + [a["path"] for a in msg.get("attachments") or []
                  if a.get("path")]


def mime_meta(path):
    """mime_meta - Graph metadata parsed from the headers of a MIME file"""
    with open(path, "rb") as f:
        head = b""
        while b"\r\n\r\n" not in head and b"\n\n" not in head:
            chunk = f.read(65536)
            if not chunk:
                break
            head += chunk
            if len(head) > 1048576:
                break
    msg = email.parser.BytesParser(policy=email.policy.compat32) \
        .parsebytes(head, headersonly=True)

    def addr_list(name):
        flat = [str(v).replace("\r\n", " ").replace("\n", " ")
                for v in msg.get_all(name) or []]
        return [(header_text(n) or "", a) for n, a in
                email.utils.getaddresses(flat) if a]

    froms = addr_list("From")
    mid = msg.get("Message-ID")
    mid = str(mid).strip() if mid else \
        "<%s@%s>" % (uuid.uuid4().hex, "emu.contoso.test")
    ctype = str(msg.get("Content-Type", "")).lower()
    sent = None
    if msg.get("Date"):
        try:
            sent = iso_time(email.utils.parsedate_to_datetime(
                str(msg["Date"])).astimezone(datetime.timezone.utc))
        except (TypeError, ValueError):
            sent = None
    return {"internetMessageId": mid,
            "subject": header_text(msg.get("Subject")) or "",
            "from": froms[0] if froms else None,
            "to": addr_list("To"), "cc": addr_list("Cc"),
            "bcc": addr_list("Bcc"),
            "hasAttachments": ctype.startswith("multipart/mixed"),
            "sentDateTime": sent, "size": os.path.getsize(path)}


def write_generated(path, size, subject, sender, rcpt, index):
    """write_generated - a MIME message of about size bytes, written in
    pieces (a text part plus a base64 attachment-like part)"""
    mid = "<gen-%s-%d@emu.contoso.test>" % (uuid.uuid4().hex, index)
    boundary = "=_m365emu_" + uuid.uuid4().hex
    head = ("From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\n"
            "Message-ID: %s\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n"
            "--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
            "Generated message %d (%d bytes).\r\n\r\n--%s\r\n"
            "Content-Type: application/octet-stream; name=\"data.bin\"\r\n"
            "Content-Transfer-Encoding: base64\r\n"
            "Content-Disposition: attachment; filename=\"data.bin\"\r\n\r\n"
            % (sender, rcpt, subject, email.utils.formatdate(),
               mid, boundary, boundary, index, size, boundary)).encode()
    tail = ("\r\n--%s--\r\n" % boundary).encode()
    body_len = max(0, size - len(head) - len(tail))
    line = 78                                   # 76 + CRLF
    nlines = body_len // line
    # One block of distinct lines, repeated: a few hundred kB in memory.
    block_lines = max(1, min(4096, nlines))
    seed = hashlib.sha256(mid.encode()).digest()
    block = b"".join(base64.b64encode(hashlib.sha512(
        seed + i.to_bytes(4, "big")).digest()[:57]) + b"\r\n"
        for i in range(block_lines))
    with open(path, "wb") as f:
        f.write(head)
        left = nlines
        while left > 0:
            n = min(left, block_lines)
            f.write(block[:n * line])
            left -= n
        f.write(tail)
    return mid


# ---------------------------------------------------------------------
# Non-delivery reports and delay notices (issue 12; README "Non-delivery
# reports"): after a 202, Exchange Online returns an NDR for a recipient
# it cannot reach to the SENDING mailbox's Inbox.  The layout follows
# public Exchange Online samples (multipart/report; report-type=
# delivery-status; X-MS-Exchange-Message-Is-Ndr; Auto-Submitted:
# auto-replied; In-Reply-To/References the original Message-ID); the
# explanatory text is the emulator's own, in a few languages, with
# Exchange's localised Subject prefixes.

NDR_TEXT = {
    # lang: (failed prefix, delayed prefix, failed line, delayed line,
    #        "more info" heading)
    "en": ("Undeliverable", "Delivery delayed",
           "Your message to {rcpt} could not be delivered.",
           "Delivery to {rcpt} is delayed; the server keeps trying.",
           "Details for administrators"),
    "de": ("Unzustellbar", "Zustellung verz\u00f6gert",
           "Ihre Nachricht an {rcpt} konnte nicht zugestellt werden.",
           "Die Zustellung an {rcpt} verz\u00f6gert sich; der Server "
           "versucht es weiter.",
           "Angaben f\u00fcr Administratoren"),
    "fr": ("Non remis", "Remise diff\u00e9r\u00e9e",
           "Votre message \u00e0 {rcpt} n'a pas pu \u00eatre remis.",
           "La remise \u00e0 {rcpt} est diff\u00e9r\u00e9e ; le serveur "
           "continue d'essayer.",
           "Informations pour les administrateurs"),
}
NDR_DIAG = {"5.1.10": "550 5.1.10 RESOLVER.ADR.RecipientNotFound; "
                      "Recipient {rcpt} not found by SMTP address lookup",
            "5.4.1": "550 5.4.1 Recipient address rejected: Access denied",
            "5.7.233": "550 5.7.233 RESOLVER.RST.RecipientRateLimitExceeded",
            "4.4.7": "400 4.4.7 Message delayed"}
NDR_FROM = "MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e"


def ndr_subject(prefix, subject):
    """ndr_subject - "Undeliverable: SUBJECT", RFC 2047 when not ASCII"""
    text = "%s: %s" % (prefix, subject or "")
    try:
        text.encode("ascii")
        return text
    except UnicodeEncodeError:
        return email.header.Header(text, "utf-8").encode()


def build_ndr(upn, rec, eml_path, rcpts, action, status, lang, machine,
              returned):
    """build_ndr - the MIME bytes of one NDR (action "failed") or delay
    notice ("delayed") for rcpts of the accepted message rec"""
    text = NDR_TEXT.get(lang, NDR_TEXT["en"])
    host = "SA1PR00MB%04d.namprd00.prod.outlook.com" % (rec.get("seq", 0)
                                                         % 10000)
    domain = upn.split("@")[-1]
    now = email.utils.formatdate()
    b1 = "_ndr_%s_" % uuid.uuid4().hex
    b2 = "_alt_%s_" % uuid.uuid4().hex
    orig = rec.get("message_id")
    lines = [text[2 if action == "failed" else 3].format(rcpt=r)
             for r in rcpts]
    diags = [NDR_DIAG.get(status, "%s %s" % ("550" if status[0] == "5"
                                             else "400", status))
             .format(rcpt=r) for r in rcpts]
    plain = "\r\n".join(lines) + "\r\n\r\n%s:\r\n\r\n" % text[4] + \
        "\r\n".join("Remote server returned '%s'" % d for d in diags) + \
        "\r\n"
    page = "<html><body>" + "".join("<p>%s</p>" % html.escape(ln)
                                    for ln in lines) + \
        "<p><b>%s</b></p>" % html.escape(text[4]) + \
        "".join("<p>%s</p>" % html.escape(d) for d in diags) + \
        "</body></html>"
    head = ["Received: from %s (2603:10b6:806:1::1) by %s with HTTPS; %s"
            % (host, host, now),
            "MIME-Version: 1.0",
            "From: Microsoft Outlook <%s@%s>" % (NDR_FROM, domain),
            "To: <%s>" % upn, "Date: %s" % now,
            "Content-Type: multipart/report; report-type=delivery-status;"
            "\r\n\tboundary=\"%s\"" % b1,
            "X-MS-Exchange-Message-Is-Ndr:",
            "Content-Language: %s" % {"de": "de-DE", "fr": "fr-FR"}
            .get(lang, "en-US"),
            "Message-ID: <%s@%s>" % (uuid.uuid4(), host)]
    if orig:
        head += ["In-Reply-To: %s" % orig, "References: %s" % orig]
    head += ["Subject: %s" % ndr_subject(text[0 if action == "failed"
                                               else 1], rec.get("subject")),
             "Auto-Submitted: auto-replied",
             "X-MS-PublicTrafficType: Email",
             "X-MS-Exchange-Organization-SCL: -1"]
    parts = ["--%s\r\nContent-Type: multipart/alternative; "
             "boundary=\"%s\"\r\n\r\n--%s\r\nContent-Type: text/plain; "
             "charset=\"utf-8\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
             "%s\r\n--%s\r\nContent-Type: text/html; charset=\"utf-8\"\r\n"
             "Content-Transfer-Encoding: base64\r\n\r\n%s\r\n--%s--\r\n"
             % (b1, b2, b2, base64.encodebytes(plain.encode()).decode()
                .replace("\n", "\r\n"), b2,
                base64.encodebytes(page.encode()).decode()
                .replace("\n", "\r\n"), b2)]
    if machine:
        ds = ["Reporting-MTA: dns;%s" % host,
              "Received-From-MTA: dns;%s" % host,
              "Arrival-Date: %s" % now]
        for r, d in zip(rcpts, diags):
            ds += ["", "Final-Recipient: rfc822;%s" % r,
                   "Action: %s" % action, "Status: %s" % status,
                   "Diagnostic-Code: smtp;%s" % d]
            if action == "delayed":
                ds.append("Will-Retry-Until: %s" % email.utils.formatdate(
                    time.time() + 86400))
        parts.append("--%s\r\nContent-Type: message/delivery-status\r\n\r\n"
                     "%s\r\n" % (b1, "\r\n".join(ds)))
    with open(eml_path, "rb") as f:
        original = f.read()
    if returned == "headers":
        end = original.find(b"\r\n\r\n")
        end = original.find(b"\n\n") if end < 0 else end
        hdr = original[:end] if end >= 0 else original
        ret = b"Content-Type: text/rfc822-headers\r\n\r\n" + hdr + b"\r\n"
    else:
        ret = b"Content-Type: message/rfc822\r\n\r\n" + original + b"\r\n"
    return ("\r\n".join(head) + "\r\n\r\n").encode() + \
        "".join(parts).encode() + ("--%s\r\n" % b1).encode() + ret + \
        ("--%s--\r\n" % b1).encode()


# ---------------------------------------------------------------------
# Drafts: metadata, upload URLs, the MIME Exchange builds from a JSON draft

PID_TAG_INTERNET_MESSAGE_ID = "string 0x1035"


def upload_ref(path):
    """upload_ref - (session id, authtoken) of an uploadUrl request path"""
    url = urllib.parse.urlsplit(path)
    m = re.search(r"AttachmentSessions\('([^']*)'\)",
                  urllib.parse.unquote(url.path))
    tok = urllib.parse.parse_qs(url.query).get("authtoken", [None])[0]
    return (m.group(1) if m else None), tok


def json_addr(r):
    e = (r or {}).get("emailAddress") or {}
    return (str(e.get("name") or ""), str(e.get("address") or "").strip())


def json_meta(message, path):
    """json_meta - mailbox metadata of a JSON draft: internetMessageId
    from the property or from singleValueExtendedProperties "String
    0x1035" (PidTagInternetMessageId), else made up"""
    mid = message.get("internetMessageId")
    for p in message.get("singleValueExtendedProperties") or []:
        if str((p or {}).get("id", "")).strip().lower() == \
                PID_TAG_INTERNET_MESSAGE_ID and p.get("value"):
            mid = p["value"]
    frm = message.get("from")
    return {"internetMessageId": str(mid).strip() if mid else
            "<%s@emu.contoso.test>" % uuid.uuid4().hex,
            "subject": str(message.get("subject") or ""),
            "from": json_addr(frm) if frm else None,
            "to": [json_addr(r) for r in message.get("toRecipients") or []],
            "cc": [json_addr(r) for r in message.get("ccRecipients") or []],
            "bcc": [json_addr(r) for r in message.get("bccRecipients") or []],
            "hasAttachments": False, "sentDateTime": None,
            "size": os.path.getsize(path)}


def draft_size(msg):
    """draft_size - bytes of a draft: its MIME and its attachments"""
    return msg.get("size", 0) + sum(a["size"] for a in
                                    msg.get("attachments") or [])


def attachment_record(a):
    """attachment_record - an attachment as /_emu/sent and /_emu/drafts
    show it"""
    return {k: a[k] for k in ("id", "name", "contentType", "size",
                              "isInline", "contentId", "sha256", "via")}


def fold_headers(items):
    """fold_headers - an RFC 5322 header block (CRLF, RFC 2047/2231)"""
    pol = email.policy.SMTP
    # Through the header factory: non-ASCII text (a Subject or display
    # name typed in Outlook) becomes RFC 2047 encoded words, as in the
    # MIME Exchange builds; fold_binary() of a plain str cannot encode it.
    return b"".join(pol.fold_binary(k, pol.header_factory(k, v))
                    for k, v in items)


def write_b64(f, path):
    """write_b64 - the file at path in base64, lines of 76 + CRLF"""
    with open(path, "rb") as src:
        while True:
            data = src.read(57 * 1024)
            if not data:
                break
            f.write(base64.encodebytes(data).replace(b"\n", b"\r\n"))


def body_part(message):
    """body_part - the body of a JSON message as a MIME part (bytes)"""
    body = message.get("body") or {}
    subtype = "html" if str(body.get("contentType", "")).lower() == "html" \
        else "plain"
    p = email.message.MIMEPart(policy=email.policy.SMTP)
    p.set_content(str(body.get("content") or ""), subtype=subtype,
                  charset="utf-8", cte="quoted-printable")
    return p.as_bytes(), subtype


def attachment_headers(a):
    """attachment_headers - the header block of an attachment's part"""
    p = email.message.MIMEPart(policy=email.policy.SMTP)
    ctype = a["contentType"] if "/" in a["contentType"] else \
        "application/octet-stream"
    p["Content-Type"] = ctype
    if a["name"]:
        p.set_param("name", a["name"])
    p["Content-Disposition"] = "inline" if a["isInline"] else "attachment"
    if a["name"]:
        p.set_param("filename", a["name"], header="Content-Disposition")
    p.set_param("size", str(a["size"]), header="Content-Disposition")
    if a["contentId"]:
        p["Content-ID"] = "<%s>" % a["contentId"].strip("<>")
    p["Content-Transfer-Encoding"] = "base64"
    return fold_headers(p.items())


def write_draft_mime(f, message, atts, upn, display, mid):
    """write_draft_mime - the MIME a JSON draft becomes when it is sent:
    the header from the message's properties (From, To, Cc, Reply-To,
    Subject, Date of sending, Message-ID, Importance, X- headers), the
    body, and every attachment as a base64 part (inline ones with their
    Content-ID, next to an HTML body in multipart/related); attachments
    are read from their files, never held whole in memory"""
    def addr_list(field):
        return ", ".join(email.utils.formataddr(json_addr(r))
                         for r in message.get(field) or [])
    frm = message.get("from")
    h = [("From", email.utils.formataddr(json_addr(frm) if frm
                                         else (display, upn)))]
    for field, name in (("toRecipients", "To"), ("ccRecipients", "Cc"),
                        ("replyTo", "Reply-To")):
        if message.get(field):
            h.append((name, addr_list(field)))
    h.append(("Subject", str(message.get("subject") or "")))
    h.append(("Date", email.utils.format_datetime(utcnow())))
    h.append(("Message-ID", mid))
    imp = str(message.get("importance") or "normal").lower()
    if imp in ("low", "high"):
        h.append(("Importance", imp))
    if message.get("isReadReceiptRequested"):
        h.append(("Disposition-Notification-To", h[0][1]))
    for x in message.get("internetMessageHeaders") or []:
        h.append((str(x["name"]), str(x.get("value", ""))))
    h.append(("MIME-Version", "1.0"))
    body, subtype = body_part(message)
    inline = [a for a in atts if a["isInline"]] if subtype == "html" else []
    others = [a for a in atts if a not in inline]
    tag = uuid.uuid4().hex

    def parts(boundary, items):
        for item in items:
            f.write(b"--%s\r\n" % boundary)
            if isinstance(item, bytes):
                f.write(item)
            elif callable(item):
                item()
            else:
                f.write(attachment_headers(item) + b"\r\n")
                write_b64(f, item["path"])
            f.write(b"\r\n")
        f.write(b"--%s--\r\n" % boundary)

    def related():
        if not inline:
            f.write(body)
            return
        rb = ("_002_%s_" % tag).encode()
        f.write(b'Content-Type: multipart/related;\r\n\tboundary="%s";'
                b'\r\n\ttype="text/html"\r\n\r\n' % rb)
        parts(rb, [body] + inline)

    if not others:
        f.write(fold_headers(h))
        related()
        return
    mb = ("_004_%s_" % tag).encode()
    f.write(fold_headers(h) + b'Content-Type: multipart/mixed;\r\n\t'
            b'boundary="%s"\r\n\r\n' % mb)
    parts(mb, [related] + others)


class MimeStream:
    """A $value answer: an open MIME file, sent chunked."""

    def __init__(self, f):
        self.f = f


# ---------------------------------------------------------------------
# HTTP

class Handler(BaseHTTPRequestHandler):
    """One connection; HTTP/1.1 keep-alive; one method per endpoint."""

    protocol_version = "HTTP/1.1"
    server_version = "m365emu/1"
    timeout = 120

    def version_string(self):
        return self.server_version

    # --- plumbing ----------------------------------------------------

    def setup(self):
        super().setup()
        try:
            # Headers and body go out in separate writes: without
            # TCP_NODELAY, Nagle + delayed ACK stall each answer ~40 ms.
            self.connection.setsockopt(socket.IPPROTO_TCP,
                                       socket.TCP_NODELAY, 1)
        except OSError:
            pass
        try:
            self.connection.do_handshake()
        except (ssl.SSLError, OSError):
            self.close_connection = True
            raise

    def count_connection(self):
        """count_connection - connection reuse (issue 14.1): count this
        TLS connection at its first request that is not a control one,
        in /_emu/stats connections (since reset) and connections_open"""
        st = self.server.state
        with st.lock:
            st.stats["connections"] = st.stats.get("connections", 0) + 1
            st.conn_open = getattr(st, "conn_open", 0) + 1
            st.stats["connections_open"] = st.conn_open
        self.counted = True

    def finish(self):
        try:
            super().finish()
        finally:
            if getattr(self, "counted", False):
                st = self.server.state
                with st.lock:
                    st.conn_open -= 1
                    st.stats["connections_open"] = st.conn_open

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("m365emu: %s\n" % (fmt % args))

    def send(self, status, body=b"", ctype="application/json",
             headers=None):
        """send - one complete response with Content-Length"""
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode("utf-8")
        elif isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(status)
        self.send_header("request-id", self.request_id)
        self.send_header("client-request-id", self.client_request_id)
        if body or ctype != "application/json":
            self.send_header("Content-Type", ctype + "; charset=utf-8"
                             if ctype.startswith(("application/json",
                                                  "text/")) else ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store, no-cache")
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.status_sent = status

    def reset_connection(self):
        """reset_connection - drop the TCP connection with a RST"""
        self.close_connection = True
        self.status_sent = "reset"
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            fd = self.connection.detach()
            os.close(fd)
        except OSError:
            pass

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (ConnectionError, ssl.SSLError, ValueError, OSError):
            self.close_connection = True

    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_PATCH(self):
        self.dispatch()

    def dispatch(self):
        """dispatch - route one request and write its response"""
        st = self.server.state
        self.request_id = str(uuid.uuid4())
        self.client_request_id = (self.headers.get("client-request-id")
                                  or str(uuid.uuid4()))
        self.status_sent = "-"
        url = urllib.parse.urlsplit(self.path)
        self.query = urllib.parse.parse_qs(url.query)
        segs = [s for s in url.path.split("/") if s]
        if segs[:1] != ["_emu"] and not getattr(self, "counted", False):
            self.count_connection()
        # An upload PUT streams its body into the session's file (the
        # endpoint reads it); every other body is read here.
        self.body_done = False
        lazy = self.command == "PUT" and \
            [s.lower() for s in segs[:2]] == ["api", "v2.0"]
        st.flush_pending()
        if self.command == "POST" and segs and segs[-1].lower() == "sendmail" \
                and self.reset_mid_body():
            return
        upn = None if segs[:1] == ["_emu"] else self.load_mailbox(segs)
        inflight = st.enter(upn) if upn else 0
        try:
            body = None if lazy else b"".join(self.body_chunks())
        except (ValueError, OSError):
            self.close_connection = True
            if upn:
                st.leave(upn)
            return
        try:
            if segs[:1] == ["_emu"]:
                self.control(segs[1:], body)
                return
            with st.lock:
                st.stats["requests"] += 1
            if upn and self.concurrency(inflight):
                return
            if upn and self.command in ("POST", "PUT", "PATCH") and \
                    self.budget(upn, body):
                return
            self.route(segs, body)
        except EmuError as e:
            self.drain_body()
            self.send(e.status, e.body, headers=e.headers)
        except (ConnectionError, ssl.SSLError, TimeoutError):
            self.close_connection = True
        except Exception:       # a bug in the emulator: say so, loudly
            import traceback
            traceback.print_exc()
            self.close_connection = True
            self.send(500, {"error": "m365emu internal error"})
        finally:
            if upn:
                st.leave(upn)
            if segs[:1] != ["_emu"]:
                st.log_request(self.command, url.path, self.status_sent)

    def reset_mid_body(self):
        """reset_mid_body - the "reset_mid_body" fault of sendMail: read
        `bytes` (default 65536) of the body, stop reading for `delay`
        seconds (default 0.5), then reset the connection; counted in
        sendmail_requests.  True when it applied"""
        st = self.server.state
        fault = st.take_fault("sendMail",
                              lambda f: f.get("action") != "reset_mid_body")
        if fault is None:
            return False
        with st.lock:
            st.stats["sendmail_requests"] += 1
        want = int(fault.get("bytes", 65536))
        try:
            for chunk in self.body_chunks():
                want -= len(chunk)
                if want <= 0:
                    break
        except (ConnectionError, ValueError, OSError):
            pass
        time.sleep(float(fault.get("delay", 0.5)))
        self.reset_connection()
        st.log_request(self.command, urllib.parse.urlsplit(self.path).path,
                       "reset")
        return True

    def body_chunks(self):
        """body_chunks - yield the request body in pieces of at most
        STREAM_CHUNK bytes (Content-Length or chunked); ConnectionError
        when the client sends less"""
        if self.body_done:
            return
        self.body_done = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n",
                                                            b""):
                        pass
                    return
                yield from self.body_bytes(size)
                self.rfile.readline(16)
        yield from self.body_bytes(int(self.headers.get("Content-Length")
                                       or 0))

    def body_bytes(self, size):
        """body_bytes - yield the next size bytes of the body in pieces"""
        while size > 0:
            data = self.rfile.read(min(size, STREAM_CHUNK))
            if not data:
                self.close_connection = True
                raise ConnectionError("short body")
            size -= len(data)
            yield data

    def drain_body(self):
        """drain_body - read and drop a body that was not read yet"""
        try:
            for _ in self.body_chunks():
                pass
        except (ConnectionError, ValueError, OSError):
            self.close_connection = True

    def load_mailbox(self, segs):
        """load_mailbox - the mailbox (upn) a Graph or upload request
        works on, for max_concurrent and the upload budget; or None"""
        st = self.server.state
        low = [s.lower() for s in segs]
        try:
            if low[:2] == ["v1.0", "users"] and len(segs) >= 4:
                return st.user(segs[2])[0]
            if low[:2] == ["v1.0", "me"] and len(segs) >= 3:
                auth = self.headers.get("Authorization", "")
                info, _ = st.check_access(auth[7:].strip())
                return info["user"] if info else None
            if low[:2] == ["api", "v2.0"]:
                sess = st.uploads.get(upload_ref(self.path)[0])
                return sess["mailbox"] if sess else None
        except (KeyError, TypeError, ValueError):
            return None
        return None

    def concurrency(self, inflight):
        """concurrency - with "concurrency_limit" configured, a request
        beyond that many at once for one mailbox gets 429
        ApplicationThrottled "Application is over its MailboxConcurrency
        limit." (True), as reported from Microsoft 365
        (magodo/terraform-provider-outlook#21, alcionai/corso#3695);
        Outlook allows 4 concurrent requests per app and mailbox
        (throttling-limits)"""
        st = self.server.state
        limit = int(st.cfg("concurrency_limit", 0) or 0)
        if not limit or inflight <= limit:
            return False
        with st.lock:
            st.stats["concurrency_throttled"] += 1
        self.drain_body()
        e = self.gerr(429, "ApplicationThrottled", "Application is over its "
                      "MailboxConcurrency limit.")
        self.send(e.status, e.body, headers=e.headers)
        return True

    def budget(self, upn, body):
        """budget - count the upload bytes of this request for upn;
        with "upload_budget" configured, answer 429 ApplicationThrottled
        (True) when they would exceed it ("15 MB upload (PATCH, POST, PUT)
        per 30 seconds" per app and mailbox, throttling-limits)"""
        st = self.server.state
        n = len(body) if body is not None else \
            int(self.headers.get("Content-Length") or 0)
        wait = st.over_budget(upn, n)
        if wait:
            self.drain_body()
            e = self.gerr(429, "ApplicationThrottled", "Application is over "
                          "its IncomingBytes limit.", {"Retry-After": wait})
            self.send(e.status, e.body, headers=e.headers)
            return True
        st.note_upload(upn, n)
        with st.lock:
            st.stats["upload_bytes"] += n
        return False

    def route(self, segs, body):
        """route - identity platform or Graph endpoint"""
        low = [s.lower() for s in segs]
        if len(segs) == 4 and low[1:3] == ["oauth2", "v2.0"]:
            kind = {"token": "token", "devicecode": "devicecode",
                    "authorize": "authorize"}.get(low[3])
            want = "GET" if kind == "authorize" else "POST"
            if kind and self.command == want:
                self.with_faults(kind, body, segs[0])
                return
        if low[:1] == ["v1.0"]:
            if (len(low) == 4 and low[1] == "users" and low[3] == "sendmail") \
                    or low[1:] == ["me", "sendmail"]:
                if self.command == "POST":
                    self.with_faults("sendMail", body, segs[2]
                                     if low[1] == "users" else None)
                    return
            elif (len(low) == 3 and low[1] == "users") or low[1:] == ["me"]:
                if self.command == "GET":
                    self.with_faults("users", body, segs[2]
                                     if low[1] == "users" else None)
                    return
            elif self.route_mail(segs, body):
                return
            raise graph_error(400, "BadRequest",
                              "Resource not found for the segment '%s'."
                              % (segs[-1] if segs else ""),
                              self.request_id, self.client_request_id)
        if low[:2] == ["api", "v2.0"] and self.command in ("PUT", "DELETE"):
            self.with_faults("upload", body, None, self.ep_upload)
            return
        self.drain_body()
        self.send(404, {"error": "not_found",
                        "error_description": "No such endpoint: %s %s"
                        % (self.command, "/" + "/".join(segs))})

    # --- faults ------------------------------------------------------

    def with_faults(self, kind, body, arg, endpoint=None):
        """with_faults - apply the first matching fault, then the endpoint"""
        st = self.server.state
        endpoint = endpoint or {
            "token": self.ep_token, "devicecode": self.ep_devicecode,
            "authorize": self.ep_authorize, "users": self.ep_user,
            "sendMail": self.ep_sendmail}[kind]
        with st.lock:
            counter = MAIL_KINDS.get(kind) or {
                "token": "token_requests", "sendMail": "sendmail_requests",
                "users": "users_requests",
                "devicecode": "devicecode_requests",
                "authorize": "authorize_requests"}[kind]
            st.stats[counter] += 1
            if kind == "token":
                grant = urllib.parse.parse_qs(body.decode("utf-8", "replace")
                                              ).get("grant_type", [""])[0]
                short = {DEVICE_GRANT: "device_code"}.get(grant, grant)
                st.stats["by_grant"][short] = \
                    st.stats["by_grant"].get(short, 0) + 1
        has_token = bool(self.query.get("$deltatoken") or
                         self.query.get("$skiptoken"))
        fault = st.take_fault(kind, lambda f: (f.get("action") == "gone" and
                                               not has_token) or
                              f.get("action") == "reset_mid_body",
                              urllib.parse.unquote(
                                  urllib.parse.urlsplit(self.path).path))
        action = (fault or {}).get("action", "error")
        if action == "expire":
            self.expire_session()
            fault = None
        extra = {}
        if fault and fault.get("retry_after") is not None:
            extra["Retry-After"] = fault["retry_after"]
        if fault is None or action in ("truncate", "endless", "silent",
                                       "close_after_response"):
            status, rbody, rheaders = self.run_endpoint(endpoint, body, arg)
        elif action == "gone":
            e = self.gone(self.token_target(), fault.get("code"),
                          fault.get("message"))
            status, rbody, rheaders = e.status, e.body, e.headers
        elif action == "slow" and fault.get("deliver"):
            # Processed (the message recorded), then the answer is late:
            # the client times out or dies while Graph has it.
            status, rbody, rheaders = self.run_endpoint(endpoint, body, arg)
            time.sleep(float(fault.get("delay", 5)))
        elif action == "slow":
            time.sleep(float(fault.get("delay", 5)))
            status, rbody, rheaders = self.run_endpoint(endpoint, body, arg)
        elif action == "reset_after_body":
            if fault.get("deliver"):
                self.run_endpoint(endpoint, body, arg)
            self.drain_body()
            self.reset_connection()
            return
        elif action == "accept_retry_after":
            status, rbody, rheaders = self.run_endpoint(endpoint, body, arg)
            rheaders = dict(rheaders, **extra)
        else:
            if fault.get("deliver"):
                # An error answer after the request was carried out.
                self.run_endpoint(endpoint, body, arg)
            status, rbody, rheaders = self.fault_response(kind, fault)
            rheaders = dict(rheaders, **extra)
        self.drain_body()
        if kind == "authorize" and isinstance(rbody, str):
            self.send(status, rbody, ctype="text/html", headers=rheaders)
        elif isinstance(rbody, MimeStream):
            self.send_stream(status, rbody, rheaders,
                             truncate=action == "truncate",
                             fault=fault if action in ("endless", "silent")
                             else None)
        else:
            self.send(status, rbody, headers=rheaders)
        if action == "close_after_response" and fault:
            # Kept alive on paper, closed now: a client sees the FIN
            # only when it next uses the connection.
            self.close_connection = True

    def run_endpoint(self, endpoint, body, arg):
        """run_endpoint - (status, body, headers) of a normal answer"""
        try:
            return endpoint(body, arg)
        except EmuError as e:
            self.drain_body()
            return e.status, e.body, e.headers

    def fault_response(self, kind, fault):
        """fault_response - the injected error in the endpoint's dialect"""
        identity = kind in ("token", "devicecode", "authorize")
        default = 400 if identity and (fault.get("aadsts") or
                                       fault.get("error")) else 503
        status = int(fault.get("status", default))
        if identity:
            error = fault.get("error") or (
                "temporarily_unavailable" if status >= 500 else
                "invalid_request")
            e = aad_error(status, error, fault.get("aadsts"),
                          detail=fault.get("detail", iso_time()),
                          detail2=fault.get("detail2", iso_time()),
                          text=fault.get("message"),
                          correlation_id=self.headers.get("client-request-id"))
            return e.status, e.body, {}
        code, message = GRAPH_FAULT_DEFAULTS.get(status, ("UnknownError", ""))
        if kind in MAIL_KINDS and status == 403:
            code, message = "ErrorAccessDenied", ACCESS_DENIED
        elif kind in MAIL_KINDS and status == 404:
            code, message = "ErrorItemNotFound", ITEM_NOT_FOUND
        code = fault.get("code", code)
        message = fault.get("message", message)
        headers = {}
        if status == 401:
            headers["WWW-Authenticate"] = self.www_authenticate()
        e = graph_error(status, code, message, self.request_id,
                        self.client_request_id)
        return e.status, e.body, headers

    # --- identity platform -------------------------------------------

    def form(self, body):
        """form - the urlencoded token/devicecode request parameters"""
        try:
            parsed = urllib.parse.parse_qs(body.decode("utf-8"),
                                           keep_blank_values=True)
        except UnicodeDecodeError:
            parsed = {}
        return {k: v[0] for k, v in parsed.items()}

    def aad(self, status, error, code, detail="", detail2=""):
        return aad_error(status, error, code, detail, detail2,
                         correlation_id=self.headers.get("client-request-id"))

    def need_tenant(self, tenant, delegated=True):
        if not self.server.state.tenant_ok(tenant, delegated):
            if self.server.state.tenant_ok(tenant, True):
                raise self.aad(400, "invalid_request", 9001023)
            raise self.aad(400, "invalid_request", 90002, tenant)

    def ep_devicecode(self, body, tenant):
        """ep_devicecode - POST /{tenant}/oauth2/v2.0/devicecode"""
        st = self.server.state
        self.need_tenant(tenant)
        p = self.form(body)
        client_id = p.get("client_id", "")
        if not client_id:
            raise self.aad(400, "invalid_request", 900144, "client_id")
        app = st.app(client_id)
        if app is None:
            raise self.aad(400, "unauthorized_client", 700016, client_id,
                           st.cfg("tenant_id"))
        if not app.get("public"):
            raise self.aad(401, "invalid_client", 7000218)
        if not p.get("scope"):
            raise self.aad(400, "invalid_request", 900144, "scope")
        device_code = secrets.token_urlsafe(48)
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
        user_code = "".join(secrets.choice(alphabet) for _ in range(9))
        interval = int(st.cfg("device_interval", 5))
        expires_in = int(st.cfg("device_expires_in", 900))
        with st.lock:
            st.devices[device_code] = {
                "user_code": user_code, "client_id": client_id,
                "scopes": p["scope"].split(), "state": "pending",
                "user": None, "expires": time.time() + expires_in,
                "interval": interval, "last_poll": 0.0}
        uri = "https://microsoft.com/devicelogin"
        return 200, {"user_code": user_code, "device_code": device_code,
                     "verification_uri": uri, "expires_in": expires_in,
                     "interval": interval,
                     "message": "To sign in, use a web browser to open the "
                                "page %s and enter the code %s to "
                                "authenticate." % (uri, user_code)}, {}

    def ep_authorize(self, body, tenant):
        """ep_authorize - GET /{tenant}/oauth2/v2.0/authorize (auto-consent)"""
        st = self.server.state
        q = {k: v[0] for k, v in self.query.items()}

        def page(code, detail=""):
            text = AADSTS_TEXT.get(code, "").format(detail=detail, detail2="")
            return 400, ("<html><head><title>Sign in to your account</title>"
                         "</head><body><h1>Sorry, but we're having trouble "
                         "signing you in.</h1><p>AADSTS%d: %s</p></body>"
                         "</html>" % (code, html.escape(text))), {}

        if not st.tenant_ok(tenant):
            return page(90002, tenant)
        client_id = q.get("client_id", "")
        app = st.app(client_id)
        if app is None:
            return page(700016, client_id)
        redirect_uri = q.get("redirect_uri", "")
        if not redirect_ok(app, redirect_uri):
            return page(50011, redirect_uri)
        if q.get("response_type") != "code":
            return page(900144, "response_type")
        if not q.get("scope"):
            return page(900144, "scope")
        if not q.get("code_challenge"):
            return page(900144, "code_challenge")
        if q.get("code_challenge_method") != "S256":
            return page(70000, "code_challenge_method")
        sep = "&" if "?" in redirect_uri else "?"
        state_q = q.get("state")
        if st.cfg("authorize_deny"):
            e = self.aad(400, "access_denied", 65004)
            params = {"error": "access_denied",
                      "error_description": e.body["error_description"]}
        else:
            code = secrets.token_urlsafe(48)
            with st.lock:
                st.codes[code] = {
                    "client_id": client_id, "redirect_uri": redirect_uri,
                    "challenge": q["code_challenge"],
                    "scopes": q["scope"].split(),
                    "user": str(st.cfg("login_user")).lower(),
                    "expires": time.time() + 600, "used": False}
            params = {"code": code}
        if state_q is not None:
            params["state"] = state_q
        location = redirect_uri + sep + urllib.parse.urlencode(params)
        return 302, "", {"Location": location}

    def ep_token(self, body, tenant):
        """ep_token - POST /{tenant}/oauth2/v2.0/token"""
        st = self.server.state
        p = self.form(body)
        basic = self.headers.get("Authorization", "")
        if basic.lower().startswith("basic "):
            try:
                cid, _, sec = base64.b64decode(basic[6:]).decode().partition(
                    ":")
                p.setdefault("client_id", urllib.parse.unquote_plus(cid))
                p.setdefault("client_secret", urllib.parse.unquote_plus(sec))
            except (ValueError, UnicodeDecodeError):
                raise self.aad(401, "invalid_client", 7000215, "")
        grant = p.get("grant_type", "")
        self.need_tenant(tenant, grant != "client_credentials")
        if not grant:
            raise self.aad(400, "invalid_request", 900144, "grant_type")
        client_id = p.get("client_id", "")
        if not client_id:
            raise self.aad(400, "invalid_request", 900144, "client_id")
        app = st.app(client_id)
        if app is None:
            raise self.aad(400, "unauthorized_client", 700016, client_id,
                           st.cfg("tenant_id"))
        handlers = {DEVICE_GRANT: self.grant_device,
                    "authorization_code": self.grant_code,
                    "refresh_token": self.grant_refresh,
                    "client_credentials": self.grant_client}
        if grant not in handlers:
            raise self.aad(400, "unsupported_grant_type", 70003, grant)
        if grant != "client_credentials" and app.get("public") and (
                "client_secret" in p or "client_assertion" in p):
            raise self.aad(401, "invalid_client", 700025)
        return 200, handlers[grant](p, app, client_id, tenant), {}

    def grant_device(self, p, app, client_id, tenant):
        """grant_device - poll with a device_code"""
        st = self.server.state
        now = time.time()
        with st.lock:
            dev = st.devices.get(p.get("device_code", ""))
            if dev is None or dev["client_id"] != client_id:
                raise self.aad(400, "bad_verification_code", 70018)
            if dev["state"] == "used":
                raise self.aad(400, "invalid_grant", 70000, "device_code")
            if now > dev["expires"]:
                raise self.aad(400, "expired_token", 70019)
            too_fast = now - dev["last_poll"] < dev["interval"] - 0.25
            dev["last_poll"] = now
            if dev["state"] == "denied":
                raise aad_error(400, "authorization_declined", None,
                                text="The end user declined the "
                                     "authorization request.")
            if too_fast:
                dev["interval"] += int(st.cfg("slow_down_increment", 5))
                raise aad_error(400, "slow_down", None,
                                text="The client is polling too quickly; "
                                     "increase the polling interval by 5 "
                                     "seconds.")
            if dev["state"] == "pending":
                raise self.aad(400, "authorization_pending", 70016)
            dev["state"] = "used"
            user, scopes = dev["user"], dev["scopes"]
        return st.issue_tokens(client_id, user, scopes,
                               "offline_access" in [s.lower() for s in scopes])

    def grant_code(self, p, app, client_id, tenant):
        """grant_code - redeem an authorization code with a PKCE verifier"""
        st = self.server.state
        for name in ("code", "redirect_uri", "code_verifier"):
            if not p.get(name):
                raise self.aad(400, "invalid_request", 900144, name)
        with st.lock:
            c = st.codes.get(p["code"])
            if c is None or c["client_id"] != client_id:
                raise self.aad(400, "invalid_grant", 9002313)
            if c["used"]:
                raise self.aad(400, "invalid_grant", 54005)
            if time.time() > c["expires"]:
                raise self.aad(400, "invalid_grant", 70008)
            if p["redirect_uri"] != c["redirect_uri"]:
                raise self.aad(400, "invalid_grant", 50011, p["redirect_uri"])
            digest = hashlib.sha256(p["code_verifier"].encode()).digest()
            if b64url(digest) != c["challenge"]:
                raise self.aad(400, "invalid_grant", 501481)
            c["used"] = True
            user, scopes = c["user"], c["scopes"]
        return st.issue_tokens(client_id, user, scopes,
                               "offline_access" in [s.lower() for s in scopes])

    def grant_refresh(self, p, app, client_id, tenant):
        """grant_refresh - new access token and a NEW refresh token"""
        st = self.server.state
        if not p.get("refresh_token"):
            raise self.aad(400, "invalid_request", 900144, "refresh_token")
        with st.lock:
            r = st.refresh.get(p["refresh_token"])
            if r is None:
                raise self.aad(400, "invalid_grant", 9002313)
            if r["client_id"] != client_id:
                raise self.aad(400, "invalid_grant", 70000, "refresh_token")
            if r["revoked"]:
                raise self.aad(400, "invalid_grant", 50173,
                               iso_time(datetime.datetime.fromtimestamp(
                                   r["issued"], datetime.timezone.utc)),
                               iso_time(datetime.datetime.fromtimestamp(
                                   r["revoked"], datetime.timezone.utc)))
            user, scopes = r["user"], r["scopes"]
        if p.get("scope"):
            scopes = p["scope"].split()
            if "offline_access" not in [s.lower() for s in scopes]:
                scopes.append("offline_access")
        return st.issue_tokens(client_id, user, scopes, True)

    def grant_client(self, p, app, client_id, tenant):
        """grant_client - client credentials with a secret or a JWT"""
        st = self.server.state
        if "secret" in app and p.get("client_secret") is not None \
                and "client_assertion" not in p:
            if not secrets.compare_digest(p["client_secret"].encode(),
                                          str(app["secret"]).encode()):
                raise self.aad(401, "invalid_client", 7000215, client_id)
        elif "certificate" in app and "client_assertion" in p:
            if p.get("client_assertion_type") != JWT_BEARER:
                raise self.aad(400, "invalid_request", 70000,
                               "client_assertion_type")
            why = verify_assertion(st, app, client_id,
                                   p["client_assertion"], tenant)
            if why:
                raise self.aad(401, "invalid_client", 700027, why)
        elif "client_assertion" in p:
            raise self.aad(401, "invalid_client", 700027,
                           "no certificate is registered for the app")
        elif "client_secret" in p:
            raise self.aad(401, "invalid_client", 7000215, client_id)
        else:
            raise self.aad(401, "invalid_client", 7000218)
        scope = p.get("scope", "")
        if not scope:
            raise self.aad(400, "invalid_request", 900144, "scope")
        if len(scope.split()) != 1 or not scope.endswith("/.default"):
            raise self.aad(400, "invalid_scope", 1002012, scope)
        resp = st.issue_tokens(client_id, None, [scope], False,
                               roles=list(app.get("roles", [])))
        return resp

    # --- Graph -------------------------------------------------------

    def www_authenticate(self):
        return ('Bearer realm="", authorization_uri="https://login.'
                'microsoftonline.com/common/oauth2/authorize", client_id="%s"'
                % GRAPH_APP_ID)

    def gerr(self, status, code, message, headers=None):
        return graph_error(status, code, message, self.request_id,
                           self.client_request_id, headers)

    def bearer(self):
        """bearer - the token info of the Authorization header, or 401"""
        auth = self.headers.get("Authorization", "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            raise self.gerr(401, "InvalidAuthenticationToken",
                            "Access token is empty.",
                            {"WWW-Authenticate": self.www_authenticate()})
        info, why = self.server.state.check_access(auth[7:].strip())
        if info is None:
            msg = ("Lifetime validation failed, the token is expired."
                   if why == "expired" else
                   "IDX14100: JWT is not well formed, there are no dots (.).")
            raise self.gerr(401, "InvalidAuthenticationToken", msg,
                            {"WWW-Authenticate": self.www_authenticate()})
        return info

    def mailbox(self, info, ident, verb):
        """mailbox - (upn, user info) addressed by /users/{id} or /me"""
        st = self.server.state
        if ident is None:
            if not info["user"]:
                raise self.gerr(400, "BadRequest", "/me request is only "
                                "valid with delegated authentication flow.")
            ident = info["user"]
        upn, uinfo = st.user(ident)
        if upn is None:
            if verb == "send":
                raise self.gerr(404, "ErrorInvalidUser", "The requested user "
                                "'%s' is invalid." % urllib.parse.unquote(
                                    ident))
            raise self.gerr(404, "Request_ResourceNotFound", "Resource '%s' "
                            "does not exist or one of its queried reference-"
                            "property objects are not present."
                            % urllib.parse.unquote(ident))
        if uinfo.get("rest_disabled"):
            raise self.gerr(404, "MailboxNotEnabledForRESTAPI", "The mailbox "
                            "is either inactive, soft-deleted, or is hosted "
                            "on-premise.")
        return upn, uinfo

    def ep_user(self, body, ident):
        """ep_user - GET /v1.0/users/{id} and /v1.0/me"""
        info = self.bearer()
        upn, uinfo = self.mailbox(info, ident, "read")
        return 200, {"@odata.context": "https://graph.microsoft.com/v1.0/"
                                       "$metadata#users/$entity",
                     "id": user_id(upn), "userPrincipalName": upn,
                     "mail": uinfo.get("mail", upn),
                     "displayName": uinfo.get("display_name", upn)}, {}

    def check_app_scope(self, info, upn):
        """check_app_scope - RBAC for Applications in Exchange Online: an
        app whose emu.json entry lists "mailboxes" reaches only those with
        its app-only tokens (tests/emulator/README.md)"""
        app = self.server.state.app(info["client_id"]) or {}
        scope = app.get("mailboxes")
        if scope is not None and upn.lower() not in [m.lower() for m in scope]:
            raise self.gerr(403, "ErrorAccessDenied", ACCESS_DENIED)

    def check_send_right(self, info, upn):
        """check_send_right - may this token send from mailbox upn?"""
        st = self.server.state
        if not info["user"]:
            self.check_app_scope(info, upn)
            if "Mail.Send" not in info["roles"]:
                raise self.gerr(403, "ErrorAccessDenied",
                                "Access is denied. Check credentials and "
                                "try again.")
            return
        me = info["user"].lower()
        if upn == me:
            if "mail.send" not in info["scopes"]:
                raise self.gerr(403, "ErrorAccessDenied",
                                "Access is denied. Check credentials and "
                                "try again.")
            return
        _, myinfo = st.user(me)
        send_as = [a.lower() for a in (myinfo or {}).get("send_as", [])]
        if upn not in send_as or "mail.send.shared" not in info["scopes"]:
            raise self.gerr(403, "ErrorSendAsDenied", SEND_AS_DENIED)

    def check_from(self, upn, uinfo, from_addr):
        """check_from - the From: address must be the mailbox or send-as"""
        if not from_addr:
            return
        allowed = {upn, str(uinfo.get("mail", upn)).lower()}
        allowed |= {a.lower() for a in uinfo.get("send_as", [])}
        if from_addr not in allowed:
            raise self.gerr(403, "ErrorSendAsDenied", SEND_AS_DENIED)

    def ep_sendmail(self, body, ident):
        """ep_sendmail - POST /v1.0/users/{id}/sendMail and /me/sendMail"""
        info = self.bearer()
        if len(body) > MAX_GRAPH_BODY:
            raise self.gerr(413, "RequestEntityTooLarge",
                            "The maximum request length supported is 4MB.")
        upn, uinfo = self.mailbox(info, ident, "send")
        self.check_send_right(info, upn)
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
        if ctype.lower() == "text/plain":
            rec, eml = self.parse_mime(body, upn, uinfo)
        elif ctype.lower() == "application/json":
            rec, eml = self.parse_json(body, upn, uinfo)
        else:
            raise self.gerr(415, "UnsupportedMediaType", "Content-Type '%s' "
                            "is not supported; use application/json or "
                            "text/plain." % ctype)
        rec.update({"mailbox": upn, "size": len(eml),
                    "request_id": self.request_id, "time": iso_time(),
                    "client_id": info["client_id"],
                    "principal": info["user"] or info["client_id"],
                    "auth": "delegated" if info["user"] else "app"})
        st = self.server.state
        rec = st.record(rec, eml)
        st.deliver_ndrs(upn, rec)
        if rec.get("save_to_sent_items", True) is not False:
            path = rec["eml_path"]
            st.file_later(lambda: st.file_sent(upn, path))
        return 202, b"", {}

    def parse_mime(self, body, upn, uinfo):
        """parse_mime - decode a base64 MIME body; (record, eml bytes)"""
        eml = self.decode_mime(body)
        # Line ends as Microsoft's MIME parsing reads them: a bare CR or a
        # bare LF ends a header line like CRLF (the feedparser splits at
        # all three).  Exchange Online delivered to a Bcc: after a bare CR
        # (issue 7.2); see README.md, "Recipients in MIME mode".
        msg = email.parser.BytesParser(policy=email.policy.compat32) \
            .parsebytes(eml, headersonly=True)
        to, cc, bcc, rcpts = mime_recipients(msg)
        if not rcpts:
            raise self.gerr(400, "ErrorInvalidRecipients",
                            "At least one recipient is not valid., A message "
                            "can't be sent because it contains no "
                            "recipients.")
        froms = addresses(msg.get_all("From") or [])
        from_addr = froms[0] if froms else None
        self.check_from(upn, uinfo, from_addr)
        mid = msg.get("Message-ID")
        return {"form": "mime", "recipients": rcpts, "to": to, "cc": cc,
                "bcc": bcc, "from": from_addr,
                "subject": header_text(msg.get("Subject")),
                "message_id": str(mid).strip() if mid else None}, eml

    def parse_json(self, body, upn, uinfo):
        """parse_json - a JSON-form sendMail body; (record, eml bytes)"""
        try:
            req = json.loads(body)
            message = req["message"]
            if not isinstance(message, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise self.gerr(400, "ErrorInvalidRequest", "Cannot read the "
                            "request body.") from None
        self.check_json_message(message)
        return dict(self.json_envelope(message, upn, uinfo), form="json",
                    subject=message.get("subject"),
                    message_id=message.get("internetMessageId"),
                    save_to_sent_items=req.get("saveToSentItems", True)), \
            json_to_eml(message, upn)

    def json_envelope(self, message, upn, uinfo):
        """json_envelope - recipients and From of a JSON message, checked:
        {"recipients", "to", "cc", "bcc", "from"}"""
        to = json_recipients(message, "toRecipients")
        cc = json_recipients(message, "ccRecipients")
        bcc = json_recipients(message, "bccRecipients")
        rcpts = self.draft_recipients(to, cc, bcc)
        frm = ((message.get("from") or {}).get("emailAddress") or {})
        from_addr = (frm.get("address") or "").lower() or None
        self.check_from(upn, uinfo, from_addr)
        return {"recipients": rcpts, "to": to, "cc": cc, "bcc": bcc,
                "from": from_addr}

    # --- Graph: mailboxes (m365-fetch) ---------------------------------

    def route_mail(self, segs, body):
        """route_mail - mailFolders, messages, delta, $value, move; False
        when the path is not a mailbox endpoint"""
        low = [s.lower() for s in segs]
        if len(segs) >= 4 and low[1] == "users":
            ident, rest = segs[2], segs[3:]
        elif len(segs) >= 3 and low[1] == "me":
            ident, rest = None, segs[2:]
        else:
            return False
        rest = [urllib.parse.unquote(s) for s in rest]
        head = rest[0]
        if head.lower().startswith("mailfolders(") and head.endswith(")"):
            inner = head[len("mailfolders("):-1].strip().strip("'\"")
            rest = ["mailFolders", inner] + rest[1:]
        r = [s.lower() for s in rest]
        m = self.command
        route = None
        if r[0] == "mailfolders":
            if len(r) == 1:
                route = {"GET": ("mailFolders", self.ep_folders_list),
                         "POST": ("mailFolders", self.ep_folder_create)
                         }.get(m)
                arg = (ident, None)
            elif len(r) == 2 and m == "GET":
                route, arg = ("mailFolders", self.ep_folder_get), \
                    (ident, rest[1])
            elif len(r) == 3 and r[2] == "childfolders":
                route = {"GET": ("mailFolders", self.ep_folders_list),
                         "POST": ("mailFolders", self.ep_folder_create)
                         }.get(m)
                arg = (ident, rest[1])
            elif len(r) == 3 and r[2] == "messages" and m == "GET":
                route, arg = ("message", self.ep_messages_list), \
                    (ident, rest[1])
            elif len(r) == 3 and r[2] == "messages" and m == "POST":
                route, arg = ("draft", self.ep_draft_create), \
                    (ident, rest[1])
            elif r[2:] == ["messages", "delta"] and m == "GET":
                route, arg = ("delta", self.ep_delta), (ident, rest[1])
            elif len(r) >= 4 and r[2] == "messages":
                rest, r = rest[2:], r[2:]
        if route is None and r == ["messages"] and m == "POST":
            route, arg = ("draft", self.ep_draft_create), (ident, None)
        if route is None and r[0] == "messages" and len(r) in (2, 3, 4):
            arg = (ident, rest[1])
            if len(r) == 2:
                route = {"GET": ("message", self.ep_message_get),
                         "PATCH": ("patch", self.ep_patch),
                         "DELETE": ("delete", self.ep_delete)}.get(m)
            elif len(r) == 4:
                if r[2] == "attachments" and m == "POST" and r[3] in (
                        "createuploadsession",
                        "microsoft.graph.createuploadsession"):
                    route = ("createUploadSession", self.ep_create_session)
            elif r[2] == "$value" and m == "GET":
                route = ("value", self.ep_value)
            elif r[2] == "move" and m == "POST":
                route = ("move", self.ep_move)
            elif r[2] == "attachments":
                route = {"GET": ("message", self.ep_attach_list),
                         "POST": ("attachment", self.ep_attach)}.get(m)
            elif r[2] == "send" and m == "POST":
                route = ("send", self.ep_send)
        if route is None:
            return False
        self.with_faults(route[0], body, arg, route[1])
        return True

    def check_mail_right(self, info, upn, uinfo, write, basic=False):
        """check_mail_right - may this token read (write) mailbox upn?
        basic: only properties Mail.ReadBasic covers ("except for body,
        bodyPreview, uniqueBody, attachments, extensions, and any extended
        properties"; the least privilege of "List messages")"""
        if not info["user"]:
            self.check_app_scope(info, upn)
            roles = info["roles"]
            if "Mail.ReadWrite" in roles or (not write and
                                             "Mail.Read" in roles) or (
                    basic and ("Mail.ReadBasic.All" in roles or
                               "Mail.ReadBasic" in roles)):
                return
            raise self.gerr(403, "ErrorAccessDenied", ACCESS_DENIED)
        me, scopes = info["user"].lower(), info["scopes"]
        shared = "mail.readwrite.shared" in scopes or (
            not write and "mail.read.shared" in scopes) or (
            basic and "mail.readbasic.shared" in scopes)
        if upn == me:
            if "mail.readwrite" in scopes or shared or (
                    not write and "mail.read" in scopes) or (
                    basic and "mail.readbasic" in scopes):
                return
        else:
            fa = [a.lower() for a in uinfo.get("full_access", [])]
            if shared and me in fa:
                return
        raise self.gerr(403, "ErrorAccessDenied", ACCESS_DENIED)

    def mail_target(self, ident, write, basic=False):
        """mail_target - (upn, Mailbox) after the token and right checks"""
        info = self.bearer()
        upn, uinfo = self.mailbox(info, ident, "read")
        self.check_mail_right(info, upn, uinfo, write, basic)
        return upn, self.server.state.mbox(upn)

    def bad_id(self, ref, what="object"):
        """bad_id - 404 for a well-formed unknown id, else 400 malformed"""
        if ref.startswith(("AAMk", "AQMk", "AAkA")) and len(ref) > 40:
            return self.gerr(404, "ErrorItemNotFound", ITEM_NOT_FOUND)
        return self.gerr(400, "ErrorInvalidIdMalformed", "Id is malformed.")

    def find_folder(self, mb, ref):
        f = mb.folder(ref)
        if f is None:
            raise self.bad_id(ref)
        return f

    def find_message(self, mb, mid):
        msg = mb.find(mid)
        if msg is None:
            raise self.bad_id(mid)
        return msg

    def select(self):
        """select - the $select names, or None"""
        sel = self.query.get("$select")
        if not sel:
            return None
        return [s.strip() for s in sel[0].split(",") if s.strip()]

    def json_body(self, body):
        try:
            obj = json.loads(body) if body.strip() else {}
            if isinstance(obj, dict):
                return obj
        except ValueError:
            pass
        raise self.gerr(400, "BadRequest", "Unable to read JSON request "
                        "payload. Please ensure Content-Type header is set "
                        "and payload is of valid JSON format.")

    def int_query(self, name, default):
        try:
            v = int(self.query.get(name, [default])[0])
            if v < 0:
                raise ValueError
            return v
        except (TypeError, ValueError):
            raise self.gerr(400, "ErrorInvalidUrlQuery", "The value of %s "
                            "is not a valid number." % name) from None

    def self_url(self, params):
        """self_url - this request's URL (as the client wrote the path) with
        new query parameters: for @odata.nextLink and deltaLink"""
        host = self.headers.get("Host") or "graph.microsoft.com"
        path = urllib.parse.urlsplit(self.path).path
        q = "&".join("%s=%s" % (k, urllib.parse.quote(str(v), safe="'"))
                     for k, v in params)
        return "https://%s%s%s" % (host, path, "?" + q if q else "")

    def ep_folders_list(self, body, arg):
        """ep_folders_list - GET mailFolders and mailFolders/{id}/
        childFolders [?$filter=displayName eq 'X']"""
        st = self.server.state
        upn, mb = self.mail_target(arg[0], False)
        top = self.int_query("$top", 10)
        skip = self.int_query("$skip", 0)
        flt = self.query.get("$filter", [None])[0]
        with st.lock:
            parent = mb.root_id() if arg[1] is None else \
                self.find_folder(mb, arg[1])["id"]
            folders = mb.children(parent)
            if flt is not None:
                m = re.match(r"^\s*displayName\s+eq\s+'((?:[^']|'')*)'\s*$",
                             flt, re.I)
                if not m:
                    raise self.gerr(400, "ErrorInvalidUrlQueryFilter",
                                    "The query filter contains one or more "
                                    "invalid nodes.")
                want = m.group(1).replace("''", "'").lower()
                folders = [f for f in folders
                           if f["displayName"].lower() == want]
            page = [mb.render_folder(f) for f in folders[skip:skip + top]]
        out = {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata"
                                 "#users('%s')/mailFolders" % upn,
               "value": page}
        if skip + top < len(folders):
            params = [("$top", top), ("$skip", skip + top)]
            if flt is not None:
                params.insert(0, ("$filter", flt))
            out["@odata.nextLink"] = self.self_url(params)
        return 200, out, {}

    def ep_folder_create(self, body, arg):
        """ep_folder_create - POST mailFolders (or .../childFolders)
        {"displayName"}"""
        st = self.server.state
        upn, mb = self.mail_target(arg[0], True)
        name = self.json_body(body).get("displayName")
        if not isinstance(name, str) or not name.strip():
            raise self.gerr(400, "ErrorInvalidParameter", "The value of the "
                            "parameter 'DisplayName' is empty.")
        with st.lock:
            parent = mb.root_id() if arg[1] is None else \
                self.find_folder(mb, arg[1])["id"]
            if any(f["displayName"].lower() == name.lower()
                   for f in mb.children(parent)):
                raise self.gerr(409, "ErrorFolderExists", "A folder with "
                                "the specified name already exists.")
            return 201, mb.render_folder(mb.add_folder(name, None,
                                                       parent)), {}

    def ep_folder_get(self, body, arg):
        """ep_folder_get - GET mailFolders/{id | well-known name}"""
        st = self.server.state
        upn, mb = self.mail_target(arg[0], False)
        with st.lock:
            return 200, mb.render_folder(self.find_folder(mb, arg[1])), {}

    def message_filter(self):
        """message_filter - the internetMessageId of "$filter=
        internetMessageId eq '<id@host>'" (the Sent Items look-up of
        graph-facts.md 4), or None without $filter; other filters: 400"""
        flt = self.query.get("$filter")
        if not flt:
            return None
        m = re.match(r"^\s*internetMessageId\s+eq\s+'((?:[^']|'')*)'\s*$",
                     flt[0], re.IGNORECASE)
        if m is None:
            raise self.gerr(400, "ErrorInvalidUrlQueryFilter", "The query "
                            "filter '%s' is not supported by this emulator "
                            "(only internetMessageId eq '...')." % flt[0])
        return m.group(1).replace("''", "'")

    def ep_messages_list(self, body, arg):
        """ep_messages_list - GET mailFolders/{id}/messages ($top/$skip,
        $filter on internetMessageId)"""
        st = self.server.state
        upn, mb = self.mail_target(arg[0], False, basic=True)
        top = self.int_query("$top", 10)
        skip = self.int_query("$skip", 0)
        sel = self.select()
        want = self.message_filter()
        with st.lock:
            f = self.find_folder(mb, arg[1])
            msgs = mb.folder_messages(f["id"])
            if want is not None:
                st.stats["sentitems_lookups"] += 1
                msgs = [m for m in msgs if m["internetMessageId"] == want]
            page = [mb.render(m, sel, self.immutable())
                    for m in msgs[skip:skip + top]]
        out = {"value": page}
        if skip + top < len(msgs):
            params = [("$top", top), ("$skip", skip + top)]
            if sel:
                params.insert(0, ("$select", ",".join(sel)))
            if want is not None:
                params.insert(0, ("$filter", self.query["$filter"][0]))
            out["@odata.nextLink"] = self.self_url(params)
        return 200, out, self.prefer_applied()

    def prefer_page(self):
        """prefer_page - odata.maxpagesize of the Prefer header, or None"""
        for part in self.headers.get("Prefer", "").split(","):
            k, _, v = part.strip().partition("=")
            if k.strip().lower() == "odata.maxpagesize":
                try:
                    return max(1, min(int(v.strip().strip('"')),
                                      MAX_DELTA_PAGE))
                except ValueError:
                    return None
        return None

    def gone(self, target=(None, None), code=None, message=None):
        """gone - 410 SyncStateNotFound; with target (upn, folder id) the
        folder's older delta and skip tokens die too"""
        st = self.server.state
        upn, fid = target
        if upn:
            with st.lock:
                f = st.mbox(upn).folders.get(fid)
                if f is not None:
                    f["epoch"] += 1
        return self.gerr(410, code or "SyncStateNotFound", message or
                         "The sync state is not found or has expired. "
                         "Please resync.",
                         {"Location": self.self_url([])})

    def token_target(self):
        """token_target - (upn, folder id) of this request's delta or
        skip token; (None, None) when it names none"""
        st = self.server.state
        skt = self.query.get("$skiptoken", [None])[0]
        if skt:
            with st.lock:
                sess = st.delta_sessions.get(skt)
            return (sess["mb"], sess["fid"]) if sess else (None, None)
        dt = self.query.get("$deltatoken", [None])[0]
        try:
            tok = json.loads(b64url_decode(dt))
            return tok["m"], tok["f"]
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None, None

    def ep_delta(self, body, arg):
        """ep_delta - GET mailFolders/{id}/messages/delta: full rounds,
        paging with $skiptoken, incremental rounds with $deltatoken"""
        st = self.server.state
        upn, mb = self.mail_target(arg[0], False)
        page = self.prefer_page()
        skt = self.query.get("$skiptoken", [None])[0]
        dt = self.query.get("$deltatoken", [None])[0]
        headers = {}
        if page:
            headers["Preference-Applied"] = "odata.maxpagesize=%d" % page
        with st.lock:
            f = self.find_folder(mb, arg[1])
            now = time.time()
            for k in [k for k, s in st.delta_sessions.items()
                      if now - s["time"] > DELTA_SESSION_TTL]:
                del st.delta_sessions[k]
            if skt:
                sess = st.delta_sessions.get(skt)
                if sess is None or sess["mb"] != upn:
                    raise self.gone()
                if sess["fid"] != f["id"]:
                    raise self.gerr(400, "ErrorInvalidUrlQuery", "The "
                                    "$skiptoken belongs to another folder.")
                if sess["epoch"] != f["epoch"]:
                    raise self.gone()
            else:
                since, sel = None, self.select()
                if dt:
                    try:
                        tok = json.loads(b64url_decode(dt))
                        since, tsel = int(tok["s"]), tok.get("q")
                        tm, tf, te = tok["m"], tok["f"], tok["e"]
                    except (ValueError, KeyError, TypeError,
                            binascii.Error):
                        raise self.gerr(400, "ErrorInvalidUrlQuery",
                                        "The delta token is invalid.") \
                            from None
                    if tm != upn or tf != f["id"]:
                        raise self.gerr(400, "ErrorInvalidUrlQuery", "The "
                                        "delta token belongs to another "
                                        "folder.")
                    if te != f["epoch"]:
                        raise self.gone()
                    sel = sel or tsel
                sess = {"mb": upn, "fid": f["id"], "epoch": f["epoch"],
                        "items": mb.changes(f["id"], since), "offset": 0,
                        "upto": mb.seq, "select": sel, "time": now,
                        "page": page or self.int_query("$top", 0) or
                        DEFAULT_DELTA_PAGE}
            size = page or sess["page"]
            off = sess["offset"]
            value = []
            for kind, mid in sess["items"][off:off + size]:
                msg = mb.msgs.get(mid)
                if kind == "msg" and msg and msg["folder"] == f["id"]:
                    item = mb.render(msg, sess["select"])
                else:
                    item = {"id": mid, "@removed": {"reason": "deleted"}}
                item["@odata.type"] = "#microsoft.graph.message"
                value.append(item)
            out = {"@odata.context": "https://graph.microsoft.com/v1.0/"
                                     "$metadata#Collection(message)",
                   "value": value}
            if off + size < len(sess["items"]):
                new = secrets.token_urlsafe(24)
                st.delta_sessions[new] = dict(sess, offset=off + size,
                                              page=size, time=now)
                out["@odata.nextLink"] = self.self_url([("$skiptoken", new)])
            else:
                tok = b64url(json.dumps(
                    {"m": upn, "f": f["id"], "s": sess["upto"],
                     "e": f["epoch"], "q": sess["select"]}).encode())
                out["@odata.deltaLink"] = self.self_url(
                    [("$deltatoken", tok)])
        return 200, out, headers

    def ep_message_get(self, body, arg):
        """ep_message_get - GET messages/{id}"""
        st = self.server.state
        upn, mb = self.mail_target(arg[0], False, basic=True)
        with st.lock:
            return 200, mb.render(self.find_message(mb, arg[1]),
                                  self.select(), self.immutable()), \
                self.prefer_applied()

    def ep_value(self, body, arg):
        """ep_value - GET messages/{id}/$value: the MIME, streamed"""
        st = self.server.state
        upn, mb = self.mail_target(arg[0], False)
        with st.lock:
            path = self.find_message(mb, arg[1])["path"]
        try:
            f = open(path, "rb")
        except OSError:
            raise self.gerr(404, "ErrorItemNotFound", ITEM_NOT_FOUND) \
                from None
        return 200, MimeStream(f), {}

    def ep_patch(self, body, arg):
        """ep_patch - PATCH messages/{id} (isRead)"""
        st = self.server.state
        upn, mb = self.mail_target(arg[0], True)
        req = self.json_body(body)
        changes = {}
        if "isRead" in req:
            if not isinstance(req["isRead"], bool):
                raise self.gerr(400, "BadRequest", "Cannot convert the "
                                "literal '%s' to the expected type "
                                "'Edm.Boolean'." % req["isRead"])
            changes["isRead"] = req["isRead"]
        flag = req.get("flag")
        if isinstance(flag, dict) and flag.get("flagStatus") in (
                "notFlagged", "flagged", "complete"):
            changes["flagStatus"] = flag["flagStatus"]
        if isinstance(req.get("categories"), list):
            changes["categories"] = [str(c) for c in req["categories"]]
        with st.lock:
            mid = self.find_message(mb, arg[1])["id"]
            return 200, mb.render(mb.update(mid, changes),
                                  immutable=self.immutable()), {}

    def ep_move(self, body, arg):
        """ep_move - POST messages/{id}/move: 201, the message, NEW id"""
        st = self.server.state
        upn, mb = self.mail_target(arg[0], True)
        dest = self.json_body(body).get("destinationId")
        if not isinstance(dest, str) or not dest:
            raise self.gerr(400, "ErrorInvalidParameter", "The value of the "
                            "parameter 'DestinationId' is empty.")
        with st.lock:
            mid = self.find_message(mb, arg[1])["id"]
            f = self.find_folder(mb, dest)
            return 201, mb.render(mb.move(mid, f["id"]),
                                  immutable=self.immutable()), {}

    def ep_delete(self, body, arg):
        """ep_delete - DELETE messages/{id}: to Deleted Items; 204"""
        st = self.server.state
        upn, mb = self.mail_target(arg[0], True)
        with st.lock:
            msg = self.find_message(mb, arg[1])
            trash = mb.folder("deleteditems")
            if msg["folder"] == trash["id"]:
                st.drop_message(mb, msg["id"])
            else:
                mb.move(msg["id"], trash["id"])
                st.close_sessions(msg, "orphaned")
        return 204, b"", {}

    # --- Graph: drafts, attachments, upload sessions, send -------------

    def immutable(self):
        """immutable - the request asks for immutable ids (Prefer:
        IdType="ImmutableId", outlook-immutable-id)"""
        for part in self.headers.get("Prefer", "").split(","):
            k, _, v = part.strip().partition("=")
            if k.strip().lower() == "idtype" and \
                    v.strip().strip('"').lower() == "immutableid":
                return True
        return False

    def prefer_applied(self):
        return {"Preference-Applied": 'IdType="ImmutableId"'} \
            if self.immutable() else {}

    def host_port(self):
        """host_port - (host name, port) the client addressed"""
        host = self.headers.get("Host") or ""
        m = re.match(r"^\[([^\]]*)\](?::(\d+))?$|^([^:]*)(?::(\d+))?$", host)
        name = (m.group(1) or m.group(3) or "") if m else ""
        port = (m.group(2) or m.group(4)) if m else None
        return name.lower(), int(port or self.server.server_address[1])

    def upload_host(self):
        """upload_host - the host name of uploadUrl: never the name the
        client used for Graph (Microsoft: outlook.office.com)"""
        name, _ = self.host_port()
        cfg = self.server.state.cfg("upload_host")
        if cfg:
            return str(cfg).lower()
        if name in OUTLOOK_HOSTS:
            return OUTLOOK_HOSTS[name]
        return "127.0.0.1" if name == "localhost" else "localhost"

    def upload_limit(self, key):
        return int(self.server.state.cfg(key, UPLOAD_DEFAULTS[key]))

    def mail_body(self, body):
        """mail_body - refuse a request body over Graph's 4 MB limit"""
        if len(body) > MAX_GRAPH_BODY:
            raise self.gerr(413, "RequestEntityTooLarge",
                            "The maximum request length supported is 4MB.")

    def size_check(self, uinfo, msg, more):
        """size_check - the user's max_send_size (bytes, optional): 400
        ErrorMessageSizeExceeded when the draft would grow beyond it"""
        limit = uinfo.get("max_send_size")
        total = draft_size(msg) + more
        if limit and total > int(limit):
            raise self.gerr(400, "ErrorMessageSizeExceeded", "The message "
                            "exceeds the maximum supported size.")

    def ep_draft_create(self, body, arg):
        """ep_draft_create - POST messages (or mailFolders/{id}/messages):
        a draft from a JSON message or from base64 MIME (text/plain);
        201 with the message"""
        st = self.server.state
        upn, mb = self.mail_target(arg[0], True)
        _, uinfo = st.user(upn)
        self.mail_body(body)
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
        path = st.spool_path()
        atts = []
        if ctype.lower() == "text/plain":
            eml = self.decode_mime(body)
            with open(path, "wb") as f:
                f.write(eml)
            meta = mime_meta(path)
            hdr = email.parser.BytesParser(policy=email.policy.compat32) \
                .parsebytes(eml, headersonly=True)
            meta["bcc"] = [(header_text(n) or "", a) for n, a in
                           email.utils.getaddresses(
                               [str(v) for v in hdr.get_all("Bcc") or []])
                           if a]
            draft = {"form": "mime"}
        elif ctype.lower() == "application/json":
            message = self.json_body(body)
            self.check_json_message(message)
            draft = {"form": "json", "message": message}
            for a in message.get("attachments") or []:
                atts.append(self.new_attachment(a))
            with open(path, "wb") as f:
                f.write(json_to_eml(dict(message, attachments=None), upn))
            meta = json_meta(message, path)
        else:
            raise self.gerr(415, "UnsupportedMediaType", "Content-Type '%s' "
                            "is not supported; use application/json or "
                            "text/plain." % ctype)
        meta.update(isDraft=True, draft=draft, attachments=atts, owned=True)
        with st.lock:
            fid = mb.folder("drafts")["id"] if arg[1] is None else \
                self.find_folder(mb, arg[1])["id"]
            msg = mb.add_message(fid, path, meta, True)
            st.stats["drafts_created"] += 1
            out = mb.render(msg, None, self.immutable())
        out["@odata.context"] = ("https://graph.microsoft.com/v1.0/$metadata"
                                 "#users('%s')/messages/$entity"
                                 % user_id(upn))
        if draft["form"] == "json":
            out["body"] = draft["message"].get("body") or \
                {"contentType": "text", "content": ""}
        return 201, out, self.prefer_applied()

    def decode_mime(self, body):
        """decode_mime - the MIME bytes of a base64 text/plain body"""
        compact = bytes(b for b in body if b not in b" \t\r\n")
        try:
            return base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            raise self.gerr(400, "ErrorMimeContentInvalidBase64String",
                            "Invalid base64 string for MIME content.") \
                from None

    def check_json_message(self, message):
        """check_json_message - the rules of a JSON message: X- headers
        only, recipients with an address"""
        for h in message.get("internetMessageHeaders") or []:
            if not str((h or {}).get("name", "")).lower().startswith("x-"):
                raise self.gerr(400, "InvalidInternetMessageHeader",
                                "The internet message header name '%s' "
                                "should start with 'x-' or 'X-'."
                                % (h or {}).get("name"))
        try:
            for field in ("toRecipients", "ccRecipients", "bccRecipients",
                          "replyTo"):
                json_recipients(message, field)
        except ValueError:
            raise self.gerr(400, "ErrorInvalidRecipients", "At least one "
                            "recipient is not valid.") from None

    def new_attachment(self, a, data=None):
        """new_attachment - a fileAttachment from its JSON (contentBytes,
        or data already in a file: (path, size, sha256))"""
        st = self.server.state
        if not isinstance(a, dict):
            raise self.gerr(400, "ErrorInvalidRequest", "An attachment must "
                            "be a JSON object.")
        otype = str(a.get("@odata.type", "")).lstrip("#").lower()
        if data is None and otype != "microsoft.graph.fileattachment":
            if otype in ("", "microsoft.graph.attachment"):
                raise self.gerr(422, "UnprocessableType", "Cannot process "
                                "input of abstract type 'Microsoft."
                                "OutlookServices.Attachment'")
            raise self.gerr(400, "ErrorInvalidRequest", "m365emu models "
                            "fileAttachment only, not %s." % otype)
        aid = graph_id("AAMkAG", 60)
        path = os.path.join(st.attach_dir, uuid.uuid4().hex + ".bin")
        if data is None:
            try:
                raw = base64.b64decode(str(a.get("contentBytes") or ""),
                                       validate=True)
            except (binascii.Error, ValueError):
                raise self.gerr(400, "BadRequest", "Cannot convert the "
                                "literal to the expected type 'Edm.Binary'."
                                ) from None
            with open(path, "wb") as f:
                f.write(raw)
            size, digest = len(raw), hashlib.sha256(raw).hexdigest()
        else:
            os.replace(data[0], path)
            size, digest = data[1], data[2]
        cid = a.get("contentId")
        return {"id": aid, "name": str(a.get("name") or ""),
                "contentType": str(a.get("contentType") or
                                   "application/octet-stream"),
                "size": size, "isInline": bool(a.get("isInline")),
                "contentId": str(cid) if cid else None, "sha256": digest,
                "path": path, "via": "session" if data else "post",
                "lastModifiedDateTime": iso_time()}

    def render_attachment(self, att, content=False):
        out = {"@odata.type": "#microsoft.graph.fileAttachment",
               "id": att["id"], "lastModifiedDateTime":
               att["lastModifiedDateTime"], "name": att["name"],
               "contentType": att["contentType"], "size": att["size"],
               "isInline": att["isInline"], "contentId": att["contentId"],
               "contentLocation": None}
        if content:
            with open(att["path"], "rb") as f:
                out["contentBytes"] = base64.b64encode(f.read()).decode()
        return out

    def draft_target(self, arg, write=True):
        """draft_target - (upn, user info, Mailbox, message) of a
        messages/{id}/... request"""
        st = self.server.state
        upn, mb = self.mail_target(arg[0], write)
        _, uinfo = st.user(upn)
        with st.lock:
            msg = self.find_message(mb, arg[1])
        return upn, uinfo, mb, msg

    def ep_attach(self, body, arg):
        """ep_attach - POST messages/{id}/attachments (fileAttachment,
        the request under 4 MB): 201 with the attachment"""
        st = self.server.state
        upn, uinfo, mb, msg = self.draft_target(arg)
        self.mail_body(body)
        req = self.json_body(body)
        try:
            more = len(base64.b64decode(str(req.get("contentBytes") or ""),
                                        validate=True))
        except (binascii.Error, ValueError):
            more = 0
        self.size_check(uinfo, msg, more)
        att = self.new_attachment(req)
        with st.lock:
            if mb.find(arg[1]) is None:     # deleted meanwhile
                unlink_all([att["path"]])
                raise self.bad_id(arg[1])
            msg.setdefault("attachments", []).append(att)
            mb.update(msg["id"], {})
        out = self.render_attachment(att, content=True)
        out["@odata.context"] = ("https://graph.microsoft.com/v1.0/$metadata"
                                 "#users('%s')/messages('%s')/attachments/"
                                 "$entity" % (user_id(upn), arg[1]))
        return 201, out, {}

    def ep_attach_list(self, body, arg):
        """ep_attach_list - GET messages/{id}/attachments (no content)"""
        upn, uinfo, mb, msg = self.draft_target(arg, write=False)
        return 200, {"value": [self.render_attachment(a) for a in
                               msg.get("attachments") or []]}, {}

    def ep_create_session(self, body, arg):
        """ep_create_session - POST messages/{id}/attachments/
        createUploadSession {"AttachmentItem": {...}}: 201 uploadSession
        with a pre-authenticated uploadUrl on the upload host name"""
        st = self.server.state
        upn, uinfo, mb, msg = self.draft_target(arg)
        req = {k.lower(): v for k, v in self.json_body(body).items()}
        item = req.get("attachmentitem")
        if not isinstance(item, dict):
            raise self.gerr(400, "ErrorInvalidParameter", "The value of the "
                            "parameter 'AttachmentItem' is empty.")
        item = {k[:1].lower() + k[1:]: v for k, v in item.items()}
        if str(item.get("attachmentType", "")).lower() != "file":
            raise self.gerr(400, "ErrorInvalidParameter", "m365emu models "
                            "attachmentType file only.")
        size = item.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise self.gerr(400, "ErrorInvalidParameter", "The value of the "
                            "parameter 'Size' is not valid.")
        if size < self.upload_limit("upload_session_min"):
            raise self.gerr(400, "ErrorAttachmentSizeShouldNotBeLessThan"
                            "MinimumSize", "Attachment size must be greater "
                            "than the minimum size.")
        if size > self.upload_limit("upload_session_max"):
            raise self.gerr(400, "ErrorMessageSizeExceeded", "The message "
                            "exceeds the maximum supported size.")
        self.size_check(uinfo, msg, size)
        info = self.bearer()
        sid = graph_id("AAMkAD")
        host, (_, port) = self.upload_host(), self.host_port()
        now = time.time()
        lifetime = self.upload_limit("upload_session_lifetime")
        url = ("https://%s:%d/api/v2.0/Users('%s@%s')/Messages('%s')/"
               "AttachmentSessions('%s')" % (
                   "[%s]" % host if ":" in host else host, port,
                   user_id(upn), st.cfg("tenant_id"), arg[1], sid))
        sess = {"id": sid, "mailbox": upn, "message": msg["immutableId"],
                "message_ref": arg[1], "item": item, "size": size,
                "name": str(item.get("name") or ""), "host": host,
                "url": url, "token": secrets.token_urlsafe(48),
                "created": now, "expires": now + lifetime, "received": 0,
                "chunks": [], "refused": [], "state": "open",
                "client_id": info["client_id"], "lock": threading.Lock(),
                "sha": hashlib.sha256(), "attachment": None,
                "path": os.path.join(st.attach_dir, sid.rstrip("=") +
                                     ".part")}
        open(sess["path"], "wb").close()
        with st.lock:
            st.uploads[sid] = sess
        return 201, {"@odata.context": "https://graph.microsoft.com/v1.0/"
                     "$metadata#microsoft.graph.uploadSession",
                     "uploadUrl": url + "?authtoken=" + sess["token"],
                     "expirationDateTime": iso_time(utcnow() +
                                                    datetime.timedelta(
                                                        seconds=lifetime)),
                     "nextExpectedRanges": ["0-"]}, {}

    def expire_session(self):
        """expire_session - the "expire" fault: this request's upload
        session expires now"""
        st = self.server.state
        with st.lock:
            sess = st.uploads.get(upload_ref(self.path)[0])
            if sess is not None:
                sess["expires"] = time.time() - 1

    def upload_refuse(self, sess, status, code, message, headers=None):
        """upload_refuse - an EmuError for an upload request, noted in the
        session's "refused" list for the tests"""
        if sess is not None:
            with self.server.state.lock:
                sess["refused"].append({"status": status, "code": code,
                                        "method": self.command})
        return self.gerr(status, code, message, headers)

    def ep_upload(self, body, arg):
        """ep_upload - PUT (a byte range) or DELETE (cancel) on an
        uploadUrl: no Authorization header, the token is in the URL"""
        st = self.server.state
        sid, token = upload_ref(self.path)
        with st.lock:
            sess = st.uploads.get(sid)
        if sess is None or self.host_port()[0] != sess["host"]:
            # The pre-authenticated URL is valid on its host only.
            raise self.upload_refuse(sess, 404, "ErrorItemNotFound",
                                     ITEM_NOT_FOUND)
        if self.headers.get("Authorization"):
            # Microsoft: "Do not specify an Authorization request header";
            # a Graph token sent there fails its audience check.
            raise self.upload_refuse(
                sess, 401, "InvalidAudienceForResource", "The audience claim "
                "value is invalid for current resource. Audience claim is "
                "'https://graph.microsoft.com/', request url is '%s' and "
                "resource type is 'Exchange'." % sess["url"],
                {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if not token or not secrets.compare_digest(
                token.encode("utf-8"), sess["token"].encode("utf-8")):
            raise self.upload_refuse(sess, 401, "InvalidAuthenticationToken",
                                     "The authtoken of the upload URL is "
                                     "missing or invalid.")
        if time.time() > sess["expires"]:
            raise self.upload_refuse(sess, 401, "InvalidAuthenticationToken",
                                     "Lifetime validation failed, the token "
                                     "is expired.")
        with st.lock:
            mb = st.mbox(sess["mailbox"])
            msg = mb.find(sess["message"])
        if sess["state"] != "open" or msg is None:
            raise self.upload_refuse(sess, 404, "ErrorItemNotFound",
                                     ITEM_NOT_FOUND)
        if self.command == "DELETE":
            with sess["lock"]:
                sess["state"] = "cancelled"
                unlink_all([sess["path"]])
            return 204, b"", {}
        with sess["lock"]:
            return self.upload_put(sess, mb)

    def upload_put(self, sess, mb):
        """upload_put - one byte range, streamed to the session's file;
        200 with nextExpectedRanges, or 201 + Location on the last one"""
        st = self.server.state
        m = re.match(r"^\s*bytes\s+(\d+)-(\d+)/(\d+)\s*$",
                     self.headers.get("Content-Range", ""))
        if not m:
            raise self.upload_refuse(sess, 400, "ErrorInvalidContentRange",
                                     "The Content-Range header must be "
                                     "'bytes {start}-{end}/{total}'.")
        start, end, total = (int(x) for x in m.groups())
        length = self.headers.get("Content-Length")
        if total != sess["size"] or end < start or end >= total:
            raise self.upload_refuse(sess, 400, "ErrorInvalidContentRange",
                                     "The Content-Range %s does not fit the "
                                     "attachment of %d bytes."
                                     % (m.group(0).strip(), sess["size"]))
        if length is not None and int(length) != end - start + 1:
            raise self.upload_refuse(sess, 400, "ErrorInvalidContentRange",
                                     "Content-Length %s does not match the "
                                     "Content-Range." % length)
        if end - start + 1 > self.upload_limit("upload_chunk_max"):
            raise self.upload_refuse(sess, 413, "RequestEntityTooLarge",
                                     "Upload each byte range in less than "
                                     "4 MB.")
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
        if ctype.lower() != "application/octet-stream":
            raise self.upload_refuse(sess, 415, "UnsupportedMediaType",
                                     "Specify Content-Type: "
                                     "application/octet-stream.")
        if start != sess["received"]:
            raise self.upload_refuse(
                sess, 416, "ErrorInvalidRange", "The range %d-%d does not "
                "start at the next expected byte %d (bytes go up in order, "
                "without overlap or gap)." % (start, end, sess["received"]))
        got = 0
        sha = sess["sha"].copy()
        try:
            with open(sess["path"], "r+b") as f:
                f.seek(start)
                for data in self.body_chunks():
                    got += len(data)
                    if got > end - start + 1:
                        break
                    f.write(data)
                    sha.update(data)
                f.truncate(start + min(got, end - start + 1))
        except (ConnectionError, OSError):
            with open(sess["path"], "r+b") as f:
                f.truncate(start)       # a broken range is not kept
            raise
        if got != end - start + 1:
            with open(sess["path"], "r+b") as f:
                f.truncate(start)
            raise self.upload_refuse(sess, 400, "ErrorInvalidContentRange",
                                     "The body has %d bytes, the "
                                     "Content-Range %d." % (got, end -
                                                            start + 1))
        with st.lock:
            sess["sha"] = sha
            sess["received"] = end + 1
            sess["chunks"].append(got)
            st.stats["upload_bytes_sessions"] += got
            if sess["received"] < sess["size"]:
                return 200, {"@odata.context": "https://%s/api/v2.0/"
                             "$metadata#Users('%s')/Messages('%s')/"
                             "AttachmentSessions/$entity" % (
                                 sess["host"], user_id(sess["mailbox"]),
                                 sess["message_ref"]),
                             "expirationDateTime": iso_time(
                                 datetime.datetime.fromtimestamp(
                                     sess["expires"],
                                     datetime.timezone.utc)),
                             "nextExpectedRanges": ["%d" %
                                                    sess["received"]]}, {}
            msg = mb.find(sess["message"])
            if msg is None:
                raise self.upload_refuse(sess, 404, "ErrorItemNotFound",
                                         ITEM_NOT_FOUND)
            att = self.new_attachment(sess["item"], (sess["path"],
                                                     sess["size"],
                                                     sha.hexdigest()))
            msg.setdefault("attachments", []).append(att)
            mb.update(msg["id"], {})
            sess["state"] = "complete"
            sess["attachment"] = att["id"]
        loc = sess["url"].replace("AttachmentSessions('%s')" % sess["id"],
                                  "Attachments('%s')" % att["id"])
        return 201, b"", {"Location": loc}

    def ep_send(self, body, arg):
        """ep_send - POST messages/{id}/send: 202; the draft goes to Sent
        Items and the emulator records the MIME the recipients get"""
        st = self.server.state
        info = self.bearer()
        upn, uinfo = self.mailbox(info, arg[0], "send")
        self.check_send_right(info, upn)
        mb = st.mbox(upn)
        with st.lock:
            msg = mb.find(arg[1])
        if msg is None or not msg.get("isDraft"):
            # A message that is not a draft: reported as "The specified
            # object was not found in the store." (rlrghb/olkcli#118).
            raise self.bad_id(arg[1])
        draft = msg["draft"]
        if draft["form"] == "mime":
            rec, tmp = self.send_mime_draft(msg, upn, uinfo)
        else:
            rec, tmp = self.send_json_draft(msg, upn, uinfo)
        with st.lock:
            if mb.find(arg[1]) is not msg:      # sent or deleted meanwhile
                unlink_all([tmp])
                raise self.bad_id(arg[1])
            open_sessions = [s["id"] for s in st.uploads.values()
                             if s["message"] == msg["immutableId"] and
                             s["state"] == "open" and
                             s["expires"] >= time.time()]
            st.close_sessions(msg, "orphaned")
            rec.update({"mailbox": upn, "size": os.path.getsize(tmp),
                        "request_id": self.request_id, "time": iso_time(),
                        "client_id": info["client_id"],
                        "principal": info["user"] or info["client_id"],
                        "auth": "delegated" if info["user"] else "app",
                        "draft_id": msg["immutableId"],
                        "open_upload_sessions": open_sessions})
            rec = st.record(rec, src=tmp, counter="drafts_sent")
            st.deliver_ndrs(upn, rec)
            unlink_all(message_files(msg))
            # The draft leaves Drafts now; its copy reaches Sent Items
            # when it "successfully sends" (file_later): until then its
            # id answers 404.
            old = mb.remove(msg["id"])
            changes = {"isDraft": False, "owned": False,
                       "path": rec["eml_path"], "sentDateTime": iso_time(),
                       "size": rec["size"], "attachments": [
                           dict(a, path=None) for a in
                           msg.get("attachments") or []]}

            def file_copy():
                with st.lock:
                    copy = mb.restore(old, mb.folder("sentitems")["id"])
                    mb.update(copy["id"], changes)
            st.file_later(file_copy)
        return 202, b"", {}

    def draft_recipients(self, to, cc, bcc):
        rcpts = []
        for a in to + cc + bcc:
            if a not in rcpts:
                rcpts.append(a)
        if not rcpts:
            raise self.gerr(400, "ErrorInvalidRecipients",
                            "At least one recipient is not valid., A message "
                            "can't be sent because it contains no "
                            "recipients.")
        return rcpts

    def send_mime_draft(self, msg, upn, uinfo):
        """send_mime_draft - a draft made from MIME is sent as that MIME:
        "the transport process copies the MIME content more or less
        intact" (outlook-things-to-know-about-send-mail); attachments
        added to the draft later do not reach the recipients"""
        with open(msg["path"], "rb") as f:
            head = f.read(1048576)
        hdr = email.parser.BytesParser(policy=email.policy.compat32) \
            .parsebytes(head, headersonly=True)
        to, cc, bcc, _ = mime_recipients(hdr)
        rcpts = self.draft_recipients(to, cc, bcc)
        froms = addresses(hdr.get_all("From") or [])
        from_addr = froms[0] if froms else None
        self.check_from(upn, uinfo, from_addr)
        tmp = os.path.join(self.server.state.attach_dir,
                           uuid.uuid4().hex + ".eml")
        with open(msg["path"], "rb") as src, open(tmp, "wb") as dst:
            while True:
                data = src.read(STREAM_CHUNK)
                if not data:
                    break
                dst.write(data)
        return {"form": "draft", "draft_form": "mime", "recipients": rcpts,
                "to": to, "cc": cc, "bcc": bcc, "from": from_addr,
                "subject": header_text(hdr.get("Subject")),
                "message_id": msg["internetMessageId"], "attachments": [],
                "dropped_attachments": [attachment_record(a) for a in
                                        msg.get("attachments") or []],
                "save_to_sent_items": True}, tmp

    def send_json_draft(self, msg, upn, uinfo):
        """send_json_draft - Exchange builds the MIME of a JSON draft from
        its properties and its attachments"""
        message = msg["draft"]["message"]
        env = self.json_envelope(message, upn, uinfo)
        tmp = os.path.join(self.server.state.attach_dir,
                           uuid.uuid4().hex + ".eml")
        atts = list(msg.get("attachments") or [])
        with open(tmp, "wb") as f:
            write_draft_mime(f, message, atts, upn,
                             uinfo.get("display_name", upn),
                             msg["internetMessageId"])
        env["from"] = env["from"] or upn
        return dict(env, form="draft", draft_form="json",
                    subject=message.get("subject"),
                    message_id=msg["internetMessageId"],
                    attachments=[attachment_record(a) for a in atts],
                    save_to_sent_items=True), tmp

    def send_stream(self, status, stream, headers, truncate=False,
                    fault=None):
        """send_stream - chunked response without Content-Length ($value);
        truncate: stop in the middle and reset the connection; fault
        "endless" / "silent": see stream_fault"""
        self.send_response(status)
        self.send_header("request-id", self.request_id)
        self.send_header("client-request-id", self.client_request_id)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "private")
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        with stream.f as f:
            total = os.fstat(f.fileno()).st_size
            sent = 0
            if fault is not None:
                self.stream_fault(f, total, fault)
                return
            while True:
                data = f.read(STREAM_CHUNK)
                if not data:
                    break
                if truncate and sent + len(data) >= total // 2:
                    # Half of it, then the connection closes: the client
                    # sees the stream end before the last chunk.
                    data = data[:max(1, total // 2 - sent)]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                    self.close_connection = True
                    self.status_sent = "truncated"
                    return
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                sent += len(data)
        self.wfile.write(b"0\r\n\r\n")
        self.status_sent = status


    def stream_fault(self, f, total, fault):
        """stream_fault - a $value body that never ends properly (modelled
        failures, tests/emulator/README.md): "endless" sends the MIME and
        then filler lines without end (until the client goes or `limit`
        bytes, default 1 GiB, then a reset); "silent" sends half of the
        MIME and then nothing for `delay` seconds (default 600) while
        the connection stays open, then resets it"""
        def chunk(data):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        st = self.server.state
        try:
            if fault["action"] == "silent":
                chunk(f.read(max(1, total // 2)))
                self.status_sent = "silent"
                end = time.time() + float(fault.get("delay", 600))
                while time.time() < end:
                    # Leave early once the client has hung up.
                    r, _, _ = select.select([self.connection], [], [], 0.2)
                    if r:
                        try:
                            if not self.connection.recv(1):
                                break
                        except (ssl.SSLError, OSError):
                            break
            else:
                sent, limit = 0, int(fault.get("limit", 1 << 30))
                chunk(f.read())
                line = b"X" * 76 + b"\r\n"
                block = line * (STREAM_CHUNK // len(line))
                self.status_sent = "endless"
                while sent < limit:
                    chunk(block)
                    sent += len(block)
                    with st.lock:
                        st.stats["value_endless_bytes"] = \
                            st.stats.get("value_endless_bytes", 0) + len(block)
        except OSError:
            pass
        self.reset_connection()

    # --- control API -------------------------------------------------

    def control(self, segs, body):
        """control - /_emu/... (no auth; loopback tests only)"""
        st = self.server.state
        path, m = "/".join(segs), self.command
        try:
            arg = json.loads(body) if body.strip() else {}
        except ValueError:
            self.send(400, {"error": "request body is not JSON"})
            return
        if segs[:1] == ["mailbox"]:
            status, out = self.ctl_mailbox(segs[1:], arg)
            self.send(status, out)
            return
        routes = {("POST", "faults"): self.ctl_add_faults,
                  ("GET", "faults"): lambda a: (200, list(st.faults)),
                  ("DELETE", "faults"): self.ctl_clear_faults,
                  ("GET", "sent"): lambda a: (200, list(st.sent)),
                  ("GET", "stats"): lambda a: (200, st.stats),
                  ("GET", "health"): lambda a: (200, {"ok": True}),
                  ("POST", "reset"): self.ctl_reset,
                  ("GET", "device"): self.ctl_devices,
                  ("POST", "device/approve"): self.ctl_approve,
                  ("POST", "device/deny"): self.ctl_deny,
                  ("POST", "revoke"): self.ctl_revoke,
                  ("POST", "config"): self.ctl_config,
                  ("POST", "expire"): self.ctl_expire,
                  ("GET", "drafts"): self.ctl_drafts,
                  ("GET", "uploads"): self.ctl_uploads,
                  ("POST", "uploads/expire"): self.ctl_uploads_expire}
        fn = routes.get((m, path))
        if fn is None:
            self.send(404, {"error": "no control endpoint %s /_emu/%s"
                            % (m, path)})
            return
        with st.lock:
            status, out = fn(arg)
            out = json.loads(json.dumps(out))
        self.send(status, out)

    def ctl_add_faults(self, arg):
        st = self.server.state
        faults = arg if isinstance(arg, list) else [arg]
        kinds = {"sendMail", "token", "users", "devicecode", "authorize",
                 "any"} | set(MAIL_KINDS)
        actions = {"error", "accept_retry_after", "reset_after_body", "slow",
                   "gone", "truncate", "endless", "silent", "expire",
                   "close_after_response", "reset_mid_body"}
        only = {"gone": "delta", "truncate": "value", "endless": "value",
                "silent": "value", "expire": "upload",
                "reset_mid_body": "sendMail"}
        for f in faults:
            if not isinstance(f, dict) or f.get("match") not in kinds:
                return 400, {"error": "each fault needs match in %s"
                             % sorted(kinds)}
            action = f.get("action", "error")
            if action not in actions:
                return 400, {"error": "action must be one of %s"
                             % sorted(actions)}
            pc = f.get("path_contains")
            if pc is not None and (not isinstance(pc, str) or not pc):
                return 400, {"error": "path_contains must be a non-empty "
                             "string"}
            if action in only and f["match"] != only[action]:
                return 400, {"error": "action %s needs match %s"
                             % (action, only[action])}
            if not isinstance(f.get("after", 0), int) or f.get("after", 0) < 0:
                return 400, {"error": "after must be a number >= 0"}
        for f in faults:
            st.faults.append(dict(f, count=int(f.get("count", 1)),
                                  action=f.get("action", "error")))
        return 200, {"queued": len(faults), "faults": len(st.faults)}

    def ctl_drafts(self, arg):
        """ctl_drafts - GET /_emu/drafts[?mailbox=MB]: the drafts in the
        Drafts folders (what a crashed sender leaves behind)"""
        st = self.server.state
        want = self.query.get("mailbox", [None])[0]
        want = st.user(want)[0] if want else None
        out = []
        for upn, mb in sorted(st.mailboxes.items()):
            if want and upn != want:
                continue
            for m in mb.folder_messages(mb.folder("drafts")["id"]):
                if not m.get("isDraft"):
                    continue
                out.append({"mailbox": upn, "id": m["id"],
                            "immutableId": m["immutableId"],
                            "form": m["draft"]["form"],
                            "subject": m.get("subject"),
                            "internetMessageId": m["internetMessageId"],
                            "to": [a for _n, a in m.get("to", [])],
                            "cc": [a for _n, a in m.get("cc", [])],
                            "bcc": [a for _n, a in m.get("bcc", [])],
                            "size": draft_size(m),
                            "createdDateTime": m["createdDateTime"],
                            "attachments": [attachment_record(a) for a in
                                            m.get("attachments") or []],
                            "upload_sessions": [
                                s["id"] for s in st.uploads.values()
                                if s["message"] == m["immutableId"]]})
        return 200, out

    def ctl_uploads(self, arg):
        """ctl_uploads - GET /_emu/uploads: every upload session"""
        now = time.time()
        out = []
        for s in sorted(self.server.state.uploads.values(),
                        key=lambda s: s["created"]):
            state = s["state"]
            if state == "open" and now > s["expires"]:
                state = "expired"
            out.append({"id": s["id"], "mailbox": s["mailbox"],
                        "message": s["message"], "name": s["name"],
                        "size": s["size"], "item": s["item"],
                        "host": s["host"], "received": s["received"],
                        "chunks": list(s["chunks"]), "state": state,
                        "refused": list(s["refused"]),
                        "attachment": s["attachment"],
                        "client_id": s["client_id"],
                        "created": iso_time(datetime.datetime.fromtimestamp(
                            s["created"], datetime.timezone.utc)),
                        "expires": iso_time(datetime.datetime.fromtimestamp(
                            s["expires"], datetime.timezone.utc))})
        return 200, out

    def ctl_uploads_expire(self, arg):
        """ctl_uploads_expire - POST /_emu/uploads/expire [{"id"}]: open
        sessions (or one) expire now"""
        n = 0
        for s in self.server.state.uploads.values():
            if s["state"] == "open" and arg.get("id") in (None, s["id"]):
                s["expires"] = time.time() - 1
                n += 1
        return 200, {"expired": n}

    def ctl_clear_faults(self, arg):
        self.server.state.faults = []
        return 200, {"faults": 0}

    def ctl_reset(self, arg):
        tokens = isinstance(arg, dict) and bool(arg.get("tokens"))
        mailboxes = isinstance(arg, dict) and bool(arg.get("mailboxes"))
        self.server.state.reset(tokens=tokens, mailboxes=mailboxes)
        return 200, {"reset": True}

    def ctl_devices(self, arg):
        now = time.time()
        out = []
        for dev in self.server.state.devices.values():
            if dev["state"] in ("pending", "approved", "denied") \
                    and now <= dev["expires"]:
                out.append({"user_code": dev["user_code"],
                            "client_id": dev["client_id"],
                            "scope": " ".join(dev["scopes"]),
                            "state": dev["state"],
                            "expires_in": int(dev["expires"] - now)})
        return 200, out

    def find_device(self, user_code):
        for dev in self.server.state.devices.values():
            if dev["user_code"] == user_code:
                return dev
        return None

    def ctl_approve(self, arg):
        st = self.server.state
        dev = self.find_device(arg.get("user_code"))
        if dev is None or dev["state"] != "pending":
            return 404, {"error": "no pending device code %r"
                         % arg.get("user_code")}
        upn, _ = st.user(arg.get("user") or st.cfg("login_user", ""))
        if upn is None:
            return 400, {"error": "unknown user %r" % arg.get("user")}
        dev["state"], dev["user"] = "approved", upn
        return 200, {"approved": dev["user_code"], "user": upn}

    def ctl_deny(self, arg):
        dev = self.find_device(arg.get("user_code"))
        if dev is None or dev["state"] != "pending":
            return 404, {"error": "no pending device code %r"
                         % arg.get("user_code")}
        dev["state"] = "denied"
        return 200, {"denied": dev["user_code"]}

    def ctl_revoke(self, arg):
        st = self.server.state
        upn, _ = st.user(arg.get("user", ""))
        if upn is None:
            return 400, {"error": "unknown user %r" % arg.get("user")}
        now = time.time()
        n_rt = n_at = 0
        for r in st.refresh.values():
            if r["user"] == upn and not r["revoked"]:
                r["revoked"] = now
                n_rt += 1
        for tok in [t for t, i in st.access.items() if i["user"] == upn]:
            del st.access[tok]
            n_at += 1
        return 200, {"refresh_tokens": n_rt, "access_tokens": n_at}

    def ctl_config(self, arg):
        st = self.server.state
        if not isinstance(arg, dict):
            return 400, {"error": "config must be a JSON object"}
        for k, v in arg.items():
            if k in ("apps", "users") and isinstance(v, dict):
                for name, val in v.items():
                    if k == "users":
                        name = name.lower()
                    if val is None:
                        st.config[k].pop(name, None)
                    else:
                        st.config[k].setdefault(name, {}).update(val)
            else:
                st.config[k] = v
        return 200, {"updated": sorted(arg)}

    def ctl_expire(self, arg):
        st = self.server.state
        if arg.get("user"):
            upn, _ = st.user(arg["user"])
            match = lambda i: i["user"] == upn     # noqa: E731
        elif arg.get("client_id"):
            match = lambda i: i["client_id"] == arg["client_id"]  # noqa
        else:
            return 400, {"error": "give user or client_id"}
        n = 0
        for info in st.access.values():
            if match(info) and info["exp"] > time.time():
                info["exp"] = time.time() - 1
                n += 1
        return 200, {"expired": n}

    # --- control API: mailboxes ----------------------------------------

    def ctl_mailbox(self, rest, arg):
        """ctl_mailbox - /_emu/mailbox/{mb}[/messages[/{id}] | /folders]"""
        st = self.server.state
        if not rest:
            return 404, {"error": "use /_emu/mailbox/{user}"}
        upn, _ = st.user(rest[0])
        if upn is None:
            return 404, {"error": "unknown user %r (add it to the emulator "
                         "configuration)" % urllib.parse.unquote(rest[0])}
        sub = [urllib.parse.unquote(s) for s in rest[1:]]
        m = self.command
        if not isinstance(arg, dict) and m in ("POST", "PATCH"):
            return 400, {"error": "the body must be a JSON object"}
        if m == "POST" and sub == ["messages"]:
            return self.ctl_put_messages(upn, arg)
        with st.lock:
            mb = st.mbox(upn)
            if m == "GET" and not sub:
                return 200, st.mailbox_json(mb)
            if m == "DELETE" and not sub:
                mb.clear()
                return 200, {"cleared": upn}
            if m == "POST" and sub == ["folders"]:
                name = arg.get("displayName")
                if not isinstance(name, str) or not name or "/" in name:
                    return 400, {"error": "give displayName (without /)"}
                parent = mb.root_id()
                if arg.get("parent"):
                    p = mb.folder_by_name(str(arg["parent"]))
                    if p is None:
                        return 400, {"error": "no folder %r"
                                     % arg["parent"]}
                    parent = p["id"]
                f = None
                for g in mb.children(parent):
                    if g["displayName"].lower() == name.lower():
                        f = g
                if f is None:
                    f = mb.add_folder(name, None, parent)
                return 200, {"id": f["id"], "displayName": f["displayName"]}
            if len(sub) == 2 and sub[0] == "messages" and m in ("PATCH",
                                                                "DELETE"):
                if sub[1] not in mb.msgs:
                    return 404, {"error": "no message %r" % sub[1]}
                if m == "DELETE":
                    st.drop_message(mb, sub[1])
                    return 200, {"deleted": sub[1]}
                changes = {k: arg[k] for k in ("isRead",) if k in arg}
                return 200, mb.render(mb.update(sub[1], changes))
        return 404, {"error": "no control endpoint %s /_emu/mailbox/%s"
                     % (m, "/".join(rest))}

    def ctl_put_messages(self, upn, arg):
        """ctl_put_messages - file a message ("mime", "mime_b64") or
        generate "count" messages of about "size" bytes"""
        st = self.server.state
        with st.lock:
            f = st.mbox(upn).folder_by_name(str(arg.get("folder", "inbox")))
        if f is None:
            return 400, {"error": "no folder %r in %s" % (arg.get("folder"),
                                                          upn)}
        paths = []
        try:
            if "mime" in arg or "mime_b64" in arg:
                if "mime" in arg:
                    data = str(arg["mime"]).encode("utf-8")
                else:
                    data = base64.b64decode(str(arg["mime_b64"]),
                                            validate=True)
                path = st.spool_path()
                with open(path, "wb") as out:
                    out.write(data)
                paths.append(path)
            elif "size" in arg:
                size, count = int(arg["size"]), int(arg.get("count", 1))
                if size < 0 or not 1 <= count <= 100000:
                    raise ValueError("size or count out of range")
                for i in range(count):
                    path = st.spool_path()
                    write_generated(
                        path, size, str(arg.get("subject", "Generated "
                                                "message %d" % (i + 1))),
                        str(arg.get("from", "sender@example.org")),
                        str(arg.get("to", upn)), i + 1)
                    paths.append(path)
            else:
                return 400, {"error": "give mime, mime_b64 or size"}
            metas = [mime_meta(p) for p in paths]
        except (ValueError, TypeError, binascii.Error, OSError) as e:
            for p in paths:
                try:
                    os.unlink(p)
                except OSError:
                    pass
            return 400, {"error": "cannot store the message: %s" % e}
        out = []
        with st.lock:
            mb = st.mbox(upn)
            if f["id"] not in mb.folders:      # cleared meanwhile
                f = mb.folder_by_name(f["displayName"]) or mb.folder("inbox")
            for p, meta in zip(paths, metas):
                msg = mb.add_message(f["id"], p, dict(meta, owned=True),
                                     arg.get("isRead", False),
                                     arg.get("receivedDateTime"))
                out.append({"id": msg["id"], "size": msg["size"],
                            "internetMessageId": msg["internetMessageId"]})
        res = dict(out[0])
        if len(out) > 1:
            res["messages"] = out
        return 200, res


def redirect_ok(app, uri):
    """redirect_ok - registered redirect URIs, or loopback/nativeclient"""
    u = urllib.parse.urlsplit(uri)
    registered = app.get("redirect_uris")
    if registered:
        for r in registered:
            ru = urllib.parse.urlsplit(r)
            if ru.hostname == "localhost" and u.hostname == "localhost":
                if (ru.scheme, ru.path) == (u.scheme, u.path):
                    return True
            elif r == uri:
                return True
        return False
    if u.scheme == "http" and u.hostname in ("localhost", "127.0.0.1"):
        return True
    return uri == "https://login.microsoftonline.com/common/oauth2/" \
                  "nativeclient"


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError,
                            OSError)):
            return
        super().handle_error(request, client_address)


def load_config(path):
    """load_config - read emu.json and fill in defaults"""
    with open(path, "r", encoding="utf-8") as f:
        config = json.load(f)
    config.setdefault("tenant", "contoso.test")
    config.setdefault("tenant_id", "11111111-2222-3333-4444-555555555555")
    config.setdefault("access_token_lifetime", 3600)
    config.setdefault("device_interval", 5)
    config.setdefault("device_expires_in", 900)
    config.setdefault("apps", {})
    config.setdefault("users", {})
    config["users"] = {k.lower(): v for k, v in config["users"].items()}
    config.setdefault("login_user", next(iter(config["users"]), ""))
    return config


def main():
    ap = argparse.ArgumentParser(description="Microsoft 365 emulator")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    config = load_config(args.config)
    os.makedirs(args.data, exist_ok=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)

    server = Server((args.host, args.port), Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True,
                                    do_handshake_on_connect=False)
    server.state = State(config, args.data)
    server.verbose = args.verbose
    port = server.server_address[1]
    with open(os.path.join(args.data, "port"), "w") as f:
        f.write("%d\n" % port)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    thread = threading.Thread(target=server.serve_forever,
                              kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    print("m365emu ready on https://%s:%d" % (args.host, port), flush=True)
    while not stop.wait(1.0):
        pass
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

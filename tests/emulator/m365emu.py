#!/usr/bin/env python3
"""m365emu - a small Microsoft 365 emulator for the m365relay tests.

It speaks just enough of the Microsoft identity platform (v2.0 token,
devicecode and authorize endpoints) and of Microsoft Graph (/users,
/me, sendMail in MIME and JSON form) over HTTPS for the relay and
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
import secrets
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
        self.reset(tokens=True)

    def reset(self, tokens=False):
        """reset - clear sent messages, stats and faults (tokens too)"""
        with self.lock:
            self.sent = []
            self.seq = 0
            for name in os.listdir(self.sent_dir):
                os.unlink(os.path.join(self.sent_dir, name))
            self.faults = []
            self.stats = {"requests": 0, "token_requests": 0, "by_grant": {},
                          "sendmail_requests": 0, "sendmail_accepted": 0,
                          "users_requests": 0, "devicecode_requests": 0,
                          "authorize_requests": 0}
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

    # --- faults ------------------------------------------------------

    def take_fault(self, kind):
        """take_fault - consume one count of the first matching fault"""
        with self.lock:
            for f in self.faults:
                if f["match"] in (kind, "any"):
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

    def record(self, rec, eml):
        """record - write sent/NNNNNN.json and .eml; return the record"""
        with self.lock:
            self.seq += 1
            rec["seq"] = self.seq
            base = os.path.join(self.sent_dir, "%06d" % self.seq)
            with open(base + ".eml", "wb") as f:
                f.write(eml)
            with open(base + ".json", "w", encoding="utf-8") as f:
                json.dump(rec, f, indent=1)
            rec = dict(rec, eml_path=base + ".eml")
            self.sent.append(rec)
            self.stats["sendmail_accepted"] += 1
            return rec


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
            self.connection.do_handshake()
        except (ssl.SSLError, OSError):
            self.close_connection = True
            raise

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("m365emu: %s\n" % (fmt % args))

    def read_body(self):
        """read_body - the request body (Content-Length or chunked)"""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n",
                                                            b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(16)
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length > 0 else b""
        if len(data) != length:
            self.close_connection = True
        return data

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
        try:
            body = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        try:
            if segs[:1] == ["_emu"]:
                self.control(segs[1:], body)
                return
            with st.lock:
                st.stats["requests"] += 1
            self.route(segs, body)
        except EmuError as e:
            self.send(e.status, e.body, headers=e.headers)
        except (ConnectionError, ssl.SSLError, TimeoutError):
            self.close_connection = True
        except Exception:       # a bug in the emulator: say so, loudly
            import traceback
            traceback.print_exc()
            self.close_connection = True
            self.send(500, {"error": "m365emu internal error"})
        finally:
            if segs[:1] != ["_emu"]:
                st.log_request(self.command, url.path, self.status_sent)

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
            raise graph_error(400, "BadRequest",
                              "Resource not found for the segment '%s'."
                              % (segs[-1] if segs else ""),
                              self.request_id, self.client_request_id)
        self.send(404, {"error": "not_found",
                        "error_description": "No such endpoint: %s %s"
                        % (self.command, "/" + "/".join(segs))})

    # --- faults ------------------------------------------------------

    def with_faults(self, kind, body, arg):
        """with_faults - apply the first matching fault, then the endpoint"""
        st = self.server.state
        endpoint = {"token": self.ep_token, "devicecode": self.ep_devicecode,
                    "authorize": self.ep_authorize, "users": self.ep_user,
                    "sendMail": self.ep_sendmail}[kind]
        with st.lock:
            counter = {"token": "token_requests", "sendMail":
                       "sendmail_requests", "users": "users_requests",
                       "devicecode": "devicecode_requests",
                       "authorize": "authorize_requests"}[kind]
            st.stats[counter] += 1
            if kind == "token":
                grant = urllib.parse.parse_qs(body.decode("utf-8", "replace")
                                              ).get("grant_type", [""])[0]
                short = {DEVICE_GRANT: "device_code"}.get(grant, grant)
                st.stats["by_grant"][short] = \
                    st.stats["by_grant"].get(short, 0) + 1
        fault = st.take_fault(kind)
        action = (fault or {}).get("action", "error")
        extra = {}
        if fault and fault.get("retry_after") is not None:
            extra["Retry-After"] = fault["retry_after"]
        if fault is None:
            status, rbody, rheaders = self.run_endpoint(endpoint, body, arg)
        elif action == "slow":
            time.sleep(float(fault.get("delay", 5)))
            status, rbody, rheaders = self.run_endpoint(endpoint, body, arg)
        elif action == "reset_after_body":
            if fault.get("deliver"):
                self.run_endpoint(endpoint, body, arg)
            self.reset_connection()
            return
        elif action == "accept_retry_after":
            status, rbody, rheaders = self.run_endpoint(endpoint, body, arg)
            rheaders = dict(rheaders, **extra)
        else:
            status, rbody, rheaders = self.fault_response(kind, fault)
            rheaders = dict(rheaders, **extra)
        if kind == "authorize" and isinstance(rbody, str):
            self.send(status, rbody, ctype="text/html", headers=rheaders)
        else:
            self.send(status, rbody, headers=rheaders)

    def run_endpoint(self, endpoint, body, arg):
        """run_endpoint - (status, body, headers) of a normal answer"""
        try:
            return endpoint(body, arg)
        except EmuError as e:
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

    def check_send_right(self, info, upn):
        """check_send_right - may this token send from mailbox upn?"""
        st = self.server.state
        if not info["user"]:
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
        self.server.state.record(rec, eml)
        return 202, b"", {}

    def parse_mime(self, body, upn, uinfo):
        """parse_mime - decode a base64 MIME body; (record, eml bytes)"""
        compact = bytes(b for b in body if b not in b" \t\r\n")
        try:
            eml = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            raise self.gerr(400, "ErrorMimeContentInvalidBase64String",
                            "Invalid base64 string for MIME content.")
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
        for h in message.get("internetMessageHeaders") or []:
            if not str(h.get("name", "")).lower().startswith("x-"):
                raise self.gerr(400, "InvalidInternetMessageHeader",
                                "The internet message header name '%s' "
                                "should start with 'x-' or 'X-'."
                                % h.get("name"))
        try:
            to = json_recipients(message, "toRecipients")
            cc = json_recipients(message, "ccRecipients")
            bcc = json_recipients(message, "bccRecipients")
        except ValueError:
            raise self.gerr(400, "ErrorInvalidRecipients", "At least one "
                            "recipient is not valid.") from None
        rcpts = []
        for a in to + cc + bcc:
            if a not in rcpts:
                rcpts.append(a)
        if not rcpts:
            raise self.gerr(400, "ErrorInvalidRecipients",
                            "At least one recipient is not valid., A message "
                            "can't be sent because it contains no "
                            "recipients.")
        frm = ((message.get("from") or {}).get("emailAddress") or {})
        from_addr = (frm.get("address") or "").lower() or None
        self.check_from(upn, uinfo, from_addr)
        return {"form": "json", "recipients": rcpts, "to": to, "cc": cc,
                "bcc": bcc, "from": from_addr,
                "subject": message.get("subject"),
                "message_id": message.get("internetMessageId"),
                "save_to_sent_items": req.get("saveToSentItems", True)}, \
            json_to_eml(message, upn)

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
                  ("POST", "expire"): self.ctl_expire}
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
                 "any"}
        actions = {"error", "accept_retry_after", "reset_after_body", "slow"}
        for f in faults:
            if not isinstance(f, dict) or f.get("match") not in kinds:
                return 400, {"error": "each fault needs match in %s"
                             % sorted(kinds)}
            if f.get("action", "error") not in actions:
                return 400, {"error": "action must be one of %s"
                             % sorted(actions)}
        for f in faults:
            st.faults.append(dict(f, count=int(f.get("count", 1)),
                                  action=f.get("action", "error")))
        return 200, {"queued": len(faults), "faults": len(st.faults)}

    def ctl_clear_faults(self, arg):
        self.server.state.faults = []
        return 200, {"faults": 0}

    def ctl_reset(self, arg):
        tokens = isinstance(arg, dict) and bool(arg.get("tokens"))
        self.server.state.reset(tokens=tokens)
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

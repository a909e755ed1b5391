"""mimewalk - the leaf parts of a MIME message, decoded while streaming.

Used by tests/lib.sh (mime_parts) and tests/large.sh (large_verify): a
150 MB message costs no 150 MB of memory.  walk(lines, top, keep) yields
one Leaf per leaf part, in order: h (its header, email.message), parents
(the content types of the multiparts around it), sha (SHA-256 of the
decoded content), size, and text (the decoded chunks, when keep(h) said
so).  lines is an iterator over the message's lines; top is its
top-level header when the caller has read it already (lines then start
at the body), else None.  The line break before a boundary belongs to
the boundary; a part that ends with the message keeps its last line
break unless trim_eof.
"""
import binascii
import email.parser
import email.policy
import hashlib


def header(lines):
    return email.parser.BytesParser(policy=email.policy.default).parsebytes(
        b"".join(lines) + b"\r\n", headersonly=True)


class Leaf:
    def __init__(self, h, parents, keep):
        self.h, self.parents, self.sha, self.size, self.rest = h, parents, hashlib.sha256(), 0, b""
        self.cte = str(h.get("Content-Transfer-Encoding", "7bit")).strip().lower()
        self.keep, self.text = keep, []

    def feed(self, line):
        if self.cte == "base64":
            self.rest += b"".join(line.split())
            n = len(self.rest) // 4 * 4
            data, self.rest = binascii.a2b_base64(self.rest[:n]), self.rest[n:]
        elif self.cte == "quoted-printable":
            data = binascii.a2b_qp(line)
        else:
            data = line
        self.sha.update(data)
        self.size += len(data)
        if self.keep:
            self.text.append(data)


def _trim(line):
    return line[:-2] if line.endswith(b"\r\n") else line[:-1] if line.endswith(b"\n") else line


def walk(lines, top=None, keep=lambda h: False, trim_eof=False):
    bounds, types, hl = [], [], []
    leaf, held, state = None, None, "header"

    def start(h):
        nonlocal leaf, state
        if h.get_content_maintype() == "multipart":
            bounds.append(h.get_boundary().encode())
            types.append(h.get_content_type())
            state = "skip"
        else:
            leaf, state = Leaf(h, list(types), keep(h)), "body"

    def boundary(line):
        s = line.rstrip(b"\r\n")
        for i in range(len(bounds) - 1, -1, -1):
            if s == b"--" + bounds[i]:
                return i, False
            if s == b"--" + bounds[i] + b"--":
                return i, True
        return None

    if top is not None:
        start(top)
    for line in lines:
        b = boundary(line) if bounds else None
        if b is not None:
            if leaf is not None:
                if held is not None:
                    leaf.feed(_trim(held))
                yield leaf
            leaf, held = None, None
            del bounds[b[0] + (0 if b[1] else 1):]
            del types[b[0] + (0 if b[1] else 1):]
            state, hl = ("skip", []) if b[1] else ("header", [])
            continue
        if state == "header":
            if line in (b"\r\n", b"\n"):
                start(header(hl))
            else:
                hl.append(line)
        elif state == "body":
            if held is not None:
                leaf.feed(held)
            held = line
    if leaf is not None:
        if held is not None:
            leaf.feed(_trim(held) if trim_eof else held)
        yield leaf

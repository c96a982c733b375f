"""Reads messages with Python's standard email package (policy.default) and describes what
it sees, so the tests can compare it with what Sluice built.

Input: one base64-encoded message per line, in the file named by the first argument (or on
stdin). Output: one JSON object per line.
"""
import base64
import json
import sys
import email
from email import policy
from email.header import decode_header, make_header
from email.parser import BytesParser
from email.utils import getaddresses


def mailboxes(message, name):
    header = message.get(name)
    if header is None:
        return None
    return [{"name": a.display_name, "address": a.addr_spec} for a in header.addresses]


def legacy_names(raw, name):
    """Display names through the legacy API (compat32, getaddresses, decode_header), which
    drops the whitespace between adjacent encoded-words as RFC 2047 section 6.2 says; the
    policy.default phrase parser of Python 3.11 keeps it and collapses runs of whitespace."""
    values = email.message_from_bytes(raw, policy=policy.compat32).get_all(name)
    if values is None:
        return None
    return [str(make_header(decode_header(display))) for display, _ in getaddresses(values)]


def text(part):
    if part is None:
        return None
    return part.get_content().replace("\r\n", "\n")


def describe(raw):
    message = BytesParser(policy=policy.default).parsebytes(raw)
    defects = []
    body_parts = []
    for kind in ("plain", "html"):
        body = message.get_body(preferencelist=(kind,))
        body_parts.append(body if body is not None and body.get_content_subtype() == kind else None)
    attachments = []
    for part in message.walk():
        defects += [type(defect).__name__ for defect in part.defects]
        if part.is_multipart() or any(part is body for body in body_parts):
            continue
        attachments.append({
            "fileName": part.get_filename(),
            "contentType": part.get_content_type(),
            "disposition": part.get_content_disposition(),
            "contentID": part.get("Content-ID"),
            "data": base64.b64encode(part.get_payload(decode=True)).decode("ascii"),
        })
    return {
        "headers": [[name, str(value)] for name, value in message.items()],
        "defects": defects,
        "subject": message.get("Subject"),
        "from": mailboxes(message, "From"),
        "sender": mailboxes(message, "Sender"),
        "to": mailboxes(message, "To"),
        "cc": mailboxes(message, "Cc"),
        "replyTo": mailboxes(message, "Reply-To"),
        "legacyNames": {name: legacy_names(raw, name) for name in ("From", "Sender", "To", "Cc", "Reply-To")},
        "contentType": message.get_content_type(),
        "text": text(body_parts[0]),
        "html": text(body_parts[1]),
        "attachments": attachments,
    }


source = open(sys.argv[1], encoding="ascii") if len(sys.argv) > 1 else sys.stdin
for line in source:
    line = line.strip()
    if not line:
        continue
    try:
        print(json.dumps(describe(base64.b64decode(line))))
    except Exception as error:  # report, so the test shows what failed
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}))
    sys.stdout.flush()

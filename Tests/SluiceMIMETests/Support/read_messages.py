"""Reads messages with Python's standard email package (policy.default) and describes what
it sees, so the tests can compare it with what Sluice built.

Input: one base64-encoded message per line on stdin. Output: one JSON object per line.
"""
import base64
import json
import sys
from email import policy
from email.parser import BytesParser


def mailboxes(message, name):
    header = message.get(name)
    if header is None:
        return None
    return [{"name": a.display_name, "address": a.addr_spec} for a in header.addresses]


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
        "contentType": message.get_content_type(),
        "text": text(body_parts[0]),
        "html": text(body_parts[1]),
        "attachments": attachments,
    }


for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    try:
        print(json.dumps(describe(base64.b64decode(line))))
    except Exception as error:  # report, so the test shows what failed
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}))
    sys.stdout.flush()

"""Verifies every DKIM-Signature of a message with dkimpy, its DNS lookup replaced by the
test's public keys.

Usage: verify_dkim.py MESSAGE_FILE SELECTOR._domainkey.DOMAIN=TXT-RECORD ...
Prints a JSON list with one boolean per signature, top to bottom.
"""
import json
import sys

import dkim

records = dict(argument.split("=", 1) for argument in sys.argv[2:])


def lookup(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    return records.get(name.rstrip(".")).encode()


def verify(verifier, index):
    try:
        return bool(verifier.verify(idx=index, dnsfunc=lookup))
    except dkim.DKIMException:  # a body hash mismatch is raised, not returned
        return False


message = open(sys.argv[1], "rb").read()
verifier = dkim.DKIM(message)
count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
print(json.dumps([verify(verifier, index) for index in range(count)]))

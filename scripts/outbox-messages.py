"""N messages of 1 KB, one recipient each, as `sluice outbox enqueue` reads them (JSON lines).

    python3 scripts/outbox-messages.py N > input.jsonl
"""
import json
import sys

body = "From: a@example.com\r\nTo: r{0}@example.org\r\nSubject: bench\r\nMessage-ID: <{0}@bench.example>\r\n\r\n" \
    + ("x" * 70 + "\r\n") * 12
for i in range(int(sys.argv[1])):
    print(json.dumps({"from": "a@example.com", "to": ["r%d@example.org" % i], "raw": body.format(i)}))

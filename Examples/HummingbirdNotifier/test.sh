#!/usr/bin/env bash
# Builds the example as a user's package would (against this checkout of Sluice), runs it
# against `sluice sink`, sends through `POST /send`, then sends SIGTERM and checks that the
# ServiceGroup drains and the process exits 0.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

echo "example: building (Hummingbird and SwiftNIO the first time)"
swift build --package-path "$here" >/dev/null
notifier="$(swift build --package-path "$here" --show-bin-path)/Notifier"
(cd "$root" && swift build --product sluice >/dev/null)
sluice="$root/.build/debug/sluice"

"$sluice" sink --listen 127.0.0.1:0 --store "mbox:$work/mail" --delay 300 >"$work/sink.out" 2>"$work/sink.err" &
pids+=($!)
for _ in $(seq 100); do grep -q "listening on" "$work/sink.out" 2>/dev/null && break; sleep 0.1; done
smtp_port="$(sed -n 's/^listening on 127.0.0.1:\([0-9]*\)$/\1/p' "$work/sink.out" | head -1)"
[ -n "$smtp_port" ] || { echo "example: the sink did not start" >&2; cat "$work/sink.err" >&2; exit 1; }

SMTP_PORT="$smtp_port" HTTP_PORT=0 "$notifier" >"$work/app.out" 2>"$work/app.err" &
app=$!
pids+=($app)
for _ in $(seq 200); do grep -q "listening on" "$work/app.out" 2>/dev/null && break; sleep 0.1; done
http_port="$(sed -n 's|^listening on http://127.0.0.1:\([0-9]*\)$|\1|p' "$work/app.out" | head -1)"
[ -n "$http_port" ] || { echo "example: the app did not start" >&2; cat "$work/app.err" >&2; exit 1; }

python3 - "$http_port" "$app" <<'PY'
import json, os, signal, sys, threading, time, urllib.request, urllib.error
port, app = sys.argv[1], int(sys.argv[2])
def post(body):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/send", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)
mail = {"from": "app@example.com", "to": ["ann@example.org", "bob@example.org"],
        "subject": "From the example", "text": "Sent through one shared SMTPClient."}
status, reply = post(mail)
assert status == 200 and reply["outcome"] == "accepted", (status, reply)
assert [r["status"] for r in reply["recipients"]] == ["accepted", "accepted"], reply
status, reply = post({"from": "app@example.com", "to": ["not an address"], "subject": "x", "text": "x"})
assert status == 400 and reply["outcome"] == "invalid", (status, reply)
print("example: POST /send answered with every recipient's outcome; a bad address is a 400")
# SIGTERM while a send is in flight (the sink holds each reply 300 ms): the request still
# gets its real outcome, then the group stops.
result = {}
sending = threading.Thread(target=lambda: result.update(zip(("status", "reply"), post(dict(mail, subject="In flight")))))
sending.start()
time.sleep(0.4)
os.kill(app, signal.SIGTERM)
sending.join(30)
assert result.get("status") == 200 and result["reply"]["outcome"] == "accepted", result
print("example: a send in flight at SIGTERM finished and was answered accepted")
PY
grep -q "^Subject: From the example" "$work/mail" || { echo "example: the sink did not store the message" >&2; exit 1; }
grep -q "^Subject: In flight" "$work/mail" || { echo "example: the message in flight at SIGTERM was not stored" >&2; exit 1; }

for _ in $(seq 200); do kill -0 "$app" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$app" 2>/dev/null; then echo "example: still running 20 s after SIGTERM" >&2; exit 1; fi
status=0
wait "$app" || status=$?
[ "$status" -eq 0 ] || { echo "example: exited $status after SIGTERM" >&2; cat "$work/app.err" >&2; exit 1; }
grep -q "stopped" "$work/app.err" "$work/app.out" || { echo "example: did not drain and stop" >&2; exit 1; }
echo "example: SIGTERM drained the ServiceGroup and the app exited 0"

#!/usr/bin/env bash
# Mailroom end to end, on this machine: starts Kafka, a local SMTP relay and
# mailroom, publishes sample jobs (good ones and bad ones) and shows where each
# one ended up: delivered to the relay (or a file), bounced, retried,
# suppressed or rejected; the spool, the events on mail.events, the dead-letter
# topic and the metrics.
#   KEEP_RUNNING=1 leaves Kafka and mailroom running afterwards.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh" >/dev/null
bin=${BUILD_DIR:-$root/build}
work=/tmp/mailroom-demo
brokers=127.0.0.1:9092
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# A fresh broker and spool each run, so the output shows this run only.
"$root/scripts/kafka.sh" stop >/dev/null 2>&1 || true
rm -rf "$work" && mkdir -p "$work"
export KAFKA_DIR=$work/kafka

step "Starting Apache Kafka (KRaft, single node) on $brokers"
"$root/scripts/kafka.sh" start

step "Starting a local SMTP relay on 127.0.0.1:2525 (aiosmtpd, scripted: one address bounces, one is busy once)"
cat >"$work/relay-script.json" <<'JSON'
{"rcpt": {"nobody@example.net": ["550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown"],
          "busy@example.net": ["451 4.3.0 Mailbox busy, try again later", "250 2.1.5 OK"]}}
JSON
/usr/bin/python3 "$root/tests/support/smtp_server.py" --port 2525 --record "$work/relay.jsonl" \
  --script "$work/relay-script.json" >"$work/relay.log" 2>&1 &
relay=$!

step "Starting mailroom with config/demo.yaml (spool in $work/spool)"
"$bin/mailroom" --check-config "$root/config/demo.yaml"
"$bin/mailroom" --config "$root/config/demo.yaml" >"$work/mailroom.log" 2>&1 &
pid=$!
cleanup() {
  if [ "${KEEP_RUNNING:-0}" != 1 ]; then
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    kill "$relay" 2>/dev/null || true
    "$root/scripts/kafka.sh" stop
  fi
}
trap cleanup EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:8080/healthz >/dev/null && break; sleep 0.2; done

run=$(date +%s)
step "Publishing jobs as tenant 'billing' (topic mail.jobs.billing)"
"$bin/mailroomctl" send --brokers "$brokers" --tenant billing --id "invoice-$run" \
  --from "Billing <billing@example.com>" --to "Ada Lovelace <ada@example.net>" \
  --subject "Your invoice" --text "Thank you for your order." --html "<p>Thank you!</p>" \
  --metadata order=42
"$bin/mailroomctl" send --brokers "$brokers" --tenant billing --id "receipt-$run" --count 100 \
  --from noreply@receipts.example.com --to grace@example.net --subject "Receipt" --text "Paid."
echo "… the same job again (a producer retry): it is counted as a duplicate, not spooled twice"
"$bin/mailroomctl" send --brokers "$brokers" --tenant billing --id "invoice-$run" \
  --from billing@example.com --to ada@example.net --subject "Your invoice" --text "again"
echo "… a job that asks for the file carrier (billing's allowed_carriers lists it)"
"$bin/mailroomctl" send --brokers "$brokers" --tenant billing --id "file-$run" --carrier files \
  --from billing@example.com --to "Zoë Müller <zoe@example.net>" --subject "Grüße aus Köln" \
  --text "Ein Beispiel mit Umlauten." --attach "$root/config/demo.yaml"
echo "… a recipient that does not exist (550 5.1.1), and one whose mailbox is busy once (451)"
"$bin/mailroomctl" send --brokers "$brokers" --tenant billing --id "bounce-$run" \
  --from billing@example.com --to nobody@example.net --subject "Hello?" --text "anyone?"
"$bin/mailroomctl" send --brokers "$brokers" --tenant billing --id "busy-$run" \
  --from billing@example.com --to busy@example.net --subject "Retry me" --text "later"
echo "… 20 newsletters as tenant 'marketing', rate-limited to 5/s"
"$bin/mailroomctl" send --brokers "$brokers" --tenant marketing --id "news-$run" --count 20 \
  --from news@example.org --to reader@example.org --subject "News" --html "<h1>News</h1>"
echo "… proto3 JSON from kcat, no protoc needed"
printf '{"id":"json-%s","from":{"email":"billing@example.com"},"to":[{"email":"linus@example.net"}],"subject":"Hello from kcat","textBody":"hi"}' "$run" |
  kcat -P -b "$brokers" -t mail.jobs.billing -H content-type=application/json

step "Publishing bad jobs: each becomes a REJECTED event with a reason"
"$bin/mailroomctl" send --brokers "$brokers" --tenant billing --id "spoof-$run" \
  --from ceo@example.com --to ada@example.net --subject "Wire money" --text "now"
"$bin/mailroomctl" send --brokers "$brokers" --tenant billing --id "inject-$run" \
  --from billing@example.com --to ada@example.net --subject $'hi\r\nBcc: all@example.net' --text x
"$bin/mailroomctl" send --brokers "$brokers" --tenant payroll --id "unknown-$run" \
  --from billing@example.com --to ada@example.net --subject "hi" --text x
printf 'this is not a MailJob' | kcat -P -b "$brokers" -t mail.jobs.billing -k "garbage-$run"

step "Waiting for mailroom to ingest and deliver them (the busy address is retried after ~2 s)"
metric() { curl -s http://127.0.0.1:8080/metrics | awk -v m="$1" 'index($0, m) == 1 {s += $NF} END {print s + 0}'; }
for _ in $(seq 300); do
  [ "$(metric mailroom_ingest_received_total)" -ge 130 ] &&
    [ "$(metric 'mailroom_deliveries_total{carrier="relay",outcome="delivered"')" -ge 123 ] && break
  sleep 0.2
done

step "A later job to the address that bounced is suppressed, not sent"
"$bin/mailroomctl" send --brokers "$brokers" --tenant billing --id "again-$run" \
  --from billing@example.com --to nobody@example.net --subject "Hello again?" --text "?"
for _ in $(seq 100); do [ "$(metric mailroom_suppressed_total)" -ge 1 ] && break; sleep 0.2; done
"$bin/mailroomctl" spool suppressions --path "$work/spool"
sleep 1

step "Spool: jobs by state (mailroomctl spool stats)"
"$bin/mailroomctl" spool stats --path "$work/spool"

step "One job record (mailroomctl spool show)"
"$bin/mailroomctl" spool show --path "$work/spool" --tenant billing --id "busy-$run" | grep -v -E "^   *\"(text_body|html_body)\""

step "What the relay received: the first message, as sent (envelope, then headers)"
/usr/bin/python3 - "$work/relay.jsonl" <<'PY'
import base64, json, sys
m = json.loads(open(sys.argv[1]).readline())
print("MAIL FROM:", m["mail_from"], " RCPT TO:", ", ".join(m["rcpt_tos"]))
print(base64.b64decode(m["data_b64"]).decode().split("\r\n\r\n")[0])
PY
echo "… $(wc -l <"$work/relay.jsonl") messages in all at the relay"

step "The file carrier's message ($work/outbox-files)"
head -12 "$work"/outbox-files/*.eml

step "Events on mail.events (mailroomctl events): every outcome but the many ACCEPTED/DELIVERED"
"$bin/mailroomctl" events --brokers "$brokers" > "$work/events.jsonl"
grep -E '"(REJECTED|BOUNCED|DEFERRED|SUPPRESSED)"' "$work/events.jsonl"
grep -E '"DELIVERED"' "$work/events.jsonl" | grep "busy-$run" || true
for t in ACCEPTED DELIVERED DEFERRED BOUNCED SUPPRESSED REJECTED; do
  printf '%-10s %s\n' "$t" "$(grep -c "\"$t\"" "$work/events.jsonl" || true)"
done

step "Dead-letter topic mail.deadletter (undecodable records, with reason headers)"
kcat -C -b "$brokers" -t mail.deadletter -o beginning -e -q -f 'key=%k headers=%h payload=%s\n' | grep "$run" || true

step "Metrics (http://127.0.0.1:8080/metrics)"
curl -s http://127.0.0.1:8080/metrics | grep -E '^mailroom_(ingest_(received|accepted|duplicates|rejected|deadletter)_total|events_published_total|spool_jobs\{state="(queued|delivered|bounced|suppressed|deferred)"\}|spool_outbox_pending|deliveries_total|bounces_total|suppressed_total|rate_limited_total|delivery_retries_total|delivery_attempt_seconds_count|carrier_connections)'
echo
echo "readyz: $(curl -s http://127.0.0.1:8080/readyz)"
step "Done. Log: $work/mailroom.log"

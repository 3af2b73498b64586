#!/usr/bin/env bash
# Mailroom end to end, on this machine: starts Kafka, starts mailroom, publishes
# sample jobs (good ones and bad ones) and shows where each one ended up: the
# spool, the outbox events, the dead-letter topic and the metrics.
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

step "Starting mailroom with config/demo.yaml (spool in $work/spool)"
"$bin/mailroom" --check-config "$root/config/demo.yaml"
"$bin/mailroom" --config "$root/config/demo.yaml" >"$work/mailroom.log" 2>&1 &
pid=$!
cleanup() {
  if [ "${KEEP_RUNNING:-0}" != 1 ]; then
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
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

step "Waiting for mailroom to ingest them"
for _ in $(seq 150); do
  n=$(curl -s http://127.0.0.1:8080/metrics | awk '/^mailroom_ingest_received_total/ {s += $2} END {print s + 0}')
  [ "$n" -ge 107 ] && break
  sleep 0.2
done
sleep 0.5

step "Spool: jobs by state (mailroomctl spool stats)"
"$bin/mailroomctl" spool stats --path "$work/spool"

step "One job record (mailroomctl spool show)"
"$bin/mailroomctl" spool show --path "$work/spool" --tenant billing --id "invoice-$run" | head -40

step "REJECTED events on mail.events (mailroomctl events; ACCEPTED ones counted)"
"$bin/mailroomctl" events --brokers "$brokers" > "$work/events.jsonl"
grep '"REJECTED"' "$work/events.jsonl"
echo "… and $(grep -c '"ACCEPTED"' "$work/events.jsonl") ACCEPTED events"

step "Dead-letter topic mail.deadletter (undecodable records, with reason headers)"
kcat -C -b "$brokers" -t mail.deadletter -o beginning -e -q -f 'key=%k headers=%h payload=%s\n' | grep "$run" || true

step "Metrics (http://127.0.0.1:8080/metrics)"
curl -s http://127.0.0.1:8080/metrics | grep -E '^mailroom_(ingest_(received|accepted|duplicates|rejected|deadletter)_total|events_published_total|spool_jobs\{state="queued"\}|spool_outbox_pending|ingest_batch_commit_seconds_count)'
echo
echo "readyz: $(curl -s http://127.0.0.1:8080/readyz)"
step "Done. Log: $work/mailroom.log"

#!/usr/bin/env bash
# Runs the pipeline locally on the DirectRunner's in-process engine.
#
#   ./run_local.sh                 generate sample data (once), start the local Segment-compatible
#                                  receiver, send everything to it, print the summary and what it
#                                  got; the report (coverage, gaps) goes to out/report.html
#   ./run_local.sh --mapping current   the same with the `current` mapping profile: the generated
#                                  sample then holds its 80 types (sample-data-current/)
#   ./run_local.sh --input DIR ... your own data: you must say where it goes
#                                  (--segment_region us|eu, --segment_endpoint URL or
#                                  --dry_run_output DIR); the local receiver is never used for it
#
# The local receiver (nothing leaves this machine) is started only for the generated sample data,
# when no destination is given. Everything written under out/ is owner-only (umask 077).
set -euo pipefail
umask 077
cd "$(dirname "$0")"

args=("$@")
has() { local f; for f in "${args[@]+"${args[@]}"}"; do case "$f" in "$1"|"$1"=*) return 0;; esac; done; return 1; }

# The mapping profile asked for (--mapping X or --mapping=X), so generated data matches it.
mapping=classic
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --mapping=*) mapping="${args[$i]#--mapping=}" ;;
    --mapping) mapping="${args[$((i + 1))]:-classic}" ;;
  esac
done
if has --input && ! has --segment_endpoint && ! has --segment_region && ! has --dry_run_output; then
  echo "run_local.sh: error: with --input, say where the events go: --segment_region us|eu (Segment)," \
       "--segment_endpoint URL, or --dry_run_output DIR (send nothing); the local receiver is only for the sample data" >&2
  exit 2
fi
source scripts/venv.sh

out="${LOCAL_OUT:-out}"
own_input=false; has --input && own_input=true
if ! $own_input; then
  # 12 hours with a few deliberate gaps for the report to show (docs/report.md);
  # generated again when these arguments change.
  data=sample-data; [ "$mapping" = classic ] || data="sample-data-$mapping"
  sample=(--events "${SAMPLE_EVENTS:-20000}" --seed 1 --hours 12 --deliberate-gaps --mapping "$mapping")
  if [ "$(cat "$data/arguments" 2>/dev/null)" != "${sample[*]}" ]; then
    rm -rf "$data"
    python -m devtools.sample --output "$data" "${sample[@]}"
    echo "${sample[*]}" > "$data/arguments"
  fi
  args+=(--input "$data/currents")
fi
has --rejects || args+=(--rejects "$out/rejects")
has --summary_output || args+=(--summary_output "$out/summary.json")
has --report || has --plan || args+=(--report "$out/report.html")

receiver_pid=""
cleanup() { if [ -n "$receiver_pid" ]; then kill "$receiver_pid" 2>/dev/null || true; wait "$receiver_pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

if ! $own_input && ! has --segment_endpoint && ! has --dry_run_output && ! has --segment_region; then
  export SEGMENT_WRITE_KEY=local-dev-write-key   # a real key never goes to the local receiver
  mkdir -p "$out"
  port_file="$out/receiver.port"; rm -f "$port_file"
  python -m devtools.receiver --port 0 --port-file "$port_file" --store "$out/received.jsonl" \
    > "$out/receiver.log" 2>&1 &
  receiver_pid=$!
  for _ in $(seq 100); do [ -s "$port_file" ] && break; sleep 0.1; done
  [ -s "$port_file" ] || { echo "run_local.sh: the local receiver did not start (see $out/receiver.log)" >&2; exit 1; }
  url="http://127.0.0.1:$(cat "$port_file")/v1/batch"
  echo "local Segment-compatible receiver: $url"
  args+=(--segment_endpoint "$url")
fi

start=$(date +%s.%N)
status=0
python -m pipeline "${args[@]}" || status=$?
end=$(date +%s.%N)

if [ -n "$receiver_pid" ]; then
  python - "$url" "$start" "$end" <<'PY'
import json, os, sys, urllib.request
from devtools.receiver import control_headers
url, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
request = urllib.request.Request(url.replace('/v1/batch', '/_receiver/stats'),
                                 headers=control_headers(os.environ['SEGMENT_WRITE_KEY']))
stats = json.load(urllib.request.urlopen(request))
by = ', '.join(f'{k}: {v}' for k, v in sorted(stats['by_status'].items()))
print(f"receiver: {stats['accepted']} unique messages accepted in {stats['requests']} requests "
      f"({by}); duplicates {stats['duplicates']}, silently dropped {stats['silently_dropped']}")
print(f"wall time {end - start:.1f} s")
PY
fi
exit $status

#!/usr/bin/env bash
# Downloads of the bench-scale pipelines layer (994,615 segments) in each format, one service process per
# format so that GNU time reports that format's own peak RSS. Needs the gis_bench database that `make bench`
# loads on the embedded cluster. Prints one line per format; docs/benchmarks.md ("Downloads") has the table.
#
#     bash bench/downloads.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=8766
URL=$(.venv/bin/gis db url)
export GIS_DATABASE_URL="${URL%/*}/gis_bench" GIS_SAMPLES_DIR=data-samples/generated/bench
export GIS_HTTP_RATE_PER_SECOND=0  # one busy client: measure the download, not the rate limiter
KEY=$(.venv/bin/gis keys create --name "downloads bench" --role admin | tail -1)
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for format in csv gpkg fgb shp; do
  /usr/bin/time -v .venv/bin/gis serve --port "$PORT" > "$OUT/serve.log" 2> "$OUT/time.log" &
  for _ in $(seq 120); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/conformance" && break; sleep 0.5; done
  curl -sf -o /dev/null -H "X-API-Key: $KEY" "http://127.0.0.1:$PORT/collections/pipelines/items?limit=1"
  server=$(pgrep -n -f "gis serve --port $PORT")  # the newest: the service, not time(1) that started it
  baseline=$(ps -o rss= -p "$server")
  load=$(cut -d' ' -f1 /proc/loadavg)
  started=$(date +%s.%N)
  curl -sf -H "X-API-Key: $KEY" -o "$OUT/pipelines.$format" \
    "http://127.0.0.1:$PORT/collections/pipelines/download?f=$format"
  ended=$(date +%s.%N)
  kill -INT "$server"
  wait || true
  peak=$(awk '/Maximum resident/ {print $NF}' "$OUT/time.log")
  printf '%s wall_s=%.1f file_MiB=%d baseline_MiB=%d peak_MiB=%d over_MiB=%d load=%s\n' "$format" \
    "$(echo "$ended - $started" | bc)" $(( $(stat -c %s "$OUT/pipelines.$format") / 1048576 )) \
    $(( baseline / 1024 )) $(( peak / 1024 )) $(( (peak - baseline) / 1024 )) "$load"
  rm -f "$OUT/pipelines.$format"
done

#!/usr/bin/env bash
# Renders an HTML report (from `tuningfork report`) in headless Chromium and saves a PNG, to
# look at a report as a user's browser shows it.
#   scripts/screenshot-report.sh report.html [report.png] [WIDTHxHEIGHT]
set -euo pipefail
html=${1:?usage: scripts/screenshot-report.sh REPORT.html [OUT.png] [WIDTHxHEIGHT]}
out=${2:-${html%.html}.png}
size=${3:-1280x2400}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [[ -z $browser ]]; then
  echo "no Chromium found; install it with: apt-get install chromium" >&2
  exit 1
fi
# No network: the report is self-contained, and the browser must not fetch anything.
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --no-first-run --disable-background-networking --proxy-server='127.0.0.1:9' \
  --window-size="${size/x/,}" --screenshot="$(realpath -m "$out")" \
  "file://$(realpath "$html")" 2>/dev/null
echo "wrote $out"

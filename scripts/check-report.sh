#!/usr/bin/env bash
# Renders `moe analyze`'s report in a real browser: runs the analysis on the embedded model (or
# MODEL) over the synthetic tasks, parses every SVG as XML, loads report.html in headless
# Chromium (Debian's `chromium` package), checks the DOM it built holds every picture, and saves
# a screenshot beside the report.
#
#     scripts/check-report.sh [OUT_DIR] [MODEL]
set -euo pipefail
out=${1:-/tmp/moekit-report}
root=$(cd "$(dirname "$0")/.." && pwd)
model_args=()
[ -n "${2:-}" ] && model_args=(--model "$2")
(cd "$root" && swift run -c release moe analyze --synthetic --samples 300 --out "$out" "${model_args[@]}") > "$out.summary.json"
python3 - "$out" <<'PY'
import glob, sys, xml.etree.ElementTree as ET
svgs = glob.glob(sys.argv[1] + "/*.svg")
for f in svgs:
    ET.parse(f)  # raises on malformed XML
print(f"{len(svgs)} SVG files parse as XML")
PY
chromium --headless --no-sandbox --disable-gpu --dump-dom "file://$out/report.html" > "$out/dom.html" 2>/dev/null
expected=$(ls "$out"/*.svg | wc -l)
rendered=$(grep -o '<svg' "$out/dom.html" | wc -l)
[ "$rendered" -eq "$expected" ] || { echo "the browser's DOM holds $rendered pictures, expected $expected" >&2; exit 1; }
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,2400 \
  --screenshot="$out/report.png" "file://$out/report.html" > /dev/null 2>&1
[ -s "$out/report.png" ] || { echo "no screenshot" >&2; exit 1; }
echo "report.html rendered with $rendered pictures; screenshot $out/report.png ($(stat -c %s "$out/report.png") bytes)"

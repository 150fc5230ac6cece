#!/usr/bin/env bash
# The GGUF reader's fuzz run (scripts/fuzz.sh gguf [SECONDS]), kept under its earlier name.
exec "$(dirname "$0")/fuzz.sh" gguf "${1:-600}"

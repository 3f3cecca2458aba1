#!/bin/sh
# What the test suite needs that pip cannot install: headless Chromium, which renders the comparison
# report's HTML page in tests/e2e/test_compare_report.py. Debian's package, installed once; a machine
# that has it already is left alone. The README's test command runs this first, and so does .ci/run.
set -eu
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "tests/system-packages.sh: Chromium is missing and installing it needs root: apt-get install chromium" >&2
    exit 1
fi
echo "tests/system-packages.sh: installing Debian's chromium for the report's rendering tests" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null

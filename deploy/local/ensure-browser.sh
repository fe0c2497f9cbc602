#!/usr/bin/env bash
# The browser tests' Chromium (tests/browser): Debian's chromium package, driven
# headless by Playwright for Python, which never downloads a browser of its own.
# Uses AIPORT_CHROMIUM (default /usr/bin/chromium) if it runs; on Debian/Ubuntu
# as root, installs the package; otherwise prints the exact steps and fails.
set -euo pipefail

CHROMIUM="${AIPORT_CHROMIUM:-/usr/bin/chromium}"

runs() { [ -x "$CHROMIUM" ] && "$CHROMIUM" --headless --no-sandbox --version >/dev/null 2>&1; }
runs && exit 0

# A custom path means the developer brings their own browser: say it is missing.
if [ -z "${AIPORT_CHROMIUM:-}" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "deps: installing Chromium (for tests/browser) ..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  runs && exit 0
  echo "deps: $CHROMIUM does not run after installing chromium" >&2
  exit 1
fi

cat >&2 <<STEPS
The browser tests need Chromium at $CHROMIUM (it does not run). E.g. on Debian:
  sudo apt-get update && sudo apt-get install -y chromium
or point AIPORT_CHROMIUM at a Chromium or Chrome binary you have (Playwright drives it;
it never downloads a browser).
STEPS
exit 1

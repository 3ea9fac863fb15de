#!/usr/bin/env bash
# Debian packages the tests and the stack need, installed only when missing:
#   chromium    headless browser for the UI tests (tests/test_browser.py)
#   postgresql  initdb/pg_ctl for `curatornet stack` and its end-to-end test
# Idempotent and quiet when everything is there; used by `make test` and .ci/run.
set -euo pipefail

missing=()
# The browser tests drive /usr/bin/chromium (CHROMIUM_BIN overrides the path checked).
[ -x "${CHROMIUM_BIN:-/usr/bin/chromium}" ] || missing+=(chromium)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: need Debian packages: ${missing[*]} (no apt-get here; install them by hand)" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-system-deps: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi
echo "install-system-deps: installing ${missing[*]} from Debian's packages" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null

#!/usr/bin/env bash
# Make sure a Chromium for the browser tests (services/preferences/tests/test_browser.py) is
# installed. Idempotent: does nothing when it is there. Installs Debian's `chromium` package
# only when apt-get exists and we are root; otherwise it says what to do and exits 0, and the
# browser test fails with the same advice (it never skips).
#
#   scripts/ensure-chromium.sh            # path from $CONSENTRY_CHROMIUM, default /usr/bin/chromium
set -euo pipefail

chromium="${CONSENTRY_CHROMIUM:-/usr/bin/chromium}"

if [[ -x "$chromium" ]]; then
  exit 0
fi

if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" -eq 0 ]]; then
  echo "ensure-chromium: $chromium is missing; installing Debian's chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Another apt/dpkg run may hold the lock: wait for it rather than fail.
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium
  if [[ -x "$chromium" ]]; then
    exit 0
  fi
  echo "ensure-chromium: installed, but $chromium is still missing (set CONSENTRY_CHROMIUM)" >&2
  exit 1
fi

echo "ensure-chromium: $chromium is missing and cannot be installed here (needs apt-get and" \
  "root); install Chromium and/or set CONSENTRY_CHROMIUM, or the browser test will fail" >&2
exit 0

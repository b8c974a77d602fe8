#!/bin/sh
# Debian's Chromium for the browser tests (tests/browser.py drives it through playwright; never
# `playwright install`). Instant when /usr/bin/chromium is there; otherwise installs the Debian
# package with apt-get as root. Exits non-zero with a one-line reason when it cannot.
set -u
CHROMIUM=/usr/bin/chromium

fail() {
    echo "setup-chromium: $*" >&2
    exit 1
}

[ -x "$CHROMIUM" ] && exit 0
[ "$(id -u)" -eq 0 ] || fail "$CHROMIUM is missing; run as root (or: sudo apt-get install chromium)"
command -v apt-get >/dev/null 2>&1 || fail "$CHROMIUM is missing and apt-get is not available"

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp) || fail "cannot create a temporary log file"
trap 'rm -f "$log"' EXIT
# a fresh container has no package lists: fetch them only when apt does not know chromium
if ! apt-cache show chromium >/dev/null 2>&1; then
    apt-get update -q >"$log" 2>&1 || fail "apt-get update failed: $(tail -n 1 "$log")"
fi
apt-get install -y -q chromium >"$log" 2>&1 \
    || fail "apt-get install chromium failed: $(tail -n 1 "$log")"
[ -x "$CHROMIUM" ] || fail "chromium was installed but $CHROMIUM is still missing"

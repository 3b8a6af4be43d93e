#!/usr/bin/env bash
# Install the browser the map page's test drives (tests/cli/test_view.py, bench/view.py): Debian's chromium package,
# only when no Chromium is here, and only where apt-get can run (root); then checks that it is there, as the tests
# look for it (pipeline/testing/browser.py: $SRCUBE_CHROMIUM, chromium, chromium-browser, google-chrome).
# What cannot be installed is said here. On a workstation that is all (exit 0): the browser test skips, naming it.
# Under CI=true (set by CI services) it fails (exit 1): CI must not go green without the browser test.
set -uo pipefail
cd "$(dirname "$0")/.."
have_chromium() {
    if [ -n "${SRCUBE_CHROMIUM:-}" ]; then command -v "$SRCUBE_CHROMIUM" >/dev/null; return; fi
    command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null \
        || command -v google-chrome-stable >/dev/null
}
if ! have_chromium; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "browser.sh: installing chromium from Debian's packages" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 \
                 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; } \
            || echo "browser.sh: could not install chromium" >&2
    else
        echo "browser.sh: Chromium is missing and apt-get cannot run here (it needs root)" >&2
    fi
fi
if ! have_chromium; then
    case "${CI:-}" in
        true | TRUE | True | 1)
            echo "browser.sh: CI=${CI}: failing, as Chromium could not be installed: the browser test would skip" >&2
            exit 1 ;;
    esac
    echo "browser.sh: Chromium not installed: the browser test will skip, naming it" >&2
fi
exit 0

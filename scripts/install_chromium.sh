#!/usr/bin/env bash
# Installs Debian's Chromium and ChromeDriver for the browser test when they are missing.
# Never fails the build: when they cannot be installed, the browser test is skipped and says why.
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: Chromium is missing and cannot be installed here (needs root and apt-get); the browser test will be skipped"
    exit 0
fi
echo "setup: installing chromium and chromium-driver with apt-get ..."
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } >/tmp/detrlib-chromium.log 2>&1; then
    echo "setup: apt-get could not install Chromium (see /tmp/detrlib-chromium.log); the browser test will be skipped"
fi
exit 0

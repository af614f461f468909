#!/usr/bin/env bash
# Installs what the tests need and a fresh machine may lack: tmux (the
# sessions run in real tmux), python3 (the fake agents in fixtures/), and
# Chromium with its WebDriver (the dashboard's browser test).
set -euo pipefail

need=()
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# Debian's packages; elsewhere install Chromium and chromedriver yourself,
# or set IAPEER_SKIP_BROWSER=1 to skip the browser test on purpose.
if command -v apt-get >/dev/null 2>&1; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
fi
[ ${#need[@]} -eq 0 ] && exit 0

echo "installing test dependencies: ${need[*]}"
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo=(sudo); else
    echo "missing ${need[*]}; install them (no root and no sudo here)" >&2
    exit 1
  fi
fi
if command -v apt-get >/dev/null 2>&1; then
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
elif command -v brew >/dev/null 2>&1; then
  brew install "${need[@]}"
else
  echo "missing ${need[*]}; install them with your package manager" >&2
  exit 1
fi

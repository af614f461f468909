#!/usr/bin/env bash
# Installs what the tests need and a fresh machine may lack: tmux (the
# sessions run in real tmux), python3 (the fake agents and the mock model
# servers), faketime (a daemon's wall clock made to jump), curl and
# promtool (Debian's prometheus package), Chromium with
# its WebDriver (the dashboard's browser test), Node.js with npm, and the
# pinned real Claude Code and Codex CLIs from npm
# (tests/realcli/package-lock.json) for the real-client tier.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v npm >/dev/null 2>&1 || need+=(npm)
# curl makes the requests another local user would (the dashboard's
# privacy test); promtool checks the metrics and the contrib/ alert rules.
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# libfaketime moves one process's wall clock (the clock-jump tests).
command -v faketime >/dev/null 2>&1 || need+=(faketime)
# Debian's packages; elsewhere install Chromium and chromedriver yourself,
# or set IAPEER_SKIP_BROWSER=1 to skip the browser test on purpose.
if command -v apt-get >/dev/null 2>&1; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
fi

if [ ${#need[@]} -gt 0 ]; then
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
    brew install "${need[@]/npm/node}"
  else
    echo "missing ${need[*]}; install them with your package manager" >&2
    exit 1
  fi
fi

# The real clients, exactly as pinned. Reinstalled when the lockfile is
# newer than what is installed.
realcli=tests/realcli
stamp=$realcli/node_modules/.package-lock.json
if [ "${IAPEER_SKIP_REALCLI:-}" = 1 ]; then
  echo "IAPEER_SKIP_REALCLI=1: the real Claude Code and Codex CLIs are NOT installed; the real-client tests will be skipped" >&2
elif [ ! -f "$stamp" ] || [ "$realcli/package-lock.json" -nt "$stamp" ] \
  || [ ! -x "$realcli/node_modules/.bin/claude" ] || [ ! -x "$realcli/node_modules/.bin/codex" ]; then
  echo "installing the pinned Claude Code and Codex CLIs into $realcli/node_modules"
  npm ci --prefix "$realcli" --no-audit --no-fund --loglevel=error
fi

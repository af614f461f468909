#!/usr/bin/env bash
# Installs the service definition for this platform, pointing at BIN, and
# prints the command that enables it.
set -euo pipefail
bin=${1:?usage: install-unit.sh /path/to/iapeer}
here=$(cd "$(dirname "$0")/.." && pwd)

case "$(uname -s)" in
  Linux)
    dir="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
    mkdir -p "$dir"
    sed "s|^ExecStart=.*|ExecStart=$bin daemon|" "$here/units/iapeer.service" > "$dir/iapeer.service"
    echo "installed $dir/iapeer.service"
    echo "enable it with: systemctl --user daemon-reload && systemctl --user enable --now iapeer"
    ;;
  Darwin)
    dir="$HOME/Library/LaunchAgents"
    mkdir -p "$dir" "$HOME/.iapeer/logs/daemon"
    sed -e "s|@BIN@|$bin|g" -e "s|@HOME@|$HOME|g" "$here/units/com.iapeer.daemon.plist" > "$dir/com.iapeer.daemon.plist"
    echo "installed $dir/com.iapeer.daemon.plist"
    echo "enable it with: launchctl bootstrap gui/$(id -u) $dir/com.iapeer.daemon.plist"
    ;;
  *)
    echo "no service definition for $(uname -s); run \`$bin daemon\` under your supervisor" >&2
    ;;
esac

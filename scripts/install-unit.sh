#!/usr/bin/env bash
# Installs the service definition for this platform, pointing at BIN (its
# folder first on the service's PATH), the shell completions and the man
# page, and says how to enable it, or what to do where that cannot work.
#   install-unit.sh /path/to/bin/iapeer      install
#   install-unit.sh --uninstall PREFIX       remove what install put in place
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

data="${XDG_DATA_HOME:-$HOME/.local/share}"
bash_completion="$data/bash-completion/completions/iapeer"
zsh_completion="$data/zsh/site-functions/_iapeer"
fish_completion="${XDG_CONFIG_HOME:-$HOME/.config}/fish/completions/iapeer.fish"
unit_dir="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
agent_dir="$HOME/Library/LaunchAgents"

if [ "${1:-}" = --uninstall ]; then
  prefix=${2:?usage: install-unit.sh --uninstall PREFIX}
  if [ "$(uname -s)" = Linux ] && [ -f "$unit_dir/iapeer.service" ]; then
    systemctl --user disable --now iapeer 2>/dev/null || true
    rm -f "$unit_dir/iapeer.service"
    systemctl --user daemon-reload 2>/dev/null || true
    echo "removed $unit_dir/iapeer.service"
  fi
  if [ "$(uname -s)" = Darwin ] && [ -f "$agent_dir/com.iapeer.daemon.plist" ]; then
    launchctl bootout "gui/$(id -u)" "$agent_dir/com.iapeer.daemon.plist" 2>/dev/null || true
    rm -f "$agent_dir/com.iapeer.daemon.plist"
    echo "removed $agent_dir/com.iapeer.daemon.plist"
  fi
  rm -f "$bash_completion" "$zsh_completion" "$fish_completion" "$prefix/share/man/man1/iapeer.1"
  rm -f "$prefix/bin/iapeer"
  echo "removed $prefix/bin/iapeer, its completions and man page; ~/.iapeer (state and logs) is left as it was"
  exit 0
fi

bin=${1:?usage: install-unit.sh /path/to/iapeer}
bindir=$(dirname "$bin")
prefix=$(dirname "$bindir")

mkdir -p "$(dirname "$bash_completion")" "$(dirname "$zsh_completion")" "$(dirname "$fish_completion")" "$prefix/share/man/man1"
"$bin" completions bash > "$bash_completion"
"$bin" completions zsh > "$zsh_completion"
"$bin" completions fish > "$fish_completion"
"$bin" man > "$prefix/share/man/man1/iapeer.1"
echo "installed completions (bash, zsh, fish) and $prefix/share/man/man1/iapeer.1"

case "$(uname -s)" in
  Linux)
    mkdir -p "$unit_dir"
    sed -e "s|^ExecStart=.*|ExecStart=$bin daemon|" \
        -e "s|^Environment=PATH=.*|Environment=PATH=$bindir:%h/.local/bin:/usr/local/bin:/usr/bin:/bin|" \
        "$here/units/iapeer.service" > "$unit_dir/iapeer.service"
    echo "installed $unit_dir/iapeer.service"
    if systemctl --user show-environment >/dev/null 2>&1; then
      echo "enable it with: systemctl --user daemon-reload && systemctl --user enable --now iapeer"
      if [ "$(loginctl show-user "$(id -un)" --property=Linger --value 2>/dev/null)" != yes ]; then
        echo "to keep the agents running while you are logged out: loginctl enable-linger $(id -un)"
      fi
    else
      echo "there is no systemd user manager here (no session bus), so the unit cannot be enabled now."
      echo "log in through a session that has one (ssh or a desktop login; then \`loginctl enable-linger $(id -un)\`"
      echo "keeps it after you log out), or run \`$bin daemon\` under another supervisor."
    fi
    ;;
  Darwin)
    mkdir -p "$agent_dir" "$HOME/.iapeer/logs/daemon"
    sed -e "s|@BIN@|$bin|g" -e "s|@HOME@|$HOME|g" "$here/units/com.iapeer.daemon.plist" > "$agent_dir/com.iapeer.daemon.plist"
    echo "installed $agent_dir/com.iapeer.daemon.plist"
    echo "enable it with: launchctl bootstrap gui/$(id -u) $agent_dir/com.iapeer.daemon.plist"
    ;;
  *)
    echo "no service definition for $(uname -s); run \`$bin daemon\` under your supervisor" >&2
    ;;
esac
echo "settings for the daemon go in ~/.iapeer/config.toml (see docs/configuration.md); \`iapeer config\` shows them"

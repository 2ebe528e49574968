# Installs the Debian/Ubuntu packages the project needs, when missing.
# Sourced by scripts/serve and scripts/test; uses sudo when not root.

# need_packages REQUIRED... [-- OPTIONAL...]: installs what is missing; a
# required package that cannot be installed is an error, an optional one a
# warning (the tests that need it then say they were skipped).
need_packages() {
  local required=() optional=() into=required missing=() package
  for package in "$@"; do
    if [ "$package" = "--" ]; then into=optional; continue; fi
    if [ "$into" = required ]; then required+=("$package"); else optional+=("$package"); fi
  done
  for package in "${required[@]}" "${optional[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" ||
      missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0

  if [ -n "${CHAT_NO_INSTALL:-}" ] || ! command -v apt-get >/dev/null; then
    # Not ours to install: say exactly what is missing and how to get it.
    local need=()
    for package in "${missing[@]}"; do
      printf '%s\n' "${required[@]}" | grep -qx "$package" && need+=("$package")
    done
    echo "missing: ${missing[*]} (install with: sudo apt-get install ${missing[*]})" >&2
    [ ${#need[@]} -eq 0 ]
    return
  fi

  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "need root or sudo to install: ${missing[*]}" >&2; return 1; }
    sudo="sudo"
  fi
  echo "Installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq || true
  if ! $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    # One by one, so that an optional package that does not exist here
    # (chromium on some Ubuntu images) does not stop the rest.
    for package in "${missing[@]}"; do
      if ! $sudo apt-get install -y -qq --no-install-recommends "$package" >/dev/null; then
        if printf '%s\n' "${required[@]}" | grep -qx "$package"; then
          echo "cannot install required package $package" >&2
          return 1
        fi
        echo "warning: optional package $package not installed; tests needing it are skipped" >&2
      fi
    done
  fi
}

# need_commands COMMAND[:PACKAGE]... [-- OPTIONAL...]: like need_packages,
# for commands: installs the package of each command that is not on PATH
# (PACKAGE defaults to the command's name). Where apt-get is missing or
# CHAT_NO_INSTALL is set, it only says what to install. Returns 1 when a
# required command is still missing afterwards.
need_commands() {
  local args=() item command package into=required missing_required=()
  for item in "$@"; do
    if [ "$item" = "--" ]; then args+=("--"); into=optional; continue; fi
    command=${item%%:*}
    package=${item#*:}
    command -v "$command" >/dev/null && continue
    args+=("$package")
    [ "$into" = required ] && missing_required+=("$command")
  done
  [ ${#args[@]} -eq 0 ] || [ "${args[*]}" = "--" ] && return 0
  need_packages "${args[@]}" || true
  for command in "${missing_required[@]}"; do
    if ! command -v "$command" >/dev/null; then
      echo "missing command: $command" >&2
      return 1
    fi
  done
}

# What building the servers needs.
BUILD_PACKAGES=(build-essential cmake pkg-config libevent-dev libhiredis-dev)

# shellcheck shell=bash
# Shared by scripts/install-system-deps, scripts/install-kamailio and scripts/install-freeswitch:
# messages, root, Debian packages. Sourced, not run; the sourcing script sets SCRIPT_NAME.
# Nothing here downloads, builds or unpacks anything but Debian's own packages (apt-get).

say() { echo "$SCRIPT_NAME: $*"; }
die() { echo "$SCRIPT_NAME: $*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "needs root (or sudo) to run: $*"
  fi
}

# installed PKG: the Debian package is installed.
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# apt_install PKG...: installs, with apt-get, the Debian packages that are missing.
apt_install() {
  local missing=() p
  for p in "$@"; do installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "no apt-get here (not Debian?): install ${missing[*]} yourself"
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    die "missing Debian packages: ${missing[*]}; run as root, or: apt-get install ${missing[*]}"
  fi
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# debian_release: "Debian 12" from /etc/debian_version (only to say which), or "this system".
debian_release() {
  local v
  v=$(cat /etc/debian_version 2>/dev/null || true)
  case $v in
    [0-9]*) echo "Debian ${v%%.*}" ;;
    */sid) echo "Debian testing/unstable" ;;
    *) echo "this system" ;;
  esac
}

# Shared by scripts/install-kamailio and scripts/install-freeswitch: how a part that Debian does
# not ship (in a version we support) is made available. Sourced, not run.
#
# Order, the same for both parts:
#   1. one already installed (a prefix the user names, or the binary on PATH), if supported;
#   2. the prebuilt archive in the vendor folder, on Debian 12 amd64, when its checksum matches
#      (apt-get its runtime packages, unpack under /);
#   3. a source build with the vendor folder's recipe;
#   4. otherwise a clear error that says how to get one.
# The vendor folder is ../shared/vendor beside the checkout, or $WA_SIP_VENDOR.

repo_root() { cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd; }

vendor_dir() {
  local root; root=$(repo_root)
  echo "${WA_SIP_VENDOR:-$root/../shared/vendor}"
}

say() { echo "$SCRIPT_NAME: $*"; }
die() { echo "$SCRIPT_NAME: $*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "needs root (or sudo) to run: $*"
  fi
}

# apt_install PKG...: installs the Debian packages that are missing, quietly.
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

is_bookworm_amd64() {
  [ -r /etc/debian_version ] && [[ "$(cat /etc/debian_version)" == 12.* ]] \
    && [ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ]
}

# checksum_ok DIR FILE: FILE's line in DIR/SHA256SUMS matches.
checksum_ok() {
  local dir=$1 file=$2
  [ -f "$dir/$file" ] && [ -f "$dir/SHA256SUMS" ] || return 1
  (cd "$dir" && grep -E "  $file\$" SHA256SUMS | sha256sum --quiet -c - >/dev/null 2>&1)
}

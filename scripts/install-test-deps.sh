#!/usr/bin/env bash
# Installs everything the test suite drives: the package with its test extras and
# the real third-party clients and scanners (Debian packages). Needs root for apt.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
APT_PACKAGES=(nmap smbclient lftp tftp-hpa atftp mariadb-client curl wrk openssl sqlite3 procps freetds-bin sip-tester sipsak gnutls-bin)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
python3 -m pip install -q -e '.[test]'

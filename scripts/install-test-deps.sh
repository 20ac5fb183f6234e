#!/usr/bin/env bash
# Install the real servers the integration tests run (Debian 12, as root): Dovecot IMAP + LMTP
# and the PostgreSQL server. Idempotent: does nothing (not even `apt-get update`) when all are
# present. The tests start their own throwaway instances on free ports; the system services
# the packages may start are not used.
set -euo pipefail

PACKAGES=(dovecot-imapd dovecot-lmtpd postgresql)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-test-deps: all present (${PACKAGES[*]})"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-test-deps: missing ${missing[*]}; run this script as root" >&2
  exit 1
fi

echo "install-test-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

command -v dovecot >/dev/null || { echo "install-test-deps: dovecot not found after install" >&2; exit 1; }
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "install-test-deps: initdb not found after install" >&2; exit 1; }
echo "install-test-deps: done"

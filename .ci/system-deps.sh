#!/usr/bin/env bash
# Installs the real components the tests drive, from Debian's packages, without starting their daemons.
set -euo pipefail
need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
command -v chromium >/dev/null || need+=(chromium)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql)
command -v wrk >/dev/null || need+=(wrk)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v caddy >/dev/null || need+=(caddy)
command -v faketime >/dev/null || need+=(faketime)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || [ ! -f /etc/debian_version ]; then
  echo "system-deps: not root on Debian; install these yourself or tests that need them will skip: ${need[*]}" >&2
  exit 0
fi
echo "system-deps: installing ${need[*]}" >&2
# Packages must not start their own daemons: the tests start what they need, on loopback.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod +x /usr/sbin/policy-rc.d
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

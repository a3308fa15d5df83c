#!/bin/sh
# `make env`: write the compose stack's .env with fresh random secrets, and secrets/read_token.
# Never overwrites: an existing .env or token file is left exactly as it is.
#   scripts/make-env.sh [DIR]    (DIR defaults to the repository root, where compose reads .env)
set -eu
dir=${1:-$(cd "$(dirname "$0")/.." && pwd)}
env_file="$dir/.env"
token_file="$dir/secrets/read_token"

random_hex() {
	od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'
}

if [ ! -e "$token_file" ]; then
	# The directory keeps the token private on the host; the file itself must be readable by the
	# containers' own users (Prometheus runs as nobody, the exporter as 10001), so it is 0644 inside.
	mkdir -p "$dir/secrets"
	chmod 700 "$dir/secrets"
	(umask 022 && random_hex 24 >"$token_file")
	echo "make env: wrote $token_file (the read token for /, /stats and /metrics)"
fi

if [ -e "$env_file" ]; then
	echo "make env: $env_file already exists; left unchanged (compose names any variable it still lacks)"
	exit 0
fi
umask 077
cat >"$env_file" <<END
# Written by \`make env\`. Secrets: never commit this file (it is in .gitignore).
# The compose profile: single (one exporter, SQLite), replicas (two exporters, PostgreSQL) or demo.
COMPOSE_PROFILES=single
# Your public host name, with DNS pointing here, for automatic HTTPS; localhost uses Caddy's own CA.
FLAKEDROP_DOMAIN=localhost
# Grafana's admin password (https://\$FLAKEDROP_DOMAIN/grafana/, user admin).
GRAFANA_ADMIN_PASSWORD=$(random_hex 16)
# PostgreSQL's password (profile replicas).
POSTGRES_PASSWORD=$(random_hex 16)
# The replicas' shared user-id HMAC key: never change it once real users have sent data.
FLAKEDROP_USER_ID_KEY=$(random_hex 32)
# The read token file, shared by the exporter (--read-token-file) and Prometheus (credentials_file).
FLAKEDROP_READ_TOKEN_FILE=./secrets/read_token
END
echo "make env: wrote $env_file (mode 0600) with random secrets"

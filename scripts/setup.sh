#!/usr/bin/env bash
# Idempotent setup for a fresh machine: npm packages, the Go-built servers and clients at their
# pins (scripts/tools.env) in .tools/bin, skopeo from Debian, PostgreSQL and Redis running, the
# database created and migrated. Called by `npm start` and `npm test`; each step is skipped when
# already done, so a warm run takes a second or two.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
QUIET=0
[[ "${1:-}" == "--quiet" ]] && QUIET=1
say() { [[ $QUIET == 1 ]] || echo "setup: $*"; }
note() { echo "setup: $*" >&2; }

# ---------------------------------------------------------------- npm packages
if [[ ! -d node_modules || ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  note "installing npm packages"
  # `npm ci` refuses this lock file: npm leaves other platforms' optional packages (@swc/core's
  # darwin and windows builds) out of it here. `npm install` installs the locked versions.
  npm install --no-audit --no-fund --loglevel=error
  touch node_modules/.package-lock.json
else
  say "npm packages up to date"
fi

# ---------------------------------------------------------------- Go tools
BIN="$ROOT/.tools/bin"
mkdir -p "$BIN"
export PATH="/usr/local/go/bin:$PATH"
pids=()
names=()
while IFS='=' read -r name pin; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  if [[ -x "$BIN/$name" && "$(cat "$BIN/$name.pin" 2>/dev/null)" == "$pin" ]]; then
    say "$name up to date ($pin)"
    continue
  fi
  note "building $name ($pin); the first build takes a few minutes"
  (
    tmp=$(mktemp -d)
    GOBIN="$tmp" GOFLAGS=-buildvcs=false GOTOOLCHAIN=auto go install "$pin" >"$ROOT/.tools/$name.build.log" 2>&1
    built=$(ls "$tmp")
    mv "$tmp/$built" "$BIN/$name"
    rmdir "$tmp"
    echo "$pin" >"$BIN/$name.pin"
  ) &
  pids+=($!)
  names+=("$name")
done <scripts/tools.env
failed=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    note "building ${names[$i]} failed; see .tools/${names[$i]}.build.log"
    failed=1
  fi
done
[[ $failed == 0 ]] || exit 1

# ---------------------------------------------------------------- TLS for the real Temporal server
# A private CA, the frontend's certificate (localhost, 127.0.0.1) and a client certificate for
# mutual TLS, used by MERIDIAN_TEMPORAL=server and the server test project. Regenerated when
# missing or within 30 days of expiry.
TLS="$ROOT/.tools/tls"
if ! openssl x509 -checkend 2592000 -noout -in "$TLS/client.pem" >/dev/null 2>&1 ||
  ! openssl x509 -checkend 2592000 -noout -in "$TLS/server.pem" >/dev/null 2>&1; then
  note "generating TLS certificates for the Temporal server in .tools/tls"
  mkdir -p "$TLS.tmp"
  (
    cd "$TLS.tmp"
    ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
    ec ca.key
    openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=Meridian development CA" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign -out ca.pem 2>/dev/null
    leaf() { # name, subject, extendedKeyUsage, subjectAltName
      ec "$1.key"
      openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr" 2>/dev/null
      printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\n%s\n' "$3" "$4" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 -days 825 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    leaf server localhost serverAuth,clientAuth 'subjectAltName=DNS:localhost,DNS:temporal-frontend,IP:127.0.0.1,IP:::1'
    leaf client meridian clientAuth ''
    chmod 600 ./*.key
  )
  rm -rf "$TLS" && mv "$TLS.tmp" "$TLS"
else
  say "Temporal TLS certificates up to date"
fi

# skopeo comes from Debian (the registry tests copy images with it).
if ! command -v skopeo >/dev/null 2>&1; then
  note "installing skopeo from Debian"
  if [[ $(id -u) == 0 ]]; then
    (apt-get install -y -qq skopeo >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq skopeo >/dev/null 2>&1; }) ||
      note "could not install skopeo; the skopeo tests will fail"
  else
    note "skopeo is missing and this is not root: run 'sudo apt-get install skopeo'"
  fi
fi

# ---------------------------------------------------------------- native SHA addon
# Resumable SHA-256/512 at OpenSSL speed (native/sha). Without gcc or OpenSSL headers Meridian
# falls back to a WebAssembly hasher about five times slower.
SHA_OUT=native/sha/build/sha.node
if [[ ! -f $SHA_OUT || native/sha/sha.c -nt $SHA_OUT ]]; then
  NODE_INC="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")/include/node"
  if [[ ! -f /usr/include/openssl/sha.h ]] && [[ $(id -u) == 0 ]]; then
    apt-get install -y -qq libssl-dev >/dev/null 2>&1 || true
  fi
  mkdir -p native/sha/build
  if command -v gcc >/dev/null && [[ -f "$NODE_INC/node_api.h" ]] &&
    gcc -O2 -shared -fPIC -Wall -I"$NODE_INC" -o "$SHA_OUT.tmp" native/sha/sha.c -lcrypto 2>".tools/sha.build.log"; then
    mv "$SHA_OUT.tmp" "$SHA_OUT"
    say "native SHA addon built"
  else
    note "could not build native/sha (see .tools/sha.build.log); using the slower WebAssembly hasher"
  fi
else
  say "native SHA addon up to date"
fi

# ---------------------------------------------------------------- PostgreSQL and Redis
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/meridian}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
pg_host=$(node -e 'const u=new URL(process.argv[1]);console.log(u.hostname||"127.0.0.1")' "$DATABASE_URL")
pg_port=$(node -e 'const u=new URL(process.argv[1]);console.log(u.port||5432)' "$DATABASE_URL")
if ! pg_isready -q -h "$pg_host" -p "$pg_port" 2>/dev/null; then
  if [[ "$pg_host" == 127.0.0.1 || "$pg_host" == localhost ]] && command -v pg_ctlcluster >/dev/null; then
    note "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h "$pg_host" -p "$pg_port" && break; sleep 1; done
  fi
  pg_isready -q -h "$pg_host" -p "$pg_port" || { note "PostgreSQL is not reachable at $pg_host:$pg_port (DATABASE_URL)"; exit 1; }
fi
redis_host=$(node -e 'const u=new URL(process.argv[1]);console.log(u.hostname||"127.0.0.1")' "$REDIS_URL")
redis_port=$(node -e 'const u=new URL(process.argv[1]);console.log(u.port||6379)' "$REDIS_URL")
if ! redis-cli -h "$redis_host" -p "$redis_port" ping >/dev/null 2>&1; then
  if [[ "$redis_host" == 127.0.0.1 || "$redis_host" == localhost ]] && command -v redis-server >/dev/null; then
    note "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$redis_port" --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
    for _ in $(seq 1 30); do redis-cli -h "$redis_host" -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.5; done
  fi
  redis-cli -h "$redis_host" -p "$redis_port" ping >/dev/null 2>&1 || { note "Redis is not reachable at $redis_host:$redis_port (REDIS_URL)"; exit 1; }
fi

# ---------------------------------------------------------------- database and migrations
DATABASE_URL="$DATABASE_URL" npx tsx db/migrate.ts --create-database-only
DATABASE_URL="$DATABASE_URL" npx drizzle-kit migrate >"$ROOT/.tools/migrate.log" 2>&1 || {
  cat "$ROOT/.tools/migrate.log" >&2
  note "database migration failed"
  exit 1
}
say "database migrated"
say "ready"

# shellcheck shell=bash
# Throwaway PostgreSQL, MariaDB, Redis, Pushgateway and S3 servers for the test suite.
# Sourced by scripts/test; every function is idempotent and safe to call on a fresh Debian machine.

SERVICES_DIR="${SERVICES_DIR:-$(mktemp -d /tmp/difymaint-services.XXXXXX)}"
chmod 755 "$SERVICES_DIR"

_as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    echo "scripts/test: need root (or sudo) to run: $*" >&2; return 1; fi
}

_pg_bindir() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }; done
  return 1
}

ensure_packages() {
  local missing=()
  _pg_bindir >/dev/null || missing+=(postgresql)
  command -v mariadbd >/dev/null 2>&1 || missing+=(mariadb-server)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v prometheus-pushgateway >/dev/null 2>&1 || missing+=(prometheus-pushgateway)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "scripts/test: installing ${missing[*]} from Debian's packages" >&2
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # Debian's postinst may start a default cluster and redis on the standard ports; ours use free ports,
  # so they do not collide, and we leave the system services alone.
}

_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start_postgres() {
  local bindir port data run_as=()
  bindir=$(_pg_bindir)
  port=$(_free_port)
  data="$SERVICES_DIR/pg"
  mkdir -p "$data"
  # initdb refuses to run as root, so the cluster belongs to the postgres user when we are root.
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$data"; run_as=(runuser -u postgres --); fi
  "${run_as[@]}" "$bindir/initdb" -D "$data" -A trust -U postgres --no-sync -E UTF8 >"$SERVICES_DIR/initdb.log" 2>&1 \
    || { cat "$SERVICES_DIR/initdb.log" >&2; return 1; }
  "${run_as[@]}" "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
    -o "-p $port -k $data -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start >/dev/null || { cat "$data/server.log" >&2; return 1; }
  PG_DATA_DIR="$data"; PG_BINDIR="$bindir"; PG_RUN_AS=("${run_as[@]}")
  export DIFYMAINT_TEST_PG_URL="postgresql+psycopg2://postgres@127.0.0.1:$port/postgres"
  echo "scripts/test: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" >&2
}

start_mariadb() {
  # Debian 12 ships MariaDB 10.11 (no MySQL 8 packages): the MySQL-protocol server Dify's DB_TYPE=mysql
  # tests run on. A throwaway datadir, root without a password on loopback, durability off (tests only).
  local port base run_as=()
  port=$(_free_port)
  base="$SERVICES_DIR/mariadb"
  mkdir -p "$base/data"
  # mariadbd refuses to run as root without --user; the datadir belongs to the mysql user then.
  if [ "$(id -u)" -eq 0 ]; then chown -R mysql: "$base"; run_as=(runuser -u mysql --); fi
  "${run_as[@]}" mariadb-install-db --no-defaults --datadir="$base/data" --auth-root-authentication-method=normal \
    --skip-test-db --skip-name-resolve >"$SERVICES_DIR/mariadb-install.log" 2>&1 \
    || { cat "$SERVICES_DIR/mariadb-install.log" >&2; return 1; }
  "${run_as[@]}" mariadbd --no-defaults --datadir="$base/data" --port="$port" --bind-address=127.0.0.1 \
    --socket="$base/mysqld.sock" --pid-file="$base/mysqld.pid" --log-error="$base/error.log" \
    --skip-name-resolve --skip-log-bin --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 \
    --innodb-buffer-pool-size=256M --max-connections=400 --character-set-server=utf8mb4 \
    --collation-server=utf8mb4_general_ci >/dev/null 2>&1 &
  for _ in $(seq 100); do
    mariadb-admin --no-defaults --socket="$base/mysqld.sock" -uroot ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  mariadb-admin --no-defaults --socket="$base/mysqld.sock" -uroot ping >/dev/null 2>&1 \
    || { cat "$base/error.log" >&2; return 1; }
  MARIADB_PIDFILE="$base/mysqld.pid"
  export DIFYMAINT_TEST_MYSQL_URL="mysql+pymysql://root@127.0.0.1:$port/mysql"
  echo "scripts/test: MariaDB $(mariadbd --version | awk '{print $3}' | cut -d- -f1) on 127.0.0.1:$port" >&2
}

start_redis() {
  local port
  port=$(_free_port)
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --pidfile "$SERVICES_DIR/redis.pid" --logfile "$SERVICES_DIR/redis.log" --dir "$SERVICES_DIR" >/dev/null
  for _ in $(seq 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis-cli -p "$port" ping >/dev/null 2>&1 || { cat "$SERVICES_DIR/redis.log" >&2; return 1; }
  REDIS_PIDFILE="$SERVICES_DIR/redis.pid"
  export DIFYMAINT_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
  echo "scripts/test: Redis $(redis-server --version | awk '{print $3}' | cut -d= -f2) on 127.0.0.1:$port" >&2
}

start_pushgateway() {
  # The real Pushgateway, so the metrics tests check what Prometheus would scrape, not what we think we sent.
  local port
  port=$(_free_port)
  prometheus-pushgateway --web.enable-admin-api --web.listen-address="127.0.0.1:$port" >"$SERVICES_DIR/pushgateway.log" 2>&1 &
  PUSHGATEWAY_PID=$!
  for _ in $(seq 50); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/-/ready', timeout=1)" \
      >/dev/null 2>&1 && break
    sleep 0.1
  done
  export DIFYMAINT_TEST_PUSHGATEWAY_URL="http://127.0.0.1:$port"
  echo "scripts/test: Pushgateway $(prometheus-pushgateway --version 2>&1 | awk 'NR==1{print $3}') on 127.0.0.1:$port" >&2
}

_start_moto() {  # _start_moto PORT [ENV=VALUE...]: moto's S3 server in the background, waited for
  local port="$1"; shift
  env "$@" "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >>"$SERVICES_DIR/moto.log" 2>&1 &
  S3_PIDS+=("$!")
  for _ in $(seq 100); do
    "$VENV/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=1)" \
      >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$SERVICES_DIR/moto.log" >&2; return 1
}

start_s3() {
  # Real S3-protocol servers (moto's server mode, from the test extras). The main one takes any credentials
  # (moto's signature check refuses listings whose query holds '/', which every S3 client sends). A second one
  # checks signatures: its first three unauthenticated calls create an IAM user with full access and its key,
  # every later request must be signed with that key, so a wrong secret is refused as by S3.
  local port auth_port keys
  VENV="${VENV:-.venv}"
  S3_PIDS=()
  port=$(_free_port)
  _start_moto "$port" || return 1
  auth_port=$(_free_port)
  _start_moto "$auth_port" INITIAL_NO_AUTH_ACTION_COUNT=3 || return 1
  keys=$("$VENV/bin/python" - "http://127.0.0.1:$auth_port" <<'PY'
import json, sys
import boto3
iam = boto3.client("iam", endpoint_url=sys.argv[1], aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap",
                   region_name="us-east-1")
iam.create_user(UserName="difymaint-test")
iam.put_user_policy(UserName="difymaint-test", PolicyName="all", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
key = iam.create_access_key(UserName="difymaint-test")["AccessKey"]
print(key["AccessKeyId"], key["SecretAccessKey"])
PY
  ) || { cat "$SERVICES_DIR/moto.log" >&2; return 1; }
  export DIFYMAINT_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
  export DIFYMAINT_TEST_S3_ACCESS_KEY="AKIDIFYMAINTTEST" DIFYMAINT_TEST_S3_SECRET_KEY="secret/key+for/tests"
  export DIFYMAINT_TEST_S3_AUTH_ENDPOINT="http://127.0.0.1:$auth_port"
  export DIFYMAINT_TEST_S3_AUTH_ACCESS_KEY="${keys%% *}" DIFYMAINT_TEST_S3_AUTH_SECRET_KEY="${keys#* }"
  echo "scripts/test: S3 (moto $("$VENV/bin/python" -c 'import moto; print(moto.__version__)')) on 127.0.0.1:$port" \
    "and, checking signatures, on 127.0.0.1:$auth_port" >&2
}

stop_services() {
  local pid
  for pid in "${S3_PIDS[@]:-}"; do kill "$pid" 2>/dev/null || true; done
  if [ -n "${PUSHGATEWAY_PID:-}" ]; then kill "$PUSHGATEWAY_PID" 2>/dev/null || true; fi
  if [ -n "${PG_DATA_DIR:-}" ]; then
    "${PG_RUN_AS[@]}" "$PG_BINDIR/pg_ctl" -D "$PG_DATA_DIR" -m immediate stop >/dev/null 2>&1 || true
  fi
  if [ -n "${MARIADB_PIDFILE:-}" ] && [ -f "$MARIADB_PIDFILE" ]; then
    kill -9 "$(cat "$MARIADB_PIDFILE")" 2>/dev/null || true
  fi
  if [ -n "${REDIS_PIDFILE:-}" ] && [ -f "$REDIS_PIDFILE" ]; then
    kill "$(cat "$REDIS_PIDFILE")" 2>/dev/null || true
  fi
  rm -rf "$SERVICES_DIR"
}

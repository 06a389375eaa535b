# Shared set-up for bin/demo and bin/test: a virtual environment with the
# package installed, and a PostgreSQL to talk to. Sourced, not run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ACODE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "==> creating virtual environment in $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp="$VENV/.acode-sync-installed"
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        # pip and setuptools talk a lot; their output goes to a log shown only
        # when the install fails.
        local log="$VENV/install.log"
        echo "==> installing acode-sync and its test dependencies (log: $log)"
        if ! { "$VENV/bin/python" -m pip install --upgrade pip \
               && "$VENV/bin/python" -m pip install -e "$ROOT[test]"; } >"$log" 2>&1; then
            cat "$log" >&2
            echo "==> the install failed; the output above is also in $log" >&2
            exit 1
        fi
        touch "$stamp"
    fi
    export PATH="$VENV/bin:$PATH"
}

pg_ready() {
    "$VENV/bin/python" - "$1" <<'PY'
import sys, psycopg
try:
    psycopg.connect(sys.argv[1], connect_timeout=3).close()
except psycopg.OperationalError:
    sys.exit(1)
PY
}

# Make sure the machine's PostgreSQL answers; when it cannot be started the
# test fixtures and the demo fall back to a private cluster (dev-server).
ensure_postgres() {
    local url="${ACODE_TEST_PG_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
    if pg_ready "$url"; then
        return 0
    fi
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
        echo "==> starting the machine's PostgreSQL"
        for version in $(ls /etc/postgresql); do
            pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
        done
        for _ in $(seq 1 30); do
            pg_ready "$url" && return 0
            sleep 1
        done
    fi
    echo "==> no PostgreSQL at $url; a private cluster will be used" >&2
}

# The pooled-path test and benchmarks/fleet.py run a private PgBouncer: install
# Debian's when it is missing and we may (root with apt-get), quietly; without
# it that test fails with a note saying what it needs.
ensure_pgbouncer() {
    if command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; then
        return 0
    fi
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing pgbouncer (apt-get)"
        local log="${VENV}/pgbouncer-install.log"
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >"$log" 2>&1; then
            echo "==> could not install pgbouncer (see $log): the pooled-path test will fail" >&2
        fi
    else
        echo "==> no pgbouncer (apt-get install pgbouncer): the pooled-path test will fail" >&2
    fi
}

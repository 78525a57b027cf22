# shellcheck shell=bash
# ensure_postgres: a PostgreSQL for the tests, exported as SKUFLOW_TEST_POSTGRES_URL. Uses the one at
# SKUFLOW_TEST_POSTGRES_URL, or 127.0.0.1:5432 if it answers; else starts an installed cluster; else installs
# PostgreSQL from Debian's packages (root on Debian only). Needs a role that may create databases.

pg_answers() { .venv/bin/python - "$SKUFLOW_TEST_POSTGRES_URL" <<'PY' 2>/dev/null
import asyncio, sys
import asyncpg
from sqlalchemy.engine import make_url
url = make_url(sys.argv[1]).set(drivername="postgresql").render_as_string(hide_password=False)
async def main():
    connection = await asyncpg.connect(url, timeout=3)
    await connection.close()
asyncio.run(main())
PY
}

ensure_postgres() {
    export SKUFLOW_TEST_POSTGRES_URL="${SKUFLOW_TEST_POSTGRES_URL:-postgresql+asyncpg://postgres@127.0.0.1:5432/postgres}"
    pg_answers && { say "PostgreSQL ready"; return 0; }
    case "$SKUFLOW_TEST_POSTGRES_URL" in
        *@127.0.0.1:*|*@localhost:*|*@127.0.0.1/*|*@localhost/*) ;;
        *) die "PostgreSQL does not answer at SKUFLOW_TEST_POSTGRES_URL";;
    esac
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        as_root_on_debian || die "no PostgreSQL on 127.0.0.1:5432: install postgresql (Debian: apt-get install postgresql) or set SKUFLOW_TEST_POSTGRES_URL"
        say "installing PostgreSQL from Debian's packages"
        apt_install postgresql
        # The cluster we just made: let the tests connect over loopback TCP as postgres without a password.
        local hba
        hba=$(ls /etc/postgresql/*/main/pg_hba.conf | sort -V | tail -n 1)
        sed -i '1i host all all 127.0.0.1/32 trust # skuflow-tests\nhost all all ::1/128 trust # skuflow-tests' "$hba"
    fi
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    [ -n "$version" ] || die "PostgreSQL is installed but has no cluster under /etc/postgresql"
    say "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || pg_ctlcluster --skip-systemctl-redirect "$version" main reload >&2 || true
    wait_for 60 "PostgreSQL" pg_answers
    say "PostgreSQL ready"
}

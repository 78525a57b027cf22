# shellcheck shell=bash
# ensure_venv [EXTRAS]: a Python >= 3.11 virtual environment in .venv with skuflow installed (editable), with the
# optional dependencies EXTRAS, comma-separated as pip takes them (e.g. `ensure_venv dev,bench`).
# Installs Debian's venv package first when this is Debian, we are root and `python -m venv` cannot work.

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }
wait_for() {  # wait_for SECONDS WHAT COMMAND...
    local seconds=$1 what=$2; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        [ $SECONDS -lt $deadline ] || die "$what did not come up within ${seconds}s"
        sleep 1
    done
}

as_root_on_debian() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }

APT_UPDATED=""
apt_install() {
    if [ -z "$APT_UPDATED" ]; then apt-get update -qq >&2; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"; return 0
        fi
    done
    return 1
}

ensure_venv() {
    local extras="${1:-}" python spec stamp
    if [ ! -x .venv/bin/python ]; then
        python=$(find_python) || die "skuflow needs Python >= 3.11 (set PYTHON=/path/to/python3.11)"
        if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
            as_root_on_debian || die "$python cannot create virtual environments: install python3-venv"
            say "installing python3-venv"
            apt_install "python$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv" \
                || apt_install python3-venv
        fi
        say "creating .venv with $python"
        rm -rf .venv
        "$python" -m venv .venv
    fi
    spec="."; [ -n "$extras" ] && spec=".[$extras]"
    # Reinstall only when the declared dependencies change.
    stamp=".venv/.installed-$(cat pyproject.toml | cksum | cut -d' ' -f1)-${extras:-base}"
    if [ ! -f "$stamp" ]; then
        say "installing skuflow${extras:+ with $extras} into .venv"
        .venv/bin/python -m pip install --quiet --upgrade pip >&2
        .venv/bin/python -m pip install --quiet -e "$spec" >&2
        rm -f .venv/.installed-* && touch "$stamp"
    fi
}

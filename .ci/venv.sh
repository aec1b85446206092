# Sourced by .ci/run and deploy/quickstart.sh: make .venv with the project installed.
# Usage: make_venv EXTRAS   (e.g. make_venv '[test]' or make_venv '')
make_venv() {
    local extras="$1"
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        # Debian ships venv support separately.
        local sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        echo "python3 cannot create virtual environments: installing python3-venv" >&2
        $sudo apt-get update -qq && $sudo apt-get install -y -qq python3-venv >&2
    fi
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}"
}

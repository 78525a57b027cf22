# shellcheck shell=bash
# ensure_asyncapi_specs: the official AsyncAPI JSON Schemas (npm's @asyncapi/specs, at the version pinned here) in
# .cache/npm (git-ignored), for the test that validates `skuflow asyncapi` (tests/cli/test_asyncapi.py). Installed
# only when missing or at another version. Without npm, or when the install fails, a warning: that test then
# skips, or fails in CI.

ASYNCAPI_SPECS_VERSION=6.11.1
NPM_PREFIX=.cache/npm

warn() { printf '\033[33mwarning:\033[0m %s\n' "$*" >&2; }

ensure_asyncapi_specs() {
    local manifest="$NPM_PREFIX/node_modules/@asyncapi/specs/package.json"
    if [ -f "$manifest" ] && grep -q "\"version\": \"$ASYNCAPI_SPECS_VERSION\"" "$manifest"; then
        return 0
    fi
    if ! command -v npm >/dev/null 2>&1; then
        warn "no npm: the AsyncAPI test cannot get @asyncapi/specs@$ASYNCAPI_SPECS_VERSION (install Node.js and npm)"
        return 0
    fi
    say "installing @asyncapi/specs@$ASYNCAPI_SPECS_VERSION into $NPM_PREFIX"
    npm install --prefix "$NPM_PREFIX" --no-save --no-audit --no-fund --loglevel=error \
        "@asyncapi/specs@$ASYNCAPI_SPECS_VERSION" >&2 \
        || warn "npm could not install @asyncapi/specs@$ASYNCAPI_SPECS_VERSION: the AsyncAPI test will skip (fail in CI)"
}

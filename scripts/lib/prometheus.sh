# shellcheck shell=bash
# ensure_promtool: Prometheus's promtool, with which the tests check deploy/prometheus/alerts.yml. Uses the one
# on PATH; else installs Debian's prometheus package (root on Debian only; ~6 s here), which carries it.

ensure_promtool() {
    command -v promtool >/dev/null 2>&1 && { say "promtool ready"; return 0; }
    as_root_on_debian || die "no promtool: install Prometheus's promtool (Debian: apt-get install prometheus)"
    say "installing promtool (Debian's prometheus package)"
    apt_install --no-install-recommends prometheus
    command -v promtool >/dev/null 2>&1 || die "the prometheus package was installed but promtool is not on PATH"
    say "promtool ready"
}

# promtool: checks and unit-tests the Prometheus alert rules in examples/alerts.
# Sourced by scripts/test.sh (set -e there): a failing check stops the run.
# Installs Debian's `prometheus` (without recommends) when promtool is missing;
# starts no server.
command -v promtool >/dev/null 2>&1 || apt_install prometheus
promtool check rules examples/alerts/dr.rules.yml >&2
promtool test rules examples/alerts/dr.rules.test.yml >&2

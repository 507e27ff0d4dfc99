#!/usr/bin/env bash
# The test command (README.md): installs the Debian packages the tests drive when they are
# missing, then runs every test. Tests that need a program fail, never skip, without it.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v swaks >/dev/null 2>&1 || need+=(swaks)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v mbsync >/dev/null 2>&1 || need+=(isync)
# The metrics tests (tests/metrics.rs) scrape the Prometheus endpoint with a real client.
command -v curl >/dev/null 2>&1 || need+=(curl)
# The filter tests (tests/filters.rs) start these daemons themselves: spamd (Debian splits it
# from the spamassassin rules package), clamd, and dnsmasq as the loopback DNS server.
[ -x /usr/sbin/spamd ] || need+=(spamassassin spamd)
[ -x /usr/sbin/clamd ] || need+=(clamav-daemon)
[ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "tests/run.sh: installing ${need[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cargo test --locked "$@"

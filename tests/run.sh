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
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ ${#need[@]} -gt 0 ]; then
    echo "tests/run.sh: installing ${need[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# tests/imaptest.rs runs Dovecot's imaptest, built from ../shared/tools/imaptest. It links
# libdovecot (/usr/lib/dovecot), which only dovecot-core ships; a policy-rc.d that refuses
# every start keeps its IMAP daemon from starting, for this install only.
if ! dpkg -s dovecot-core >/dev/null 2>&1; then
    echo "tests/run.sh: installing dovecot-core (daemon kept stopped)" >&2
    policy=/usr/sbin/policy-rc.d
    saved=""
    if [ -e "$policy" ]; then
        saved=$(mktemp)
        $sudo cp -p "$policy" "$saved"
    fi
    restore_policy() {
        if [ -n "$saved" ]; then $sudo mv "$saved" "$policy"; else $sudo rm -f "$policy"; fi
    }
    trap restore_policy EXIT
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends dovecot-core >/dev/null
    restore_policy
    trap - EXIT
fi
# build.sh installs its own build dependencies (dovecot-dev, autotools, ...) when missing.
if [ ! -x /usr/local/bin/imaptest ]; then
    echo "tests/run.sh: building imaptest" >&2
    $sudo ../shared/tools/imaptest/build.sh /usr/local
fi

cargo test --locked "$@"

#!/usr/bin/env bash
# Install the optional C peers of the benchmarks (shrinker-bench), today
# liburcu (Debian's liburcu-dev) for the `rcu-read` scenario's liburcu-memb row.
#
# Idempotent: installs only what is missing and says what it did. Never fails
# the caller: without root, apt-get or the package, it says so and exits 0,
# and the bench builds without the peer (the scenario prints one line saying
# it skipped it).
set -u

say() { printf 'install-peers: %s\n' "$*"; }

have_liburcu() {
  if command -v pkg-config >/dev/null 2>&1 && pkg-config --exists liburcu-memb 2>/dev/null; then
    return 0
  fi
  # Debian puts the headers under the multiarch include directory.
  compgen -G '/usr/include/urcu/urcu-memb.h' >/dev/null ||
    compgen -G '/usr/include/*/urcu/urcu-memb.h' >/dev/null ||
    compgen -G '/usr/local/include/urcu/urcu-memb.h' >/dev/null
}

if have_liburcu; then
  say "liburcu (liburcu-memb) already installed; nothing to do"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  say "liburcu is not installed and this is not root: skipped (run as root, or install liburcu-dev yourself)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  say "liburcu is not installed and there is no apt-get: skipped (install liburcu from your distribution)"
  exit 0
fi

say "installing liburcu-dev (apt-get update && apt-get install -y liburcu-dev)"
if DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq liburcu-dev; then
  if have_liburcu; then
    say "installed liburcu-dev"
  else
    say "apt-get installed liburcu-dev but urcu/urcu-memb.h is still missing: the bench builds without the liburcu-memb peer"
  fi
else
  say "apt-get could not install liburcu-dev: skipped (the bench builds without the liburcu-memb peer)"
fi
exit 0

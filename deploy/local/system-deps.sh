#!/usr/bin/env bash
# Debian packages the local stack and its tests use: Java 17 and Maven (the Kafka broker),
# kcat (an independent Kafka client for tests), prometheus (dashboard and rule tests).
# Installs only what is missing.
set -euo pipefail

missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v kcat >/dev/null || missing+=(kcat)
# A real Prometheus server and promtool: the tests check the rules and every dashboard query.
command -v prometheus >/dev/null || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else
    echo "missing Debian packages: ${missing[*]}; install them with: apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
echo "installing Debian packages: ${missing[*]}"
# Packages must not start services (Debian's prometheus would listen on every interface):
# a policy-rc.d that says no, for the length of the install, unless the system has one.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | ${SUDO:-} tee /usr/sbin/policy-rc.d >/dev/null
  ${SUDO:-} chmod +x /usr/sbin/policy-rc.d
  trap '${SUDO:-} rm -f /usr/sbin/policy-rc.d' EXIT
fi
${SUDO:-} apt-get update -qq
DEBIAN_FRONTEND=noninteractive ${SUDO:-} apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

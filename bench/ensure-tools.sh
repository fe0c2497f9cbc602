#!/usr/bin/env bash
# The benchmark's OS tools: nginx (the mock upstream) and wrk (the load
# generator). Uses them if present; on Debian/Ubuntu as root, installs what is
# missing; otherwise prints the exact steps and fails. The nginx system service
# is not used: the benchmark runs its own nginx with its own config.
set -euo pipefail

missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
[ ${#missing[@]} = 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "bench: installing ${missing[*]} ..."
  apt-get update -qq
  # Whether the packaged nginx service starts or not does not matter: the
  # benchmark runs its own nginx, with its own config, on a free port.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  exit 0
fi

cat >&2 <<STEPS
bench: missing ${missing[*]}. Install them, e.g. on Debian/Ubuntu:
  sudo apt-get update && sudo apt-get install -y nginx wrk
then run \`make bench\` again.
STEPS
exit 1

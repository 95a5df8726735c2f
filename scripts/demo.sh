#!/usr/bin/env bash
# The fleet demo: validate the example fleet repo, print its inventory, then start the
# simulated lab (a BMC simulator for every Machine) and observe live state over IPMI.
set -euo pipefail
cd "$(dirname "$0")/.."
fleet=.venv/bin/fleet
# Tables as wide as a real terminal when the output goes to a pipe or a log.
[[ -t 1 ]] || export COLUMNS="${COLUMNS:-160}"
step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "$2"; }

step "Validate every spec of the example fleet repo" "fleet validate fleet-repo-example"
$fleet validate fleet-repo-example

step "The inventory it declares" "fleet get fleet-repo-example"
$fleet get fleet-repo-example

step "Select by label, as with kubectl" "fleet get fleet-repo-example --kind Machine -l team=platform-k8s --show-labels"
$fleet get fleet-repo-example --kind Machine -l team=platform-k8s --show-labels

step "A bad edit is caught with file:line:col, address and a fix" "fleet validate <copy with a typo and a literal password>"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cp -r fleet-repo-example "$scratch/repo"
sed -i '0,/power: on/s//powr: on/' "$scratch/repo/machines/nyc1/r01.yaml"
printf '      ipmi_password: hunter2\n' >> "$scratch/repo/machines/nyc1/r01.yaml"
$fleet validate "$scratch/repo" --no-cache || echo "(exit code $? : the repo is invalid, nothing else happened)"

step "Start the simulated lab: one BMC simulator per Machine, real IPMI on loopback" "fleet lab up fleet-repo-example"
export FLEET_LAB_DIR="$scratch/lab"
trap '$fleet lab down >/dev/null 2>&1 || true; rm -rf "$scratch"' EXIT
$fleet lab up fleet-repo-example

step "Observe live state (the lab starts cold: every machine off)" "fleet observe fleet-repo-example --lab -l team=platform-k8s"
$fleet observe fleet-repo-example --lab -l team=platform-k8s

# Credentials and endpoints of one simulated BMC, from the lab's override file.
read -r host user password < <(.venv/bin/python - "$(
  $fleet lab status --format json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["overrides"])')" <<'PY'
import json, sys
overrides = json.load(open(sys.argv[1]))
endpoint = overrides["endpoints"]["10.128.1.12:623"]
user, password = open(overrides["credentials"]["bmc-nyc1"]["file"]).read().strip().split(":", 1)
print(endpoint.rsplit(":", 1)[0], user, password)
PY
)
step "Power nyc1-r01-02 on behind fleet's back, with Debian's ipmitool" "ipmitool -I lanplus -H $host -U $user -P *** chassis power on"
ipmitool -I lanplus -H "$host" -U "$user" -P "$password" chassis power on
sleep 1

step "fleet sees it" "fleet observe fleet-repo-example --lab --target machine/nyc1-r01-02"
$fleet observe fleet-repo-example --lab --target machine/nyc1-r01-02

step "Stop the lab; nothing is left behind" "fleet lab down"
$fleet lab down

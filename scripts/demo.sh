#!/usr/bin/env bash
# The fleet demo: validate the example fleet repo, then print its inventory.
set -euo pipefail
cd "$(dirname "$0")/.."
fleet=.venv/bin/fleet
step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "$2"; }

step "Validate every spec of the example fleet repo" "fleet validate fleet-repo-example"
$fleet validate fleet-repo-example

step "The inventory it declares" "fleet get fleet-repo-example"
$fleet get fleet-repo-example

step "Only the hypervisors" "fleet get fleet-repo-example --kind Machine -l role=hypervisor"
$fleet get fleet-repo-example --kind Machine -l role=hypervisor

step "A bad edit is caught with file:line:col, address and a fix" "fleet validate <copy with a typo and a literal password>"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cp -r fleet-repo-example "$scratch/repo"
sed -i '0,/power: on/s//powr: on/' "$scratch/repo/machines/nyc1/r01.yaml"
printf '      ipmi_password: hunter2\n' >> "$scratch/repo/machines/nyc1/r01.yaml"
$fleet validate "$scratch/repo" --no-cache || echo "(exit code $? : the repo is invalid, nothing else happened)"

#!/usr/bin/env bash
# The fleet demo: validate the example fleet repo, then print its inventory.
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

#!/usr/bin/env bash
# The fleet demo: validate the example fleet repo and print its inventory, then start the
# simulated lab (a BMC simulator for every Machine, a libvirtd for every hypervisor, a Kubernetes
# API test server for every Cluster, an sshd for every configured host) and run fleet's main job
# against it: plan, apply, plan again, out-of-band changes with ipmitool, virsh, kubectl and ssh,
# drift, apply, the audit trail.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/demo-output.sh
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

step "Start the simulated lab: BMCs (IPMI), hypervisors (libvirtd), API servers, SSH hosts (sshd), all on loopback" "fleet lab up fleet-repo-example"
export FLEET_LAB_DIR="$scratch/lab"
export FLEET_STATE="$scratch/state.db"   # the embedded SQLite state store
trap '$fleet lab down >/dev/null 2>&1 || true; rm -rf "$scratch"' EXIT
$fleet lab up fleet-repo-example

step "What the lab looks like: it starts cold, every machine off" "fleet observe fleet-repo-example --lab -l team=platform-k8s"
$fleet observe fleet-repo-example --lab -l team=platform-k8s

step "Plan: the specs against live state, the hosts' configuration in Ansible check mode (nothing changes yet)" "fleet plan fleet-repo-example --lab"
$fleet plan fleet-repo-example --lab > "$scratch/plan.txt"
# The whole plan is long (every host's configuration diffs): its summary, then one host in full.
grep -E "^(fleet plan|Plan:)" "$scratch/plan.txt"
plan_host_entry "$scratch/plan.txt" nyc1-r01-02

step "Apply it: in waves, under budgets, every action recorded" "fleet apply fleet-repo-example --lab --yes"
$fleet apply fleet-repo-example --lab --yes > "$scratch/apply.txt"
# It shows the plan again first; here only the outcomes (the first of them, shortened) and the result.
apply_outcomes "$scratch/apply.txt"

step "Plan again: nothing left to do (exit 0: complete, no changes; 2 changes; 3 some resources unknown)" "fleet plan fleet-repo-example --lab --detailed-exitcode"
code=0
$fleet plan fleet-repo-example --lab --detailed-exitcode > "$scratch/again.txt" || code=$?
tail -1 "$scratch/again.txt"
echo "(exit code $code)"
[[ $code != 1 ]]  # 1 is an error: the demo stops there

hypervisor="$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["hypervisors"]["nyc1-r01-01"])' \
  "$FLEET_LAB_DIR/overrides.json")"
step "The VMs fleet defined on hypervisor nyc1-r01-01, seen with Debian's virsh ('test' is not fleet's)" "virsh -c <nyc1-r01-01> list --all"
virsh -c "$hypervisor" list --all

step "Shrink nyc1-bastion-1 behind fleet's back" "virsh -c <nyc1-r01-01> setvcpus nyc1-bastion-1 1 --live"
virsh -c "$hypervisor" setvcpus nyc1-bastion-1 1 --live

kubeconfig="$FLEET_LAB_DIR/clusters/k8s-nyc1/kubeconfig"
step "What fleet made of spark-pools/etl.yaml in cluster k8s-nyc1, seen with kubectl" "kubectl get resourcequota,limitrange,configmap -n spark-etl"
kubectl --kubeconfig "$kubeconfig" get resourcequota,limitrange,configmap -n spark-etl

step "Raise the etl pool's pod quota behind fleet's back" "kubectl patch resourcequota spark-quota -n spark-etl -p '{\"spec\":{\"hard\":{\"pods\":\"999\"}}}'"
kubectl --kubeconfig "$kubeconfig" patch resourcequota spark-quota -n spark-etl --type merge -p '{"spec":{"hard":{"pods":"999"}}}'

# Credentials and endpoint of one simulated BMC, from the lab's override file.
read -r host user password < <(.venv/bin/python - "$(
  $fleet lab status --format json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["overrides"])')" <<'PY'
import json, sys
overrides = json.load(open(sys.argv[1]))
endpoint = overrides["endpoints"]["10.128.1.12:623"]
user, password = open(overrides["credentials"]["bmc-nyc1"]["file"]).read().strip().split(":", 1)
print(endpoint.rsplit(":", 1)[0], user, password)
PY
)
step "Power nyc1-r01-02 off behind fleet's back, with Debian's ipmitool" "ipmitool -I lanplus -H $host -U $user -P *** chassis power off"
ipmitool -I lanplus -H "$host" -U "$user" -P "$password" chassis power off
sleep 1

# How to reach the lab's SSH host for nyc1-r02-02 (key, known_hosts, port), and the directory
# it keeps its files in, from the lab's override file.
eval "$(.venv/bin/python - "$FLEET_LAB_DIR/overrides.json" <<'PY'
import json, shlex, sys
v = json.load(open(sys.argv[1]))["ansibleHosts"]["nyc1-r02-02"]
args = ["-i", v["ansible_ssh_private_key_file"], *shlex.split(v["ansible_ssh_common_args"]),
        "-o", "BatchMode=yes", "-p", v["ansible_port"], f"{v['ansible_user']}@{v['ansible_host']}"]
print(f"ssh_args=({shlex.join(args)}); ssh_root={shlex.quote(v['baseline_root'])}")
PY
)"
step "Edit nyc1-r02-02's sysctl settings behind fleet's back, over SSH" "ssh root@<nyc1-r02-02> 'echo vm.swappiness = 60 >> /etc/sysctl.d/90-fleet-baseline.conf'"
ssh "${ssh_args[@]}" "echo 'vm.swappiness = 60' >> $ssh_root/etc/sysctl.d/90-fleet-baseline.conf"

step "fleet drift finds the four out-of-band changes (and each host's check-mode coverage)" "fleet drift fleet-repo-example --lab"
$fleet drift fleet-repo-example --lab > "$scratch/drift.txt"
drift_summary "$scratch/drift.txt"

step "Apply fixes it" "fleet apply fleet-repo-example --lab --yes"
$fleet apply fleet-repo-example --lab --yes | apply_result

step "The audit trail" "fleet history --limit 3"
$fleet history --limit 3

step "Stop the lab; nothing is left behind" "fleet lab down"
$fleet lab down

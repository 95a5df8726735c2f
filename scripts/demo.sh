#!/usr/bin/env bash
# The fleet demo: validate the example fleet repo and print its inventory, then start the
# simulated lab (a BMC simulator for every Machine, a libvirtd for every hypervisor, a Kubernetes
# API test server for every Cluster, an sshd for every configured host) and run fleet's main job
# against it: plan, apply, plan again, out-of-band changes with ipmitool, virsh, kubectl and ssh,
# drift, apply, the audit trail; then the controller: fleet serve following a branch, a commit and a
# signed webhook, an out-of-band change corrected on the next drift pass, its status over the API.
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

# The controller follows a branch of a Git copy of the example, as a forge holds it. That copy has
# no change windows, so that what the demo shows does not depend on the time of day it runs at.
git_q() { git -c user.name=demo -c user.email=demo@example.invalid -C "$scratch/fleet" "$@" >/dev/null; }
cp -r fleet-repo-example "$scratch/fleet"
.venv/bin/python - "$scratch/fleet/fleet.yaml" <<'PY'
import sys
from ruamel.yaml import YAML
yaml = YAML()
fleet = yaml.load(open(sys.argv[1]))
fleet["spec"]["policies"]["changeWindows"] = []
yaml.dump(fleet, open(sys.argv[1], "w"))
PY
git_q init -q -b main && git_q add -A && git_q commit -q -m "the fleet"
git clone -q --bare "$scratch/fleet" "$scratch/fleet.git" && git_q remote add origin "$scratch/fleet.git"
# The secrets fleet.yaml names (spec.controller), as the deployment would inject them.
export FLEET_API_TOKEN_OPS="$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(24))')"
export FLEET_API_TOKEN_DASHBOARDS="$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(24))')"
export FLEET_WEBHOOK_SECRET_GITHUB="$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(24))')"
api="http://127.0.0.1:18642"
step "The controller: fleet serve follows the branch, applies what each commit changes, corrects drift" \
  "fleet serve --repo <fleet.git> --branch main --lab --repository-name acme/fleet --drift-interval 15 &"
# Its passes leave the hosts' configuration out (FLEET_CONFIG=false): Ansible's check mode on every
# host every 15 seconds would only make the demo wait.
FLEET_CONFIG=false $fleet serve --repo "$scratch/fleet.git" --branch main --lab --repository-name acme/fleet \
  --listen 127.0.0.1:18642 --poll-interval 3600 --drift-interval 15 2> "$scratch/serve.log" &
serve_pid=$!
trap 'kill $serve_pid 2>/dev/null || true; $fleet lab down >/dev/null 2>&1 || true; rm -rf "$scratch"' EXIT
# Until its first pass over the whole fleet is done: a revision in force, nothing queued or running.
status() { curl -s -H "Authorization: Bearer $FLEET_API_TOKEN_DASHBOARDS" "$api/api/v1/status"; }
settled() {  # [REVISION]
  for _ in $(seq 600); do
    if status | .venv/bin/python -c '
import json, sys
s = json.load(sys.stdin); want = sys.argv[1] if len(sys.argv) > 1 else None
applied = (s.get("lastAppliedRevision") or {}).get("revision")
ok = applied and (want is None or applied == want) and not s["queue"]["running"] and not s["queue"]["depth"]
sys.exit(0 if ok else 1)' "$@" 2>/dev/null; then return 0; fi
    sleep 0.5
  done
  echo "the controller did not settle; its log:"; tail -20 "$scratch/serve.log"; return 1
}
# The revisions, resources by kind and state, and the queue, of the status.
summary() {
  status | .venv/bin/python -c '
import json, sys
s = json.load(sys.stdin)
print(json.dumps({
    "lastAppliedRevision": (s["lastAppliedRevision"] or {}).get("revision"),
    "lastAttemptedRevision": (s["lastAttemptedRevision"] or {}).get("revision"),
    "resources": s["resources"],
    "queue": s["queue"]["depth"],
}, indent=2))'
}
settled
summary

step "A commit turns nyc1-r02-05 off; a signed push webhook brings it in at once" \
  "git commit && git push; curl -X POST $api/webhooks/github -H 'X-Hub-Signature-256: sha256=...'"
.venv/bin/python - "$scratch/fleet/machines/nyc1/r02.yaml" <<'PY'
import sys
from ruamel.yaml import YAML
yaml = YAML()
documents = list(yaml.load_all(open(sys.argv[1])))
for document in documents:
    if document["metadata"]["name"] == "nyc1-r02-05":
        document["spec"]["power"] = "off"
yaml.dump_all(documents, open(sys.argv[1], "w"))
PY
git_q commit -q -am "nyc1-r02-05: off for a disk swap" && git_q push -q origin main
commit="$(git -C "$scratch/fleet" rev-parse HEAD)"
body="{\"ref\": \"refs/heads/main\", \"after\": \"$commit\", \"repository\": {\"full_name\": \"acme/fleet\"}}"
signature="sha256=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$FLEET_WEBHOOK_SECRET_GITHUB" -r | cut -d' ' -f1)"
curl -s -X POST "$api/webhooks/github" -H "X-GitHub-Event: push" -H "X-GitHub-Delivery: demo-1" \
  -H "Content-Type: application/json" -H "X-Hub-Signature-256: $signature" --data-binary "$body"; echo
echo "and a forged one:"
curl -s -X POST "$api/webhooks/github" -H "X-GitHub-Event: push" -H "X-GitHub-Delivery: demo-2" \
  -H "Content-Type: application/json" -H "X-Hub-Signature-256: sha256=00ff" --data-binary "$body"; echo
settled "$commit"
$fleet observe fleet-repo-example --lab --target machine/nyc1-r02-05

step "Power nyc1-r01-02 off behind fleet's back again: the next drift pass turns it back on" \
  "ipmitool -I lanplus -H $host -U $user -P *** chassis power off"
ipmitool -I lanplus -H "$host" -U "$user" -P "$password" chassis power off
for _ in $(seq 120); do
  power="$(ipmitool -I lanplus -H "$host" -U "$user" -P "$password" chassis power status)"
  [[ "$power" == *on* ]] && break
  sleep 0.5
done
echo "$power"
settled "$commit"

step "What the controller did: its status, as scripts and dashboards read it, and the runs that touched nyc1-r01-02" \
  "curl -H 'Authorization: Bearer ***' $api/api/v1/status; fleet history --target machine/nyc1-r01-02"
summary
$fleet history --target machine/nyc1-r01-02 --limit 3

step "SIGTERM: it stops taking work, lets running actions finish, releases its leases, exits 0" "kill -TERM <fleet serve>"
kill -TERM "$serve_pid"
wait "$serve_pid" && echo "fleet serve exited 0"

step "Stop the lab; nothing is left behind" "fleet lab down"
$fleet lab down

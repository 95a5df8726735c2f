#!/usr/bin/env bash
# The fleet demo: the whole story in one run against a simulated lab, in about 4 minutes on 2
# cores. Validate the example fleet repo, print its inventory, catch a bad edit. Start the lab (a
# BMC simulator for every Machine, a libvirtd for every hypervisor, a Kubernetes API test server for
# every Cluster, an sshd for every configured host) for a Git copy of the example, pushed to a local
# bare repository as a forge holds it; the copy configures the hosts of one rack only (Ansible's
# check mode over all 43 hosts, at every plan, would take most of the time). Then fleet's main job:
# plan, apply, plan again; out-of-band changes with virsh, kubectl, ipmitool and ssh; drift; a pull
# request's plan comment rendered to a file with --dry-run; apply; an audited emergency reconcile.
# Then the controller: fleet serve following the bare repository, the web UI's address and a
# sign-in, a commit and a signed webhook, out-of-band power changes of which the drift pass corrects
# the enforced one and reports the observed one, a drift pull request pushed to the bare
# repository, SIGTERM. FLEET_DEMO_PAUSE=1 keeps the lab and the web UI up at the end until Enter.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/demo-output.sh
fleet="$PWD/.venv/bin/fleet"
py="$PWD/.venv/bin/python"
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
serve_pid=""
cleanup() {
  if [[ -n "$serve_pid" ]]; then kill "$serve_pid" 2>/dev/null || true; fi
  if [[ -n "${FLEET_LAB_DIR:-}" ]]; then $fleet lab down >/dev/null 2>&1 || true; fi
  rm -rf "$scratch"
}
trap cleanup EXIT
cp -r fleet-repo-example "$scratch/typo"
sed -i '0,/power: on/s//powr: on/' "$scratch/typo/machines/nyc1/r01.yaml"
printf '      ipmi_password: hunter2\n' >> "$scratch/typo/machines/nyc1/r01.yaml"
$fleet validate "$scratch/typo" --no-cache || echo "(exit code $? : the repo is invalid, nothing else happened)"

step "The demo's fleet repo: a Git copy of the example, pushed to a local bare repository as a forge holds it" \
  "cp -r fleet-repo-example acme-fleet; git init; git commit; git clone --bare acme-fleet acme-fleet.git"
# Everything from here on runs in the scratch directory, on that copy. The copy has no change
# windows, so that what the demo shows does not depend on the time of day it runs at, and it
# configures (spec.config) the hosts of rack nyc1/r02 only: every plan checks each configured host
# in Ansible's check mode, about a second of CPU a host, and the 43 hosts of the example would
# take most of the demo's time on 2 cores. Every host works the same way.
cp -r fleet-repo-example "$scratch/acme-fleet"
cd "$scratch"
"$py" - acme-fleet nyc1 r02 <<'PY'
import io
import sys
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedSeq

root, site, rack = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
yaml = YAML()
yaml.preserve_quotes = True
yaml.width = 4096
yaml.indent(mapping=2, sequence=4, offset=2)
yaml.explicit_start = True
kept: list[str] = []
dropped: list[str] = []


def rewrite(path: Path, edit) -> None:
    """Edit each document of a file; keep its opening comments and its layout."""
    text = path.read_text()
    header = text[: text.index("---\n")]
    documents = list(yaml.load_all(text))
    if any([edit(d) for d in documents if d]):
        out = io.StringIO()
        yaml.dump_all(documents, out)
        path.write_text(header + out.getvalue())


def no_change_windows(fleet) -> bool:
    policies = fleet["spec"]["policies"]
    policies["changeWindows"] = CommentedSeq()
    policies["changeWindows"].fa.set_flow_style()
    policies.ca.items.pop("changeWindows", None)
    return True


def configure_one_rack(document) -> bool:
    spec = document["spec"]
    if "config" not in spec:
        return False
    if (spec.get("site"), spec.get("rack")) == (site, rack):
        kept.append(document["metadata"]["name"])
        return False
    del spec["config"]
    dropped.append(document["metadata"]["name"])
    return True


rewrite(root / "fleet.yaml", no_change_windows)
for path in sorted([*root.glob("machines/*/*.yaml"), *root.glob("virtual-machines/*.yaml")]):
    rewrite(path, configure_one_rack)
print(f"no change windows; configured: {', '.join(sorted(kept))} ({len(kept)} hosts; "
      f"the configuration of {len(dropped)} others left out)")
PY
git_q() { git -c user.name=demo -c user.email=demo@example.invalid -C acme-fleet "$@" >/dev/null; }
git_q init -q -b main && git_q add -A && git_q commit -q -m "the fleet"
git clone -q --bare acme-fleet acme-fleet.git && git_q remote add origin "$scratch/acme-fleet.git"
git -C acme-fleet.git log --oneline main

step "Start the simulated lab: BMCs (IPMI), hypervisors (libvirtd), API servers, SSH hosts (sshd), all on loopback" \
  "fleet lab up acme-fleet"
# The lab's default loopback subnet, 127.60.x.y: the test suites' labs use others.
export FLEET_LAB_DIR="$scratch/lab"
export FLEET_STATE="$scratch/state.db"   # the embedded SQLite state store
$fleet lab up acme-fleet

step "What the lab looks like: it starts cold, every machine off" "fleet observe acme-fleet --lab -l team=platform-k8s"
$fleet observe acme-fleet --lab -l team=platform-k8s

step "Plan: the specs against live state, rack nyc1/r02's configuration in Ansible check mode (nothing changes yet)" \
  "fleet plan acme-fleet --lab"
$fleet plan acme-fleet --lab > plan.txt
# The whole plan is long (every host's configuration diffs): its summary, then one host in full.
grep -E "^(fleet plan|Plan:)" plan.txt
echo "(observe-only: power is enforced in nyc1 and only observed in ldn1, by fleet.yaml's policies.enforcement;"
echo " ldn1's machines stay as the lab started them, off, and are reported)"
plan_host_entry plan.txt nyc1-r02-02

step "Apply it: in waves, under budgets, every action recorded" "fleet apply acme-fleet --lab --yes"
$fleet apply acme-fleet --lab --yes > apply.txt
# It shows the plan again first; here only the outcomes (the first of them, shortened) and the result.
apply_outcomes apply.txt

step "Plan again: nothing left to do (exit 0: complete, no changes; 2 changes; 3 some resources unknown)" \
  "fleet plan acme-fleet --lab --detailed-exitcode"
code=0
$fleet plan acme-fleet --lab --detailed-exitcode > again.txt || code=$?
tail -1 again.txt
echo "(exit code $code)"
[[ $code != 1 ]]  # 1 is an error: the demo stops there

hypervisor="$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["hypervisors"]["nyc1-r01-01"])' \
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

# The simulated BMCs: where each listens (by its address in the specs), and the accounts of nyc1
# (a file, as the lab's credential overrides say) and of ldn1's rack r03 (a Secret in k8s-ldn1).
bmc() {  # SPEC_ADDRESS
  "$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["endpoints"][sys.argv[2] + ":623"].rsplit(":", 1)[0])' \
    "$FLEET_LAB_DIR/overrides.json" "$1"
}
IFS=: read -r nyc1_user nyc1_password < "$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["credentials"]["bmc-nyc1"]["file"])' \
  "$FLEET_LAB_DIR/overrides.json")"
ipmi_nyc1() { ipmitool -I lanplus -H "$(bmc "$1")" -U "$nyc1_user" -P "$nyc1_password" "${@:2}"; }
power_of() {  # IPMI_FUNCTION SPEC_ADDRESS: on or off
  local said; said="$("$@" chassis power status)"; [[ "$said" == *on ]] && echo on || echo off
}
wait_for_power() {  # on|off IPMI_FUNCTION SPEC_ADDRESS [SECONDS]
  for _ in $(seq $((${4:-10} * 2))); do [[ "$(power_of "$2" "$3")" == "$1" ]] && return 0; sleep 0.5; done
  echo "machine at $3 is not $1"; return 1
}

step "Power nyc1-r01-02 off behind fleet's back, with Debian's ipmitool" "ipmitool -I lanplus -H $(bmc 10.128.1.12) -U $nyc1_user -P *** chassis power off"
ipmi_nyc1 10.128.1.12 chassis power off
wait_for_power off ipmi_nyc1 10.128.1.12

# How to reach the lab's SSH host for nyc1-r02-02 (key, known_hosts, port), and the directory
# it keeps its files in, from the lab's override file.
eval "$("$py" - "$FLEET_LAB_DIR/overrides.json" <<'PY'
import json, shlex, sys
v = json.load(open(sys.argv[1]))["ansibleHosts"]["nyc1-r02-02"]
args = ["-i", v["ansible_ssh_private_key_file"], *shlex.split(v["ansible_ssh_common_args"]),
        "-o", "BatchMode=yes", "-p", v["ansible_port"], f"{v['ansible_user']}@{v['ansible_host']}"]
print(f"ssh_args=({shlex.join(args)}); ssh_root={shlex.quote(v['baseline_root'])}")
PY
)"
step "Edit nyc1-r02-02's sysctl settings behind fleet's back, over SSH" "ssh root@<nyc1-r02-02> 'echo vm.swappiness = 60 >> /etc/sysctl.d/90-fleet-baseline.conf'"
ssh "${ssh_args[@]}" "echo 'vm.swappiness = 60' >> $ssh_root/etc/sysctl.d/90-fleet-baseline.conf"

step "fleet drift finds the four out-of-band changes (and ldn1's observe-only power, and the hosts' check-mode coverage)" \
  "fleet drift acme-fleet --lab"
$fleet drift acme-fleet --lab > drift.txt
drift_summary drift.txt

step "A pull request changes the etl pool and nyc1-bastion-1: its comment (the plan, drift on what it changes), rendered to a file" \
  "git checkout -b more-etl-pods; <edit spark-pools/etl.yaml, virtual-machines/nyc1-services.yaml>; git commit -am ..."
git_q checkout -q -b more-etl-pods
sed -i 's/^    pods: 1000$/    pods: 1500/' acme-fleet/spark-pools/etl.yaml
sed -i '/name: nyc1-bastion-1/,/vcpus:/s/vcpus: 2/vcpus: 4/' acme-fleet/virtual-machines/nyc1-services.yaml
git_q commit -q -am "etl: room for 1500 pods; nyc1-bastion-1: 4 vCPUs"
base="$(git -C acme-fleet rev-parse main)" head="$(git -C acme-fleet rev-parse HEAD)"
git_q checkout -q main
echo "\$ fleet pr comment --vcs github --project acme/fleet --pr 7 --base ${base:0:12} --head ${head:0:12} --repo acme-fleet --lab --dry-run > pr-comment.md"
$fleet pr comment --vcs github --project acme/fleet --pr 7 --base "$base" --head "$head" --repo acme-fleet \
  --lab --dry-run > pr-comment.md
echo "(pr-comment.md: $(wc -c < pr-comment.md) characters, what GitHub would show; without --dry-run, one sticky comment and the status fleet/plan)"
first_lines 30 < pr-comment.md

step "Apply fixes it" "fleet apply acme-fleet --lab --yes"
$fleet apply acme-fleet --lab --yes | apply_result

step "The audit trail" "fleet history --limit 3"
$fleet history --limit 3

step "An emergency: nyc1-r04-01 is found off after a BMC firmware update; reconcile it right now, audited" \
  "fleet reconcile acme-fleet --now --lab -t machine/nyc1-r04-01 --reason '...' --incident INC-4711 --yes"
ipmi_nyc1 10.128.4.11 chassis power off >/dev/null
wait_for_power off ipmi_nyc1 10.128.4.11
$fleet reconcile acme-fleet --now --lab -t machine/nyc1-r04-01 --reason "found off after a BMC firmware update" \
  --incident INC-4711 --yes | apply_result
$fleet history --limit 1 -o json | "$py" -c '
import json, sys
run = json.load(sys.stdin)[0]
print("audit record:", json.dumps({k: run[k] for k in ("id", "kind", "operator", "reason", "incident", "emergency", "status")}))'

# The secrets fleet.yaml names (spec.controller), as the deployment would inject them: yours if set.
token() { "$py" -c 'import secrets; print(secrets.token_urlsafe(24))'; }
export FLEET_API_TOKEN_OPS="${FLEET_API_TOKEN_OPS:-$(token)}"
export FLEET_API_TOKEN_DASHBOARDS="${FLEET_API_TOKEN_DASHBOARDS:-$(token)}"
export FLEET_WEBHOOK_SECRET_GITHUB="${FLEET_WEBHOOK_SECRET_GITHUB:-$(token)}"
api="http://127.0.0.1:18642"
step "The controller: fleet serve follows the bare repository, applies what each commit changes, corrects drift" \
  "fleet serve --repo acme-fleet.git --branch main --lab --repository-name acme/fleet --drift-interval 15 &"
# Its passes leave the hosts' configuration out (FLEET_CONFIG=false): Ansible's check mode on every
# configured host every 15 seconds would only make the demo wait.
FLEET_CONFIG=false $fleet serve --repo "$scratch/acme-fleet.git" --branch main --lab --repository-name acme/fleet \
  --listen 127.0.0.1:18642 --poll-interval 3600 --drift-interval 15 2> serve.log &
serve_pid=$!
get() { curl -s -H "Authorization: Bearer $FLEET_API_TOKEN_DASHBOARDS" "$api$1"; }
# Until its first pass over the whole fleet is done: a revision in force, nothing queued or running.
settled() {  # [REVISION]
  for _ in $(seq 600); do
    if get /api/v1/status | "$py" -c '
import json, sys
s = json.load(sys.stdin); want = sys.argv[1] if len(sys.argv) > 1 else None
applied = (s.get("lastAppliedRevision") or {}).get("revision")
ok = applied and (want is None or applied == want) and not s["queue"]["running"] and not s["queue"]["depth"]
sys.exit(0 if ok else 1)' "$@" 2>/dev/null; then return 0; fi
    sleep 0.5
  done
  echo "the controller did not settle; its log:"; tail -20 serve.log; return 1
}
# The revisions, resources by kind and state, and the queue, of the status.
summary() {
  get /api/v1/status | "$py" -c '
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

printf '%s' "$FLEET_API_TOKEN_DASHBOARDS" > ui-token  # the scratch directory is yours alone (mode 700)
step "The web UI, while the lab runs: $api/ui/ (sign in with an API token: the read one is in $scratch/ui-token)" \
  "curl $api/ui/login; curl -X POST $api/ui/login -d token=***; curl $api/ui/"
# Sign in as a browser does: the form's CSRF token, the API token posted once, then a session cookie.
curl -s -c cookies "$api/ui/login" -o login.html -w "GET /ui/login: %{http_code}\n"
csrf="$(sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' login.html)"
curl -s -b cookies -c cookies --data-urlencode "csrf=$csrf" --data-urlencode "next=/ui/" --data-urlencode "token@ui-token" \
  "$api/ui/login" -o /dev/null -w "POST /ui/login: %{http_code}, to %{redirect_url}\n"
curl -s -b cookies "$api/ui/" -o overview.html -w "GET /ui/: %{http_code}, what the page says:\n"
"$py" - overview.html <<'PY'
import re, sys
page = open(sys.argv[1]).read()
for match in re.finditer(r"<title>(.*?)</title>|<p class=\"summary\">(.*?)</p>|<h2[^>]*>(.*?)</h2>", page, re.S):
    text = " ".join(re.sub(r"<[^>]+>", " ", next(g for g in match.groups() if g is not None)).split())
    print("  " + re.sub(r" ([:,])", r"\1", text))
PY
echo "(the demo stops the controller and the lab at its end; FLEET_DEMO_PAUSE=1 make demo keeps them up until Enter)"

step "A commit turns nyc1-r02-05 off; a signed push webhook brings it in at once" \
  "git commit && git push; curl -X POST $api/webhooks/github -H 'X-Hub-Signature-256: sha256=...'"
"$py" - acme-fleet/machines/nyc1/r02.yaml <<'PY'
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
commit="$(git -C acme-fleet rev-parse HEAD)"
body="{\"ref\": \"refs/heads/main\", \"after\": \"$commit\", \"repository\": {\"full_name\": \"acme/fleet\"}}"
signature="sha256=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$FLEET_WEBHOOK_SECRET_GITHUB" -r | cut -d' ' -f1)"
curl -s -X POST "$api/webhooks/github" -H "X-GitHub-Event: push" -H "X-GitHub-Delivery: demo-1" \
  -H "Content-Type: application/json" -H "X-Hub-Signature-256: $signature" --data-binary "$body"; echo
echo "and a forged one:"
curl -s -X POST "$api/webhooks/github" -H "X-GitHub-Event: push" -H "X-GitHub-Delivery: demo-2" \
  -H "Content-Type: application/json" -H "X-Hub-Signature-256: sha256=00ff" --data-binary "$body"; echo
settled "$commit"
$fleet observe acme-fleet --lab --target machine/nyc1-r02-05

IFS=: read -r ldn1_user ldn1_password < <(kubectl --kubeconfig "$FLEET_LAB_DIR/clusters/k8s-ldn1/kubeconfig" \
  get secret bmc-ldn1-r03 -n fleet-system -o jsonpath='{.data.password}' | base64 -d; echo)
ipmi_ldn1() { ipmitool -I lanplus -H "$(bmc "$1")" -U "$ldn1_user" -P "$ldn1_password" "${@:2}"; }
step "Behind fleet's back: nyc1-r01-02 off (power enforced in nyc1), ldn1-r03-05 on (power only observed in ldn1)" \
  "ipmitool -H <nyc1-r01-02> ... chassis power off; ipmitool -H <ldn1-r03-05> ... chassis power on"
ipmi_nyc1 10.128.1.12 chassis power off
ipmi_ldn1 10.144.3.15 chassis power on
wait_for_power off ipmi_nyc1 10.128.1.12
echo "the controller's next drift pass (every 15 s here) puts the enforced one back and reports the other:"
wait_for_power on ipmi_nyc1 10.128.1.12 120
# Until the pass has seen ldn1-r03-05 on, too.
for _ in $(seq 240); do
  get /api/v1/resources/machine/ldn1-r03-05 | "$py" -c 'import json,sys; sys.exit(0 if "live \"on\"" in json.load(sys.stdin)["detail"] else 1)' && break
  sleep 0.5
done
settled "$commit"
echo "nyc1-r01-02: $(ipmi_nyc1 10.128.1.12 chassis power status); ldn1-r03-05: $(ipmi_ldn1 10.144.3.15 chassis power status)"

step "What the controller says: the two machines and its status, as scripts and dashboards read them; the runs that touched nyc1-r01-02" \
  "curl -H 'Authorization: Bearer ***' $api/api/v1/resources/machine/...; curl ... $api/api/v1/status; fleet history --target machine/nyc1-r01-02"
for address in machine/nyc1-r01-02 machine/ldn1-r03-05; do
  "$py" - "$(get "/api/v1/resources/$address")" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
enforced, observed = ", ".join(r["enforced"]), ", ".join(r["observedOnly"]) or "-"
print(f"{r['address']:21} {r['state']:8} {r['detail'] or '-'}  (enforced: {enforced}; observed only: {observed})")
PY
done
summary
$fleet history --target machine/nyc1-r01-02 --limit 3

step "Drift that lasts becomes a pull request: its branch pushed to the bare repository (no forge API here)" \
  "fleet drift-report --repo acme-fleet.git --branch main --grace 0 --lab --push-only"
$fleet drift-report --repo "$scratch/acme-fleet.git" --branch main --grace 0 --lab --push-only > drift-pr.txt
# The report and the pull request to open, its body as far as the first rows of its table.
first_lines 16 < drift-pr.txt
echo "... ($(grep -c '^| `' drift-pr.txt) rows in all)"
echo "\$ git -C acme-fleet.git show --stat fleet/drift/ldn1; git -C acme-fleet.git diff main fleet/drift/ldn1 -- machines/ldn1/r03.yaml"
git -C acme-fleet.git show --stat --format='commit %h: %s' fleet/drift/ldn1
git -C acme-fleet.git diff --unified=1 main fleet/drift/ldn1 -- machines/ldn1/r03.yaml | tail -n +5
echo "(merging adopts the live values; closing lets enforcement revert enforced fields: here all are observe-only)"

if [[ -n "${FLEET_DEMO_PAUSE:-}" ]]; then
  read -r -p "The lab and the controller run until you press Enter: $api/ui/ (token in $scratch/ui-token) " _ || true
fi

step "SIGTERM: it stops taking work, lets running actions finish, releases its leases, exits 0" "kill -TERM <fleet serve>"
kill -TERM "$serve_pid"
code=0
wait "$serve_pid" || code=$?
serve_pid=""
echo "fleet serve exited $code"
[[ $code == 0 ]]

step "Stop the lab; nothing is left behind" "fleet lab down"
$fleet lab down

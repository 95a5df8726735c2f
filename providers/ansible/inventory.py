"""The Ansible inventory of a fleet: one host per Machine or VirtualMachine that has `spec.config`.

Groups are derived from the specs (site, rack, role, Cluster membership, SparkPool dedicated
nodes) so that playbooks can target `hosts: role_hypervisor` or `sparkpool_etl`. This module is
pure: it imports nothing of Ansible, reads no secret and touches no file. Host variables that
name a `credentialsRef` are left out here; the runner hands them to Ansible separately. Host
variables a plan must not let Ansible template (see `RevisionInputs.trusted_vars`) are wrapped
in `Unsafe`, which the runner writes with Ansible's `!unsafe` tag.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping, Set
from typing import Any

from pydantic import ValidationError

from providers.ansible.unsafe import Unsafe
from reconciler.spec import models

Inventory = dict[str, Any]

# Ansible warns about (and by default rewrites) group names that are not Python identifiers.
_INVALID_GROUP_CHARS = re.compile(r"[^A-Za-z0-9_]")
_CREDENTIAL_NAME = re.compile(models.DNS_LABEL_PATTERN)
_BARE_INI_VALUE = re.compile(r"^[A-Za-z0-9_./:@+-]+$")

Configured = models.Machine | models.VirtualMachine


def group_name(*parts: str) -> str:
    """A group name Ansible accepts as is: letters, digits and '_', not starting with a digit."""
    name = _INVALID_GROUP_CHARS.sub("_", "_".join(parts))
    return f"_{name}" if not name or name[0].isdigit() else name


def is_credential_var(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) == {"credentialsRef"}


def _credentials_ref(name: str, ref: Any) -> models.CredentialSource | str:
    if isinstance(ref, str) and _CREDENTIAL_NAME.match(ref):
        return ref
    if isinstance(ref, Mapping):
        try:
            return models.CredentialSource.model_validate(dict(ref))
        except ValidationError:
            pass
    raise ValueError(
        f"spec.config.vars.{name}.credentialsRef is neither a credential name nor an env, file or"
        " kubernetesSecret source"
    )


def credential_vars(config: models.AnsibleConfig) -> dict[str, models.CredentialSource | str]:
    """Host variables whose value is `{credentialsRef: ...}`: the secret is read when a run starts.

    Only top-level variables may be secrets, written as `db_password: {credentialsRef: db-nyc1}` (a
    name from fleet.yaml) or with an inline source (`{credentialsRef: {env: DB_PASSWORD}}`).
    """
    refs: dict[str, models.CredentialSource | str] = {}
    for name, value in config.vars.items():
        if is_credential_var(value):
            refs[name] = _credentials_ref(name, value["credentialsRef"])
    return refs


def host_names(documents: Iterable[models.Document]) -> dict[str, str]:
    """Inventory host name per document address, for every Machine and VirtualMachine with config.

    Names are unique per kind only, so a VirtualMachine named like a configured Machine becomes
    `NAME.vm` in the inventory (its `fleet_address` still says which document it is).
    """
    configured = [d for d in documents if isinstance(d, Configured) and d.spec.config is not None]
    machines = {d.metadata.name for d in configured if isinstance(d, models.Machine)}
    names: dict[str, str] = {}
    for document in configured:
        name = document.metadata.name
        if isinstance(document, models.VirtualMachine) and name in machines:
            name = f"{name}.vm"
        names[document.address] = name
    return names


def _as_documents(
    documents: Mapping[str, models.Document] | Iterable[models.Document],
) -> list[models.Document]:
    if isinstance(documents, Mapping):
        return list(documents.values())
    return list(documents)


def build_inventory(
    documents: Mapping[str, models.Document] | Iterable[models.Document],
    fleet: models.Fleet,
    *,
    connection_overrides: Mapping[str, Mapping[str, str]] | None = None,
    trusted_vars: Mapping[str, Set[str]] | None = None,
) -> Inventory:
    """The inventory in Ansible's dynamic-inventory JSON shape, sorted.

    {"all": {"children": [groups]}, "<group>": {"hosts": [...], "vars": {...}}, "_meta": {"hostvars":
    {host: vars}}}. Host vars are `spec.config.vars` (without credentialsRef ones), `fleet_address`
    (machine/NAME or virtualmachine/NAME) and `ansible_host` (spec.address), with
    `connection_overrides[host]` on top. A VirtualMachine joins the site and rack groups of the
    Machine that runs it. Site groups carry `fleet_region` when the site names one.

    With `trusted_vars` (names of `config.vars` by document address), every other variable of
    `config.vars` is wrapped in `Unsafe`: Ansible takes it as data, never as a template. A
    document it does not name has all of its variables wrapped.
    """
    docs = _as_documents(documents)
    names = host_names(docs)
    by_address = {d.address: d for d in docs}
    overrides = connection_overrides or {}
    groups: dict[str, set[str]] = {}

    def join(group: str, host: str) -> None:
        groups.setdefault(group, set()).add(host)

    hostvars: dict[str, dict[str, Any]] = {}
    for address, host in names.items():
        document = by_address[address]
        assert isinstance(document, Configured) and document.spec.config is not None
        config = document.spec.config
        variables = {k: v for k, v in config.vars.items() if not is_credential_var(v)}
        if trusted_vars is not None:
            trusted = trusted_vars.get(address, frozenset())
            variables = {k: v if k in trusted else Unsafe(v) for k, v in variables.items()}
        variables["fleet_address"] = address
        if document.spec.address is not None:
            variables["ansible_host"] = document.spec.address
        variables.update(overrides.get(host, {}))
        hostvars[host] = dict(sorted(variables.items()))

        placed: models.Machine | None = None
        if isinstance(document, models.Machine):
            placed = document
            join(group_name("role", document.spec.role), host)
        else:
            hypervisor = by_address.get(f"machine/{document.spec.host}")
            placed = hypervisor if isinstance(hypervisor, models.Machine) else None
        if placed is not None:
            join(group_name("site", placed.spec.site), host)
            join(group_name("rack", placed.spec.site, placed.spec.rack), host)

    clusters = sorted((d for d in docs if isinstance(d, models.Cluster)), key=lambda d: d.metadata.name)
    for cluster in clusters:
        for member in cluster.spec.members:
            if member.ref in names:
                join(group_name("cluster", cluster.metadata.name), names[member.ref])
    for pool in sorted((d for d in docs if isinstance(d, models.SparkPool)), key=lambda d: d.metadata.name):
        owner = by_address.get(f"cluster/{pool.spec.cluster}")
        if not isinstance(owner, models.Cluster):
            continue
        for member in owner.spec.members:
            selected = all(member.labels.get(k) == v for k, v in pool.spec.nodes.selector.items())
            if selected and member.ref in names:
                join(group_name("sparkpool", pool.metadata.name), names[member.ref])

    grouped = {host for hosts in groups.values() for host in hosts}
    ungrouped = sorted(set(hostvars) - grouped)
    if ungrouped:
        groups["ungrouped"] = set(ungrouped)

    regions = {group_name("site", s.name): s.region for s in fleet.spec.sites if s.region}
    inventory: Inventory = {"all": {"children": sorted(groups)}}
    for group in sorted(groups):
        entry: dict[str, Any] = {"hosts": sorted(groups[group])}
        if group in regions:
            entry["vars"] = {"fleet_region": regions[group]}
        inventory[group] = entry
    inventory["_meta"] = {"hostvars": dict(sorted(hostvars.items()))}
    return inventory


def select_hosts(inventory: Inventory, hosts: Iterable[str]) -> Inventory:
    """The part of an inventory that names only `hosts` (groups keep their vars, empty ones go)."""
    wanted = set(hosts)
    out: Inventory = {}
    children = []
    for group in inventory["all"].get("children", []):
        members = [h for h in inventory[group].get("hosts", []) if h in wanted]
        if members:
            out[group] = {**inventory[group], "hosts": members}
            children.append(group)
    hostvars = inventory["_meta"]["hostvars"]
    return {
        "all": {"children": children},
        **out,
        "_meta": {"hostvars": {h: hostvars[h] for h in sorted(wanted) if h in hostvars}},
    }


def to_yaml_inventory(inventory: Inventory) -> dict[str, Any]:
    """The same inventory in the structure of Ansible's `yaml` inventory plugin (JSON is YAML):
    {"all": {"hosts": {host: vars}, "children": {group: {"hosts": {host: null}, "vars": {...}}}}}."""
    children: dict[str, Any] = {}
    for group in inventory["all"].get("children", []):
        entry: dict[str, Any] = {"hosts": dict.fromkeys(inventory[group].get("hosts", []))}
        if inventory[group].get("vars"):
            entry["vars"] = dict(inventory[group]["vars"])
        children[group] = entry
    return {"all": {"hosts": dict(inventory["_meta"]["hostvars"]), "children": children}}


def _ini_literal(value: Any) -> str:
    """A value as Ansible's INI parser reads it back unchanged (it applies ast.literal_eval)."""
    if isinstance(value, str) and _BARE_INI_VALUE.match(value):
        try:
            ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return repr(value)


def _ini_host_value(value: Any) -> str:
    """A host-line value: the literal, double-quoted when the line's shell-style split needs it."""
    literal = _ini_literal(value)
    if _BARE_INI_VALUE.match(literal):
        return literal
    escaped = literal.replace("\\", "\\\\").replace('"', '\\"')  # shlex in POSIX mode escapes only these
    return f'"{escaped}"'


def render_ini(inventory: Inventory) -> str:
    """The inventory in INI form. A host's variables are written where it first appears; nested
    values are Python literals, which is what Ansible's INI parser expects."""
    hostvars: Mapping[str, Mapping[str, Any]] = inventory["_meta"]["hostvars"]
    written: set[str] = set()
    lines: list[str] = ["# Generated by fleet from the fleet repo; do not edit."]
    for group in inventory["all"].get("children", []):
        lines.append("")
        lines.append(f"[{group}]")
        for host in inventory[group].get("hosts", []):
            if host in written:
                lines.append(host)
                continue
            written.add(host)
            pairs = [
                f"{key}={_ini_host_value(value)}" for key, value in sorted(hostvars.get(host, {}).items())
            ]
            lines.append(" ".join([host, *pairs]))
        group_vars = inventory[group].get("vars") or {}
        if group_vars:
            lines.append("")
            lines.append(f"[{group}:vars]")
            lines.extend(f"{key}={_ini_literal(value)}" for key, value in sorted(group_vars.items()))
    return "\n".join(lines) + "\n"

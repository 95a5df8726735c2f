"""The resource model: one pydantic model per kind of the fleet repo.

Models are strict (unknown fields are errors) and normalise what they accept
(IP addresses, Kubernetes quantities), so two spellings of one value compare
equal. Every default is stated in its field's description, which is also what
the generated JSON Schemas and editors show. Models hold references by name
only; resolving them is `references.py`'s job.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationError,
    model_validator,
)

from reconciler.spec.quantity import QuantityError, canonical_quantity

API_VERSION = "fleet/v1alpha1"

RECONCILE_ANNOTATION = "fleet.dev/reconcile"
"""`disabled` suspends the resource as `fleet suspend` does (observed and reported, never acted
on); `enabled` is the default. Any other value is a validation error."""
RECONCILE_VALUES = ("disabled", "enabled")

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DnsLabel = Annotated[
    str,
    StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN),
    Field(description="A DNS-1123 label: lower-case letters, digits and '-', at most 63 characters."),
]

LABEL_KEY_PATTERN = (
    r"^(?:(?:[a-z0-9]([-a-z0-9]*[a-z0-9])?)(?:\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^(?:[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
_LABEL_KEY = re.compile(LABEL_KEY_PATTERN)


def _check_label_key(key: str) -> str:
    if len(key) > 316 or not _LABEL_KEY.match(key):
        raise ValueError(
            f"{key!r} is not a valid label key (an optional DNS prefix and '/', then a name of "
            "at most 63 letters, digits, '-', '_' or '.')"
        )
    return key


# Checked by pydantic-core's own regex engine: labels are on every document.
LabelKey = Annotated[str, StringConstraints(max_length=316, pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE_PATTERN)]
Labels = dict[LabelKey, LabelValue]


def _normalise_quantity(value: Any) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError("a quantity is a number or a string such as 500m, 4 or 128Gi")
    return _canonical_quantity(value)


@functools.lru_cache(maxsize=4096)
def _canonical_quantity(value: str | int | float) -> str:
    try:
        return canonical_quantity(value)
    except QuantityError as exc:
        raise ValueError(str(exc)) from None


Quantity = Annotated[
    str,
    BeforeValidator(_normalise_quantity),
    Field(
        description="A Kubernetes quantity such as 500m, 4 or 128Gi; stored in canonical form.",
        json_schema_extra={
            "pattern": r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
        },
    ),
]
QuantityInput = Annotated[
    Quantity,
    Field(json_schema_extra={"type": ["string", "number"]}),
]


_CANONICAL_IPV4 = re.compile(
    r"^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$"
)


def _normalise_ip(value: Any) -> str:
    if isinstance(value, str) and _CANONICAL_IPV4.match(value):
        return value
    if not isinstance(value, str):
        raise ValueError("an IP address is written as a string such as 10.0.12.7 or fd00::7")
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None


IPAddress = Annotated[
    str,
    BeforeValidator(_normalise_ip),
    Field(description="An IPv4 or IPv6 address, stored in its compressed form."),
]

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
)


def _normalise_host(value: Any) -> str:
    if isinstance(value, str) and _CANONICAL_IPV4.match(value):
        return value
    if not isinstance(value, str):
        raise ValueError("an address is an IP address or a DNS name, written as a string")
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        pass
    if not _HOSTNAME.match(value) or value.replace(".", "").isdigit():
        raise ValueError(f"{value!r} is neither an IP address nor a DNS name")
    return value.lower()


HostAddress = Annotated[
    str,
    BeforeValidator(_normalise_host),
    Field(description="An IP address (normalised) or a DNS name (lower-cased)."),
]
Port = Annotated[int, Field(ge=1, le=65535, description="A TCP or UDP port, 1-65535.")]


class Strict(BaseModel):
    """Base of every model: unknown fields are errors, values never coerce silently."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=False)

    def __reduce__(self) -> tuple[Any, ...]:
        # A pickled model was validated when it was made: it comes back as it was, without
        # running its validators again (the validation cache reads 100,000s of them).
        return (_restore, (type(self), self.__dict__, _shared(self.__pydantic_fields_set__)))


_FIELD_SETS: dict[frozenset[str], set[str]] = {}


def _shared(fields: set[str]) -> set[str]:
    """One set object per distinct set of fields, so that a pickle of many models holds each once.
    Sharing is safe: pydantic never changes a model's set in place (copies change their own)."""
    key = frozenset(fields)
    found = _FIELD_SETS.get(key)
    if found is None:
        found = _FIELD_SETS.setdefault(key, set(key))
    return found


def _restore(
    cls: type[Strict], values: dict[str, Any], fields_set: set[str], _set: Any = object.__setattr__
) -> Strict:
    # Called once per model of a cached revision (767,000 for 110,000 Machines): `_set` is bound
    # once, not looked up on every call.
    model = cls.__new__(cls)
    _set(model, "__dict__", values)
    _set(model, "__pydantic_fields_set__", fields_set)
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model


# --- credentials -------------------------------------------------------------------------


class KubernetesSecretRef(Strict):
    namespace: DnsLabel
    name: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    key: Annotated[str, StringConstraints(min_length=1, max_length=253)] | None = Field(
        default=None, description="The key inside the Secret; default: the whole Secret."
    )


class CredentialSource(Strict):
    """Where a secret is read at the moment of use. Exactly one of the three."""

    env: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = Field(
        default=None, description="Name of an environment variable holding the secret."
    )
    file: Annotated[str, StringConstraints(min_length=1)] | None = Field(
        default=None, description="Path of a file holding the secret (read when used)."
    )
    kubernetesSecret: KubernetesSecretRef | None = Field(
        default=None, description="A Kubernetes Secret holding the secret."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> CredentialSource:
        chosen = [n for n in ("env", "file", "kubernetesSecret") if getattr(self, n) is not None]
        if len(chosen) != 1:
            raise ValueError(
                "a credential source names exactly one of env, file or kubernetesSecret"
                + (f" (found {', '.join(chosen)})" if chosen else "")
            )
        return self


def _credential_form(value: Any) -> str:
    return "name" if isinstance(value, str) else "source"


CredentialsRef = Annotated[
    Annotated[DnsLabel, Tag("name")] | Annotated[CredentialSource, Tag("source")],
    Discriminator(_credential_form),
    Field(
        description=(
            "Either the name of an entry of the Fleet's spec.credentials, or an inline source "
            "(env, file or kubernetesSecret). Secrets themselves never live in the fleet repo."
        )
    ),
]


class _SecretVar(Strict):
    credentialsRef: CredentialsRef


def _nested_credentials_ref(value: Any) -> bool:
    if isinstance(value, dict):
        return "credentialsRef" in value or any(_nested_credentials_ref(v) for v in value.values())
    if isinstance(value, list):
        return any(_nested_credentials_ref(v) for v in value)
    return False


def _secret_var(value: Any) -> Any:
    """A host variable `{credentialsRef: ...}` is a secret: nothing else in it, a valid reference.

    Only a whole variable can be a secret: a credentialsRef deeper inside one would reach Ansible as
    a literal mapping, so it is refused."""
    if not (isinstance(value, dict) and "credentialsRef" in value):
        if _nested_credentials_ref(value):
            raise ValueError(
                "credentialsRef is read only as a whole variable; nested inside this one it would "
                "reach Ansible as a literal: make the secret a variable of its own, e.g. "
                "db_password: {credentialsRef: NAME}, and refer to it from here as "
                "'{{ db_password }}'"
            )
        return value
    if set(value) != {"credentialsRef"}:
        others = ", ".join(sorted(str(k) for k in value if k != "credentialsRef"))
        raise ValueError(f"a secret variable holds only credentialsRef (found also {others})")
    try:
        _SecretVar.model_validate(value)
    except ValidationError:
        raise ValueError(
            "credentialsRef is neither the name of a credential of fleet.yaml nor an env, file or "
            "kubernetesSecret source"
        ) from None
    return value


# --- common document parts ---------------------------------------------------------------


class Metadata(Strict):
    name: DnsLabel
    labels: Labels = Field(default_factory=dict, description="Labels for selection; default none.")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Free-form notes for people and tools; default none."
    )


class AnsibleConfig(Strict):
    """Operating-system configuration applied with Ansible."""

    playbooks: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=list, description="Playbook paths relative to the repo root; default none."
    )
    roles: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=list, description="Roles applied after the playbooks; default none."
    )
    vars: dict[str, Annotated[Any, AfterValidator(_secret_var)]] = Field(
        default_factory=dict,
        description="Host variables. A secret is a variable written as {credentialsRef: NAME or "
        "source}: read when Ansible runs, given to it in a file only it can read, never a literal.",
    )

    def credential_names(self) -> tuple[tuple[str, str], ...]:
        """(variable, credential name) of the secret variables that name a fleet.yaml credential."""
        return tuple(
            (name, var["credentialsRef"])
            for name, var in sorted(self.vars.items())
            if isinstance(var, dict) and isinstance(var.get("credentialsRef"), str)
        )


# --- Fleet -------------------------------------------------------------------------------


class PowerDomain(Strict):
    name: DnsLabel
    description: str | None = None
    maxConcurrent: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="At most this many BMCs of the domain talked to at once; default no limit."
    )


class Rack(Strict):
    name: DnsLabel
    powerDomain: DnsLabel | None = Field(
        default=None, description="The power domain feeding this rack; default none."
    )
    maxConcurrent: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        description="At most this many BMCs of the rack talked to at once; default no limit.",
    )


class Site(Strict):
    name: DnsLabel
    region: str | None = Field(default=None, description="Free-form region name; default none.")
    racks: list[Rack] = Field(default_factory=list, description="Racks of the site (failure domains).")
    powerDomains: list[PowerDomain] = Field(default_factory=list, description="Power domains of the site.")

    @model_validator(mode="after")
    def _unique_and_resolved(self) -> Site:
        seen: set[str] = set()
        for rack in self.racks:
            if rack.name in seen:
                raise ValueError(f"rack {rack.name!r} is listed twice in site {self.name!r}")
            seen.add(rack.name)
        domains = [d.name for d in self.powerDomains]
        if len(set(domains)) != len(domains):
            raise ValueError(f"a power domain is listed twice in site {self.name!r}")
        for rack in self.racks:
            if rack.powerDomain is not None and rack.powerDomain not in domains:
                raise ValueError(
                    f"rack {rack.name!r} names power domain {rack.powerDomain!r}, which site "
                    f"{self.name!r} does not list under powerDomains"
                )
        return self


class IpmiSettings(Strict):
    port: Port = Field(default=623, description="Default BMC port; default 623.")
    timeoutSeconds: Annotated[float, Field(gt=0)] = Field(
        default=10.0, description="Per-command timeout; default 10."
    )
    minCommandIntervalSeconds: Annotated[float, Field(ge=0)] = Field(
        default=5.0, description="Least time between two commands to one BMC; default 5 (as Ironic)."
    )
    maxConcurrent: Annotated[int, Field(ge=1)] = Field(
        default=64, description="BMCs talked to at once; default 64."
    )
    softPowerOffGraceSeconds: Annotated[float, Field(ge=0)] = Field(
        default=120.0, description="Wait after a soft power-off before a hard one; default 120."
    )


class LibvirtSettings(Strict):
    uriTemplate: str = Field(
        default="qemu+ssh://root@{address}/system",
        description="libvirt URI of a hypervisor; {address} is the Machine's address. Default qemu+ssh://root@{address}/system.",
    )
    timeoutSeconds: Annotated[float, Field(gt=0)] = Field(
        default=30.0, description="Deadline for connecting to and reading one hypervisor; default 30."
    )
    shutdownTimeoutSeconds: Annotated[float, Field(ge=0)] = Field(
        default=120.0,
        description="Wait after a graceful shutdown before the domain is destroyed; default 120.",
    )
    maxConcurrent: Annotated[int, Field(ge=1)] = Field(
        default=16, description="Hypervisors talked to at once; default 16."
    )


class AnsibleSettings(Strict):
    forks: Annotated[int, Field(ge=1)] = Field(
        default=20, description="Hosts Ansible works on at once in one run; default 20."
    )
    timeoutSeconds: Annotated[float, Field(gt=0)] = Field(
        default=1800.0, description="Deadline of one ansible-playbook run; default 1800."
    )
    artifactsDir: str | None = Field(
        default=None,
        description="Where the artifacts of every apply run are kept (secrets masked); default "
        "$XDG_STATE_HOME/fleet/ansible.",
    )
    hostKeyChecking: bool = Field(
        default=True, description="Check SSH host keys against known_hosts; default true."
    )


class ProviderSettings(Strict):
    ipmi: IpmiSettings = Field(default_factory=IpmiSettings, description="IPMI provider settings.")
    libvirt: LibvirtSettings = Field(
        default_factory=LibvirtSettings, description="libvirt provider settings."
    )
    ansible: AnsibleSettings = Field(
        default_factory=AnsibleSettings, description="Ansible provider settings."
    )


class BlastRadius(Strict):
    maxPowerOffsPerRun: Annotated[int, Field(ge=0)] = Field(
        default=10, description="Power-offs in one run; default 10."
    )
    maxRackPercent: Annotated[int, Field(ge=1, le=100)] = Field(
        default=50, description="Share of one rack's machines changed at once; default 50."
    )
    maxClusterNodePercent: Annotated[int, Field(ge=1, le=100)] = Field(
        default=25, description="Share of one Cluster's nodes disrupted at once; default 25."
    )


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")


class ChangeWindow(Strict):
    name: DnsLabel
    sites: list[DnsLabel] = Field(default_factory=list, description="Sites it applies to; default all.")
    days: list[Weekday] = Field(
        default_factory=lambda: list(_WEEKDAYS),
        description="Days; default Monday to Friday.",
    )
    start: Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] = Field(
        description="Start time HH:MM (UTC)."
    )
    end: Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] = Field(
        description="End time HH:MM (UTC)."
    )


class Enforcement(Strict):
    field: Literal["power", "bootDevice", "config", "vm", "cluster", "sparkPool"] = Field(
        description="Which managed field the rule governs."
    )
    mode: Literal["enforce", "observe"] = Field(
        description="enforce: plan and apply it; observe: report drift only."
    )
    sites: list[DnsLabel] = Field(default_factory=list, description="Sites it applies to; default all.")


class DriftPolicy(Strict):
    intervalMinutes: Annotated[int, Field(ge=1)] = Field(
        default=15, description="Minutes between drift checks; default 15."
    )


class Policies(Strict):
    blastRadius: BlastRadius = Field(default_factory=BlastRadius, description="Limits on one run's changes.")
    changeWindows: list[ChangeWindow] = Field(
        default_factory=list, description="When changes may be applied; default any time."
    )
    enforcement: list[Enforcement] = Field(
        default_factory=list, description="Per-field enforce or observe; default enforce everything."
    )
    drift: DriftPolicy = Field(default_factory=DriftPolicy, description="Drift detection schedule.")
    orphans: Literal["report", "powerOff", "delete"] = Field(
        default="report",
        description="What happens to a resource whose spec was removed; default report (never touched).",
    )
    vmRestarts: Literal["never", "allowed"] = Field(
        default="never",
        description=(
            "Whether fleet may restart a running VirtualMachine for a change the hypervisor cannot make"
            " live (more vCPUs or memory than its maximum, other disks or networks); default never:"
            " the change is written to the persistent definition and takes effect at the next restart."
        ),
    )


class OrganisationRule(Strict):
    name: DnsLabel
    kinds: list[Literal["Machine", "VirtualMachine", "Cluster", "SparkPool"]] = Field(
        min_length=1, description="Kinds the rule applies to."
    )
    message: str = Field(description="What is wrong and what to do, shown with every violation.")
    severity: Literal["error", "warning"] = Field(default="error", description="Default error.")
    schema_: dict[str, Any] = Field(
        alias="schema",
        description="A JSON Schema (2020-12) every matching document must satisfy.",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)


class Limits(Strict):
    maxFileBytes: Annotated[int, Field(ge=1024, le=256 * 1024 * 1024)] = Field(
        default=16 * 1024 * 1024, description="Largest spec file read; default 16 MiB."
    )
    maxDepth: Annotated[int, Field(ge=8, le=256)] = Field(
        default=64, description="Deepest nesting of a YAML document; default 64."
    )


IMAGE_PATTERN = r"^[a-z0-9]+([._/:-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
ImageRef = Annotated[
    str,
    StringConstraints(min_length=1, max_length=512, pattern=IMAGE_PATTERN),
    Field(description="A container image reference: registry/repository:tag or @digest."),
]


class FleetSpark(Strict):
    image: ImageRef | None = Field(
        default=None,
        description="Spark image of every SparkPool that names none (spark.kubernetes.container.image).",
    )


class Webhooks(Strict):
    githubSecretRef: CredentialsRef | None = Field(
        default=None,
        description="Secret of GitHub push webhooks (X-Hub-Signature-256);"
        " FLEET_GITHUB_WEBHOOK_SECRET beats it. Without either, POST /webhooks/github answers 401.",
    )
    gitlabTokenRef: CredentialsRef | None = Field(
        default=None,
        description="Secret token of GitLab push hooks (X-Gitlab-Token);"
        " FLEET_GITLAB_WEBHOOK_TOKEN beats it. Without either, POST /webhooks/gitlab answers 401.",
    )


class ApiToken(Strict):
    name: DnsLabel = Field(description="Who the token is, as runs and audit records name the operator.")
    role: Literal["read", "operator"] = Field(
        description="read: the GET endpoints; operator: also reconcile, suspend and resume."
    )
    credentialsRef: CredentialsRef = Field(description="Where the bearer token is kept.")


class ControllerSettings(Strict):
    pollIntervalSeconds: Annotated[float, Field(ge=1, le=86400)] = Field(
        default=60, description="Seconds between fetches of the fleet repo by `fleet serve`; default 60."
    )
    webhooks: Webhooks = Field(default_factory=Webhooks, description="Secrets of the push webhooks.")
    apiTokens: list[ApiToken] = Field(
        default_factory=list, description="Bearer tokens of the HTTP API, each with a role; default none."
    )

    @model_validator(mode="after")
    def _unique_tokens(self) -> ControllerSettings:
        names = [t.name for t in self.apiTokens]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"API token {name!r} is listed twice")
        return self


ForgeName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255, pattern=r"^[^\s]+$"),
    Field(description="A name as the forge spells it (compared without regard to case)."),
]


class PullRequestTrust(Strict):
    """Whose pull requests fleet plans with their own playbooks and templates. A pull request
    from anyone else is planned with the base revision's playbooks, roles and plugins, and its
    changed variables are never rendered as templates. Read from the base revision's fleet.yaml
    only: a pull request never trusts itself. Default: nobody is trusted."""

    authors: list[ForgeName] = Field(
        default_factory=list,
        description="Forge users (GitHub logins, GitLab usernames) whose pull requests are trusted;"
        " default none.",
    )
    teams: list[ForgeName] = Field(
        default_factory=list,
        description="Teams whose members' pull requests are trusted: GitHub `org/team-slug`,"
        " GitLab group paths; default none.",
    )
    label: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = Field(
        default=None,
        description="A label that trusts one pull request, e.g. fleet/trusted, for whoever may"
        " label pull requests (GitHub: triage access; GitLab: the Reporter role) to set after"
        " reading the change; default none (no label trusts).",
    )


class PullRequestSettings(Strict):
    trust: PullRequestTrust = Field(
        default_factory=PullRequestTrust,
        description="Whose pull requests are planned with their own playbooks; default nobody's.",
    )


class FleetSpec(Strict):
    sites: list[Site] = Field(min_length=1, description="Sites and their failure domains.")
    credentials: dict[DnsLabel, CredentialSource] = Field(
        default_factory=dict, description="Named credential sources that specs refer to by credentialsRef."
    )
    credentialsCluster: DnsLabel | None = Field(
        default=None,
        description="The Cluster (by name) whose API server holds the kubernetesSecret credentials,"
        " read with that Cluster's own credentialsRef when fleet runs outside a pod and without"
        " FLEET_KUBECONFIG. Its credentialsRef must be an env or file source.",
    )
    providers: ProviderSettings = Field(default_factory=ProviderSettings, description="Provider settings.")
    policies: Policies = Field(default_factory=Policies, description="Safety and schedule policies.")
    rules: list[OrganisationRule] = Field(
        default_factory=list, description="Organisation rules as JSON Schemas; default none."
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="Globs (relative to the repo root) of YAML files that are not specs, e.g. playbooks/**.",
    )
    limits: Limits = Field(default_factory=Limits, description="Input limits for spec files.")
    spark: FleetSpark = Field(default_factory=FleetSpark, description="Defaults of every SparkPool.")
    controller: ControllerSettings = Field(
        default_factory=ControllerSettings,
        description="How `fleet serve` follows the repo and who may call it.",
    )
    pullRequests: PullRequestSettings = Field(
        default_factory=PullRequestSettings,
        description="How pull requests to the fleet repo are planned (`fleet pr comment`).",
    )

    @model_validator(mode="after")
    def _unique_sites(self) -> FleetSpec:
        names = [s.name for s in self.sites]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"site {name!r} is listed twice")
        rules = [r.name for r in self.rules]
        for name in rules:
            if rules.count(name) > 1:
                raise ValueError(f"rule {name!r} is listed twice")
        return self


# --- Machine -----------------------------------------------------------------------------


class Bmc(Strict):
    address: HostAddress
    port: Port = Field(default=623, description="IPMI port; default 623.")
    credentialsRef: CredentialsRef


class HypervisorAccess(Strict):
    """How fleet reaches the libvirt daemon of a hypervisor Machine."""

    uri: str | None = Field(
        default=None,
        description=(
            "libvirt URI; default the Fleet's providers.libvirt.uriTemplate with the Machine's address."
        ),
    )
    credentialsRef: CredentialsRef | None = Field(
        default=None,
        description=(
            "username:password for libvirt SASL authentication; default none (SSH keys or TLS certificates)."
        ),
    )


class Hardware(Strict):
    """What the machine is expected to be; compared with the BMC's inventory, never enforced."""

    product: str | None = None
    serial: str | None = None
    cpus: Annotated[int, Field(ge=1)] | None = Field(default=None, description="Logical CPUs.")
    memory: QuantityInput | None = Field(default=None, description="Installed memory, e.g. 512Gi.")


Role = Literal["hypervisor", "kubernetes-node", "spark-node", "storage", "gateway", "generic"]


class MachineSpec(Strict):
    site: DnsLabel
    rack: DnsLabel
    role: Role = Field(default="generic", description="What the machine is for; default generic.")
    address: HostAddress | None = Field(
        default=None, description="Management address of the operating system (SSH, libvirt); default none."
    )
    bmc: Bmc
    power: Literal["on", "off"] = Field(default="on", description="Desired power state; default on.")
    bootDevice: Literal["disk", "network", "cdrom", "bios"] = Field(
        default="disk", description="Desired boot device; default disk."
    )
    bootPersistent: bool = Field(
        default=True, description="Whether the boot device persists across boots; default true."
    )
    hardware: Hardware | None = Field(default=None, description="Expected hardware; default none.")
    hypervisor: HypervisorAccess | None = Field(
        default=None,
        description="libvirt access of a hypervisor (role hypervisor only); default from the Fleet.",
    )
    config: AnsibleConfig | None = Field(default=None, description="Ansible configuration; default none.")

    @model_validator(mode="after")
    def _hypervisor_access(self) -> MachineSpec:
        if self.hypervisor is not None and self.role != "hypervisor":
            raise ValueError(f"hypervisor access is only for role hypervisor, not {self.role}")
        return self


# --- VirtualMachine ----------------------------------------------------------------------


class Disk(Strict):
    name: DnsLabel
    size: QuantityInput
    pool: DnsLabel = Field(default="default", description="Storage pool; default 'default'.")
    image: str | None = Field(
        default=None, description="Base image the disk is cloned from; default empty disk."
    )


class Nic(Strict):
    network: DnsLabel = Field(description="libvirt network or bridge name.")
    mac: (
        Annotated[str, StringConstraints(pattern=r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$", to_lower=True)] | None
    ) = Field(default=None, description="Fixed MAC address; default generated by the hypervisor.")
    model: Literal["virtio", "e1000", "rtl8139"] = Field(default="virtio", description="Default virtio.")


class VirtualMachineSpec(Strict):
    host: DnsLabel = Field(description="Name of the Machine (role hypervisor) that runs it.")
    vcpus: Annotated[int, Field(ge=1, le=1024)]
    memory: QuantityInput
    disks: list[Disk] = Field(default_factory=list, description="Disks; default none.")
    networks: list[Nic] = Field(default_factory=list, description="Network interfaces; default none.")
    power: Literal["on", "off"] = Field(default="on", description="Desired state; default on.")
    autostart: bool = Field(default=True, description="Start with the hypervisor; default true.")
    address: HostAddress | None = Field(
        default=None, description="Guest address for configuration; default none."
    )
    config: AnsibleConfig | None = Field(default=None, description="Ansible configuration; default none.")

    @model_validator(mode="after")
    def _unique_disks(self) -> VirtualMachineSpec:
        names = [d.name for d in self.disks]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"disk {name!r} is listed twice")
        return self


# --- Cluster -----------------------------------------------------------------------------


class Taint(Strict):
    key: Annotated[str, AfterValidator(_check_label_key)]
    value: Annotated[str, StringConstraints(max_length=63)] = Field(default="", description="Default empty.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


NodeRef = Annotated[
    str,
    StringConstraints(pattern=r"^(machine|virtualmachine)/[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
    Field(description="Address of the node's resource: machine/NAME or virtualmachine/NAME."),
]


class ClusterMember(Strict):
    ref: NodeRef
    labels: Labels = Field(default_factory=dict, description="Node labels fleet applies; default none.")
    taints: list[Taint] = Field(default_factory=list, description="Node taints fleet applies; default none.")
    cordon: bool = Field(default=False, description="Mark the node unschedulable; default false.")


class YuniKornSettings(Strict):
    fallback: Literal["default-queue", "namespace"] = Field(
        default="default-queue",
        description=(
            "Where YuniKorn places a pod that names no SparkPool queue: default-queue puts it in"
            " root.default, namespace in a queue named after its namespace (created on demand)."
            " Either way no application is rejected for want of a queue; default default-queue."
        ),
    )


class ClusterSpec(Strict):
    apiServer: Annotated[str, StringConstraints(pattern=r"^https?://[^\s/]+(:[0-9]+)?/?$")] = Field(
        description="URL of the Kubernetes API server."
    )
    credentialsRef: CredentialsRef
    scheduler: Literal["yunikorn", "volcano", "default"] = Field(
        default="default",
        description="Batch scheduler installed in the cluster; default the Kubernetes scheduler.",
    )
    yunikorn: YuniKornSettings = Field(
        default_factory=YuniKornSettings, description="YuniKorn queue placement (scheduler yunikorn only)."
    )
    members: list[ClusterMember] = Field(min_length=1, description="Nodes of the cluster.")
    objects: list[dict[str, Any]] = Field(
        default_factory=list, description="Cluster-wide Kubernetes objects fleet owns; default none."
    )

    @model_validator(mode="after")
    def _unique_members(self) -> ClusterSpec:
        refs = [m.ref for m in self.members]
        for ref in refs:
            if refs.count(ref) > 1:
                raise ValueError(f"member {ref!r} is listed twice")
        for index, obj in enumerate(self.objects):
            if not isinstance(obj.get("apiVersion"), str) or not isinstance(obj.get("kind"), str):
                raise ValueError(f"objects[{index}] needs apiVersion and kind")
            meta = obj.get("metadata")
            if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
                raise ValueError(f"objects[{index}] needs metadata.name")
        return self


# --- SparkPool ---------------------------------------------------------------------------


ResourceList = dict[
    Annotated[str, StringConstraints(pattern=r"^([a-z0-9.-]+/)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")],
    QuantityInput,
]


class Queue(Strict):
    name: Annotated[
        str,
        StringConstraints(
            max_length=253,
            pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$",
        ),
    ] = Field(
        description=(
            "Queue name: DNS labels joined by '.' (YuniKorn: a queue under root, dots nesting;"
            " Volcano: the Queue object's name)."
        )
    )
    guaranteed: ResourceList = Field(default_factory=dict, description="Guaranteed resources; default none.")
    deserved: ResourceList | None = Field(
        default=None,
        description=(
            "Volcano: the share the queue deserves, above which its pods may be reclaimed; between"
            " guaranteed and max. Default the guaranteed resources. YuniKorn has no such setting."
        ),
    )
    max: ResourceList = Field(default_factory=dict, description="Maximum resources; default unlimited.")


class LimitDefaults(Strict):
    defaultRequest: ResourceList = Field(default_factory=dict, description="Default container requests.")
    default: ResourceList = Field(default_factory=dict, description="Default container limits.")


class PriorityClassSpec(Strict):
    name: DnsLabel
    value: Annotated[int, Field(ge=-2147483648, le=1000000000)]
    preemptionPolicy: Literal["PreemptLowerPriority", "Never"] = Field(
        default="PreemptLowerPriority", description="Default PreemptLowerPriority."
    )


class DedicatedNodes(Strict):
    selector: Labels = Field(min_length=1, description="Labels a Cluster member must have to host the pool.")
    taint: Taint | None = Field(
        default=None, description="Taint put on those nodes; default dedicated=<pool>:NoSchedule."
    )


class DynamicAllocation(Strict):
    enabled: bool = Field(default=True, description="Default true.")
    minExecutors: Annotated[int, Field(ge=0)] = Field(default=0, description="Default 0.")
    maxExecutors: Annotated[int, Field(ge=1)] = Field(default=50, description="Default 50.")
    shuffleTracking: bool = Field(
        default=True,
        description=(
            "Track shuffle files so that executors holding them are kept; default true. Kubernetes has no"
            " external shuffle service, so dynamic allocation needs it (or shuffle block decommissioning)."
        ),
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> DynamicAllocation:
        if self.minExecutors > self.maxExecutors:
            raise ValueError("minExecutors is larger than maxExecutors")
        return self


class PodResources(Strict):
    cores: Annotated[int, Field(ge=1)] = Field(default=1, description="Default 1.")
    memory: QuantityInput = Field(default="4Gi", description="Default 4Gi.")


class SparkSettings(Strict):
    driver: PodResources = Field(default_factory=PodResources, description="Driver pod resources.")
    executor: PodResources = Field(default_factory=PodResources, description="Executor pod resources.")
    dynamicAllocation: DynamicAllocation = Field(
        default_factory=DynamicAllocation, description="Executor scaling."
    )
    defaults: dict[str, str] = Field(default_factory=dict, description="Extra spark-defaults.conf entries.")


class Submitters(Strict):
    groups: list[Annotated[str, StringConstraints(min_length=1, max_length=256)]] = Field(
        default_factory=list, description="Kubernetes groups (as the API server authenticates them)."
    )
    users: list[Annotated[str, StringConstraints(min_length=1, max_length=256)]] = Field(
        default_factory=list, description="Kubernetes user names."
    )


class SparkPoolSpec(Strict):
    cluster: DnsLabel = Field(description="Name of the Cluster the pool lives in.")
    image: ImageRef | None = Field(
        default=None, description="Spark container image; default the Fleet's spark.image."
    )
    namespace: DnsLabel
    queue: Queue
    quota: ResourceList = Field(default_factory=dict, description="ResourceQuota hard limits; default none.")
    limits: LimitDefaults = Field(default_factory=LimitDefaults, description="LimitRange defaults.")
    priorityClass: PriorityClassSpec | None = Field(default=None, description="Default none.")
    nodes: DedicatedNodes
    serviceAccount: DnsLabel = Field(
        default="spark-driver", description="Driver service account; default spark-driver."
    )
    executorServiceAccount: DnsLabel = Field(
        default="spark-executor",
        description="Executor service account, with no rights and no API token; default spark-executor.",
    )
    submitters: Submitters = Field(
        default_factory=Submitters,
        description="Who may submit Spark applications to the pool's namespace; default nobody but admins.",
    )
    spark: SparkSettings = Field(default_factory=SparkSettings, description="Spark settings.")


# --- documents ---------------------------------------------------------------------------


class Document(Strict):
    kind_name: ClassVar[str] = ""
    apiVersion: Literal["fleet/v1alpha1"]
    metadata: Metadata

    @functools.cached_property
    def address(self) -> str:
        return f"{self.kind_name.lower()}/{self.metadata.name}"

    @property
    def reconcile_disabled(self) -> bool:
        """Whether the spec suspends itself (`fleet.dev/reconcile: disabled`)."""
        return self.metadata.annotations.get(RECONCILE_ANNOTATION) == "disabled"


class Fleet(Document):
    """The fleet repo's root document: sites, failure domains, credentials, providers, policies, rules."""

    kind_name: ClassVar[str] = "Fleet"
    kind: Literal["Fleet"]
    spec: FleetSpec


class Machine(Document):
    """A physical server managed through its BMC (IPMI) and configured with Ansible."""

    kind_name: ClassVar[str] = "Machine"
    kind: Literal["Machine"]
    spec: MachineSpec


class VirtualMachine(Document):
    """A libvirt domain on a hypervisor Machine."""

    kind_name: ClassVar[str] = "VirtualMachine"
    kind: Literal["VirtualMachine"]
    spec: VirtualMachineSpec


class Cluster(Document):
    """A Kubernetes cluster: its API endpoint, member nodes and the cluster-wide objects fleet owns."""

    kind_name: ClassVar[str] = "Cluster"
    kind: Literal["Cluster"]
    spec: ClusterSpec


class SparkPool(Document):
    """A slice of a Cluster for Spark: namespace, queue, quota, limits, priority, dedicated nodes."""

    kind_name: ClassVar[str] = "SparkPool"
    kind: Literal["SparkPool"]
    spec: SparkPoolSpec


KINDS: dict[str, type[Document]] = {
    cls.kind_name: cls for cls in (Fleet, Machine, VirtualMachine, Cluster, SparkPool)
}


def _subclasses(cls: type[Strict]) -> list[type[Strict]]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _subclasses(direct))]


PICKLED: dict[str, Any] = {"_restore": _restore, **{cls.__name__: cls for cls in _subclasses(Strict)}}
"""What a pickle of documents may name (the validation cache's unpickler allows nothing else)."""

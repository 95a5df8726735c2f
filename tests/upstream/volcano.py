"""Volcano's own rules for the objects fleet renders: a `Queue` and a `PodGroup` template.

Our lab has no Volcano, so these checkers re-state upstream's rules for tests. Everything is read from
volcano-sh/volcano at tag `VOLCANO_VERSION` (commit `VOLCANO_COMMIT`):

- the CRD schemas, copied verbatim into `data/volcano/` (see the README there), checked with
  `jsonschema` after mapping the Kubernetes structural-schema extensions (`_structural`);
- the queue admission webhook `pkg/webhooks/admission/queues/validate/validate_queue.go`;
- the queue ValidatingAdmissionPolicy `installer/helm/chart/volcano/policy/queues-validating.yaml`
  (used instead of, or alongside, the webhook when the chart's `custom.vap_enable` is true);
- the PodGroup admission webhook `pkg/webhooks/admission/podgroups/validate/validate_podgroup.go`;
- and the Kubernetes code they call: `resource.ParseQuantity` (k8s.io/apimachinery
  pkg/api/resource/quantity.go), `ValidateResourceQuantityValue` / `IsIntegerResourceName`
  (k8s.io/kubernetes pkg/apis/core/validation/validation.go, pkg/apis/core/helper/helpers.go) and the
  custom-resource validator (k8s.io/apiextensions-apiserver pkg/registry/customresource/validator.go).

Where the webhook and the policy differ, an object must satisfy both (a cluster may run either).
Rules that need the cluster's other queues (parent exists, depth <= 5, no hierarchy sub-path clash,
children's guarantee/deserved sums within the parent's, child capability <= ancestor capability) are not
checked here: they are `validateHierarchicalQueue` / `validateHierarchicalQueueResources` in
validate_queue.go.

Each problem is one string: `<rule id>: <what is wrong> [<upstream file> <function or rule>]`.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator, Mapping
from decimal import ROUND_CEILING, ROUND_UP, Context, Decimal, localcontext
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from ruamel.yaml import YAML

VOLCANO_VERSION = "v1.15.1"
VOLCANO_COMMIT = "0a56ed331897f5455916a44d3075671376d731d6"
VOLCANO_REPO = "https://github.com/volcano-sh/volcano"

GROUP_VERSION = "scheduling.volcano.sh/v1beta1"

DATA_DIR = Path(__file__).parent / "data" / "volcano"
QUEUE_SCHEMA_FILE = DATA_DIR / "queues.v1beta1.openapiv3schema.yaml"
PODGROUP_SCHEMA_FILE = DATA_DIR / "podgroups.v1beta1.openapiv3schema.yaml"

QUEUE_CRD = "config/crd/volcano/bases/scheduling.volcano.sh_queues.yaml"
PODGROUP_CRD = "config/crd/volcano/bases/scheduling.volcano.sh_podgroups.yaml"
QUEUE_WEBHOOK = "pkg/webhooks/admission/queues/validate/validate_queue.go"
QUEUE_VAP = "installer/helm/chart/volcano/policy/queues-validating.yaml"
PODGROUP_WEBHOOK = "pkg/webhooks/admission/podgroups/validate/validate_podgroup.go"
DECODE = "pkg/webhooks/schema/schema.go"
K8S_QUANTITY = "k8s.io/apimachinery pkg/api/resource/quantity.go"
K8S_CORE_VALIDATION = "k8s.io/kubernetes pkg/apis/core/validation/validation.go"
K8S_CR_VALIDATOR = "k8s.io/apiextensions-apiserver pkg/registry/customresource/validator.go"

# volcano.sh/apis pkg/apis/scheduling/v1beta1/labels.go
HIERARCHY_ANNOTATION = "volcano.sh/hierarchy"
HIERARCHY_WEIGHTS_ANNOTATION = "volcano.sh/hierarchy-weights"


# ---------------------------------------------------------------------------------------------------------
# Kubernetes quantities


class QuantityError(ValueError):
    """A string resource.ParseQuantity rejects."""


# The CRD's pattern for quantities, but with an integer decimal exponent: the schema's pattern allows
# `1e1.5`, yet ParseQuantity's suffix interpreter reads the exponent with strconv.ParseInt, so the Go
# decode of such an object fails (quantity.go parseQuantityString / suffixHandler.interpret).
_QUANTITY = re.compile(
    r"(?P<sign>[+-]?)(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?"
)
_DECIMAL_SUFFIX = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SUFFIX = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_NANO = Decimal("1e-9")
_MAX_INT64 = Decimal(2**63 - 1)
# Exact arithmetic: enough digits for any quantity a manifest holds, and no exponent overflow.
_CONTEXT = Context(prec=400, Emax=999_999_999, Emin=-999_999_999)


def parse_quantity(value: str | int) -> Decimal:
    """The exact value Kubernetes gives a quantity (`resource.ParseQuantity`, quantity.go).

    Accepts the JSON forms an int-or-string field holds: an integer or a string. As ParseQuantity does,
    a value with digits below 10^-9 is rounded away from zero to the next nano, and a binary-suffixed
    (Ki..Ei) value above 2^63-1 is capped there. Raises QuantityError for what ParseQuantity rejects.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise QuantityError(f"{value!r} is not a quantity (integer or string)")
    text = str(value)
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise QuantityError(f"{text!r} is not a quantity")
    suffix = match["suffix"] or ""
    try:
        with localcontext(_CONTEXT):
            amount = Decimal(match["number"])
            if suffix in _BINARY_SUFFIX:
                amount = amount * (2 ** _BINARY_SUFFIX[suffix])
            elif suffix in _DECIMAL_SUFFIX:
                amount = amount.scaleb(_DECIMAL_SUFFIX[suffix])
            else:
                amount = amount.scaleb(int(suffix[1:]))
            if amount != 0 and amount.as_tuple().exponent < -9:  # type: ignore[operator]
                amount = amount.quantize(_NANO, rounding=ROUND_UP)
            if suffix in _BINARY_SUFFIX and amount > _MAX_INT64:
                amount = _MAX_INT64
    except (ArithmeticError, ValueError) as exc:  # absurd exponents
        raise QuantityError(f"{text!r} is out of range: {exc}") from exc
    return -amount if match["sign"] == "-" else amount


def _milli_value(amount: Decimal) -> int:
    """Quantity.MilliValue: the value in thousandths, rounded up (ScaledValue(-3))."""
    with localcontext(_CONTEXT):
        return int((amount * 1000).to_integral_value(rounding=ROUND_CEILING))


# ---------------------------------------------------------------------------------------------------------
# Kubernetes names

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")
_QUALIFIED_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


def _is_dns1123_subdomain(value: str) -> bool:
    """k8s.io/apimachinery pkg/util/validation/validation.go IsDNS1123Subdomain."""
    return len(value) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(value) is not None


def _is_qualified_name(value: str) -> bool:
    """k8s.io/apimachinery pkg/util/validation/validation.go IsQualifiedName."""
    prefix, slash, name = value.rpartition("/")
    if slash and (not prefix or not _is_dns1123_subdomain(prefix)):
        return False
    return 0 < len(name) <= 63 and _QUALIFIED_NAME_PART.fullmatch(name) is not None


# k8s.io/kubernetes pkg/apis/core/helper/helpers.go integerResources
_INTEGER_RESOURCES = frozenset(
    {
        "pods",
        "resourcequotas",
        "services",
        "replicationcontrollers",
        "secrets",
        "configmaps",
        "persistentvolumeclaims",
        "services.nodeports",
        "services.loadbalancers",
    }
)


def is_integer_resource_name(name: str) -> bool:
    """helpers.go IsIntegerResourceName: the count resources above, or an extended resource.

    IsExtendedResourceName: not native (a native name has no "/" or contains "kubernetes.io/"), no
    "requests." prefix, and "requests." + name is a qualified name. So `nvidia.com/gpu` must be whole.
    """
    if name in _INTEGER_RESOURCES:
        return True
    native = "/" not in name or "kubernetes.io/" in name
    if native or name.startswith("requests."):
        return False
    return _is_qualified_name("requests." + name)


# ---------------------------------------------------------------------------------------------------------
# CRD schemas


def _structural(node: Any) -> Any:
    """A Kubernetes structural schema as JSON Schema (draft 7) that means the same.

    - `x-kubernetes-int-or-string: true` is `type: [integer, string]` (controller-gen also writes the
      equivalent `anyOf`, replaced here so error messages are plain);
    - an object schema with `properties` and neither `additionalProperties` nor
      `x-kubernetes-preserve-unknown-fields` closes: the API server drops unknown fields, and rejects
      them under field validation Strict (kubectl's default since 1.27, and server-side apply);
    - `pattern` is RE2, where `$` is the end of the text; Python's `$` also matches before a final
      newline, so a trailing `$` becomes `\\Z`;
    - `default`, `x-kubernetes-list-type: atomic`, `x-kubernetes-map-type` and descriptions do not
      affect validity of a single object and are left for jsonschema to ignore.
    """
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in {"properties", "patternProperties"}:
            out[key] = {name: _structural(sub) for name, sub in value.items()}
        elif key in {"items", "additionalProperties", "not", "anyOf", "allOf", "oneOf"}:
            out[key] = _structural(value)
        elif (
            key == "pattern" and isinstance(value, str) and value.endswith("$") and not value.endswith("\\$")
        ):
            out[key] = value[:-1] + r"\Z"
        else:
            out[key] = value
    if out.get("x-kubernetes-int-or-string") is True:
        out.pop("anyOf", None)
        out["type"] = ["integer", "string"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and out.get("x-kubernetes-preserve-unknown-fields") is not True
    ):
        out["additionalProperties"] = False
    return out


_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("int32")
def _int32(instance: object) -> bool:
    # Go decodes into an int32 field; a larger number fails the webhook's decode (schema.go).
    return not isinstance(instance, int) or -(2**31) <= instance < 2**31


@_FORMATS.checks("int64")
def _int64(instance: object) -> bool:
    return not isinstance(instance, int) or -(2**63) <= instance < 2**63


@cache
def _validator(path: Path) -> jsonschema.Draft7Validator:
    schema = _structural(YAML(typ="safe").load(path.read_text(encoding="utf-8")))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, format_checker=_FORMATS)


def _schema_copy(path: Path) -> dict[str, Any]:
    schema = _validator(path).schema
    assert isinstance(schema, Mapping)
    return copy.deepcopy(dict(schema))


def queue_schema() -> dict[str, Any]:
    """The Queue v1beta1 openAPIV3Schema as checked (after `_structural`); a copy."""
    return _schema_copy(QUEUE_SCHEMA_FILE)


def podgroup_schema() -> dict[str, Any]:
    """The PodGroup v1beta1 openAPIV3Schema as checked (after `_structural`); a copy."""
    return _schema_copy(PODGROUP_SCHEMA_FILE)


def _path(parts: Iterator[Any] | Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<root>"


def _schema_problems(obj: object, path: Path, crd: str) -> list[str]:
    errors = sorted(
        _validator(path).iter_errors(obj), key=lambda e: (list(map(str, e.absolute_path)), e.message)
    )
    return [
        f"schema: {_path(error.absolute_path)}: {error.message} [{crd} v1beta1 openAPIV3Schema]"
        for error in errors
    ]


# ---------------------------------------------------------------------------------------------------------
# Shared object checks


def _type_meta_problems(obj: Mapping[str, Any], kind: str) -> list[str]:
    # customResourceValidator.ValidateTypeMeta: kind and apiVersion must be the CRD's.
    problems = []
    if obj.get("apiVersion") != GROUP_VERSION:
        problems.append(
            f"type-meta: apiVersion {obj.get('apiVersion')!r} must be {GROUP_VERSION!r}"
            f" [{K8S_CR_VALIDATOR} ValidateTypeMeta]"
        )
    if obj.get("kind") != kind:
        problems.append(
            f"type-meta: kind {obj.get('kind')!r} must be {kind!r} [{K8S_CR_VALIDATOR} ValidateTypeMeta]"
        )
    return problems


def _metadata_problems(obj: Mapping[str, Any], *, name_required: bool) -> list[str]:
    metadata = obj.get("metadata")
    if metadata is None and not name_required:
        return []
    if not isinstance(metadata, Mapping):
        return ["metadata: must be an object with a name [ObjectMeta]"]
    problems = []
    name = metadata.get("name")
    if name is None:
        if name_required and not metadata.get("generateName"):
            problems.append(f"metadata-name: metadata.name is required [{K8S_CR_VALIDATOR} Validate]")
    elif not isinstance(name, str) or not _is_dns1123_subdomain(name):
        # customResourceValidator.Validate: ValidateObjectMetaAccessor(..., NameIsDNSSubdomain, ...)
        problems.append(
            f"metadata-name: {name!r} must be a DNS-1123 subdomain (lowercase alphanumerics, '-', '.';"
            f" at most 253) [{K8S_CR_VALIDATOR} Validate NameIsDNSSubdomain]"
        )
    for field in ("labels", "annotations"):
        value = metadata.get(field)
        if value is not None and not (
            isinstance(value, Mapping)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        ):
            problems.append(
                f"metadata-{field}: metadata.{field} must map strings to strings [ObjectMeta decode]"
            )
    return problems


def _quantities(
    resources: object, where: str, *, source: str
) -> tuple[dict[str, Decimal], dict[str, object], list[str]]:
    """The parsed quantities of a resource list, its raw values, and decode problems."""
    if not isinstance(resources, Mapping):
        return {}, {}, []
    parsed: dict[str, Decimal] = {}
    problems = []
    for name, raw in resources.items():
        try:
            parsed[str(name)] = parse_quantity(raw)
        except QuantityError as exc:
            problems.append(
                f"quantity-format: {where}[{name}]: {exc} [{source} -> {K8S_QUANTITY} ParseQuantity]"
            )
    return parsed, dict(resources), problems


def _get(obj: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


# ---------------------------------------------------------------------------------------------------------
# Queue


def queue_problems(obj: dict[str, Any]) -> list[str]:
    """Why Volcano (its CRD schema, admission webhook and admission policy) would refuse this Queue.

    An empty list means none of the single-object rules object. See the module docstring for what
    needs other queues and is not checked. A `null` value fails the schema here although the API
    server would drop it; fleet should not render nulls. `weight: 0` fails the schema (minimum 1) although
    the mutating webhook turns it into 1 on CREATE: an UPDATE is not mutated.
    """
    problems = _type_meta_problems(obj, "Queue")
    problems += _metadata_problems(obj, name_required=True)
    problems += _schema_problems(obj, QUEUE_SCHEMA_FILE, QUEUE_CRD)
    spec = obj.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}

    # schema.go DecodeQueue decodes every quantity with resource.ParseQuantity before any rule runs.
    capability, capability_raw, decode = _quantities(spec.get("capability"), "spec.capability", source=DECODE)
    problems += decode
    deserved, deserved_raw, decode = _quantities(spec.get("deserved"), "spec.deserved", source=DECODE)
    problems += decode
    guarantee, guarantee_raw, decode = _quantities(
        _get(spec, "guarantee", "resource"), "spec.guarantee.resource", source=DECODE
    )
    problems += decode
    clusters = spec.get("extendClusters")
    for index, cluster in enumerate(clusters if isinstance(clusters, list) else []):
        problems += _quantities(
            _get(cluster, "capacity"), f"spec.extendClusters[{index}].capacity", source=DECODE
        )[2]
    for keys in (("status", "allocated"), ("status", "reservation", "resource")):
        problems += _quantities(_get(obj, *keys), ".".join(keys), source=DECODE)[2]

    # validate_queue.go validateResourceQuantityOfQueue -> k8scorevalid.ValidateResourceQuantityValue:
    # every capability, deserved and guarantee quantity is >= 0, and whole for integer resources.
    for where, values in (
        ("spec.capability", capability),
        ("spec.deserved", deserved),
        ("spec.guarantee.resource", guarantee),
    ):
        for name, amount in values.items():
            if amount < 0:
                problems.append(
                    f"quantity-nonnegative: {where}[{name}]={amount} must be greater than or equal to 0"
                    f" [{QUEUE_WEBHOOK} validateResourceQuantityOfQueue -> {K8S_CORE_VALIDATION}"
                    " ValidateNonnegativeQuantity]"
                )
            elif is_integer_resource_name(name) and _milli_value(amount) % 1000 != 0:
                problems.append(
                    f"quantity-integer: {where}[{name}]={amount} must be an integer ({name} is an integer"
                    f" resource) [{QUEUE_WEBHOOK} validateResourceQuantityOfQueue -> {K8S_CORE_VALIDATION}"
                    " ValidateResourceQuantityValue]"
                )

    # VAP queue-validation-policy: "capability/deserved/guarantee resource values must not be empty".
    for where, raw_values in (
        ("spec.capability", capability_raw),
        ("spec.deserved", deserved_raw),
        ("spec.guarantee.resource", guarantee_raw),
    ):
        for name, raw in raw_values.items():
            if raw == "":
                problems.append(f"quantity-nonempty: {where}[{name}] must not be empty [{QUEUE_VAP}]")

    # validate_queue.go validateResourceQuantityOfQueue: for every resource in guarantee, deserved must
    # hold it ("deserved[r] must be >= guarantee[r]=..." with value <nil>) and deserved[r] >= guarantee[r]
    # (Quantity.Cmp, any resource name: cpu, memory, pods, nvidia.com/gpu, ...).
    # VAP, same rule: "When guarantee is set, deserved must also be set" ... message "must be >= guarantee".
    for name, wanted in guarantee.items():
        if name not in deserved_raw:
            problems.append(
                f"deserved-covers-guarantee: spec.deserved[{name}] is missing but spec.guarantee.resource"
                f"[{name}]={guarantee_raw[name]}; deserved must hold every guaranteed resource, >= it"
                f" [{QUEUE_WEBHOOK} validateResourceQuantityOfQueue; {QUEUE_VAP} 'must be >= guarantee']"
            )
        elif name in deserved and deserved[name] < wanted:
            problems.append(
                f"deserved-ge-guarantee: spec.deserved[{name}]={deserved_raw[name]} must be >="
                f" spec.guarantee.resource[{name}]={guarantee_raw[name]}"
                f" [{QUEUE_WEBHOOK} validateResourceQuantityOfQueue; {QUEUE_VAP} 'must be >= guarantee']"
            )

    # validate_queue.go validateResourceQuantityOfQueue: deserved[r] <= capability[r] for every r in both;
    # a resource absent from capability is unlimited. VAP, same rule: "must be <= capability".
    for name, share in deserved.items():
        if name in capability and share > capability[name]:
            problems.append(
                f"deserved-le-capability: spec.deserved[{name}]={deserved_raw[name]} must be <="
                f" spec.capability[{name}]={capability_raw[name]}"
                f" [{QUEUE_WEBHOOK} validateResourceQuantityOfQueue; {QUEUE_VAP} 'must be <= capability']"
            )

    # VAP: the comparisons call CEL quantity(), whose one overload takes a string; an int-or-string field
    # holding an integer is an int in CEL, so the call errors and failurePolicy Fail denies the request.
    compared: dict[tuple[str, str], object] = {}
    for name in guarantee_raw.keys() & deserved_raw.keys():
        compared[("spec.deserved", name)] = deserved_raw[name]
        compared[("spec.guarantee.resource", name)] = guarantee_raw[name]
    for name in capability_raw.keys() & deserved_raw.keys():
        compared[("spec.deserved", name)] = deserved_raw[name]
        compared[("spec.capability", name)] = capability_raw[name]
    for (where, name), raw in sorted(compared.items()):
        if not isinstance(raw, str):
            problems.append(
                f"quantity-string-for-cel: {where}[{name}]={raw!r} must be a string: the policy compares it"
                f" with CEL quantity(), which takes only strings [{QUEUE_VAP}]"
            )

    # validate_queue.go validateStateOfQueue (on status.state): "" , Open or Closed. VAP: same rule.
    state = _get(obj, "status", "state")
    if state not in (None, "", "Open", "Closed"):
        problems.append(
            f"queue-state: status.state {state!r} must be in [Open Closed]"
            f" [{QUEUE_WEBHOOK} validateStateOfQueue; {QUEUE_VAP}]"
        )

    problems += _hierarchy_annotation_problems(obj)

    # validate_queue.go validateHierarchicalQueue: "queue %s cannot use itself as parent".
    parent, queue_name = spec.get("parent"), _get(obj, "metadata", "name")
    if parent not in (None, "", "root") and parent == queue_name:
        problems.append(
            f"parent-not-self: queue {queue_name!r} cannot use itself as parent"
            f" [{QUEUE_WEBHOOK} validateHierarchicalQueue]"
        )
    return problems


_VAP_WEIGHT = re.compile(r"[0-9]+(\.[0-9]+)?")
_GO_FLOAT = re.compile(
    r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(inf|infinity)|nan", re.IGNORECASE
)


def _hierarchy_annotation_problems(obj: Mapping[str, Any]) -> list[str]:
    annotations = _get(obj, "metadata", "annotations")
    if not isinstance(annotations, Mapping):
        return []
    hierarchy = annotations.get(HIERARCHY_ANNOTATION, "")
    weights = annotations.get(HIERARCHY_WEIGHTS_ANNOTATION, "")
    if not isinstance(hierarchy, str) or not isinstance(weights, str) or (hierarchy == "" and weights == ""):
        return []
    problems = []
    # VAP: both annotations or neither ("(hierarchyPath == "" && hierarchyWeights == "") || (both != "" &&
    # same size)"); the webhook would split "" into one empty part.
    if hierarchy == "" or weights == "":
        problems.append(
            f"hierarchy-annotations-paired: {HIERARCHY_ANNOTATION} and {HIERARCHY_WEIGHTS_ANNOTATION}"
            f" must be set together [{QUEUE_VAP}]"
        )
    # validate_queue.go validateHierarchicalAttributes: "must have the same length with" (split on "/").
    paths, parts = hierarchy.split("/"), weights.split("/")
    if len(paths) != len(parts):
        problems.append(
            f"hierarchy-length: {HIERARCHY_ANNOTATION} {hierarchy!r} must have the same length with"
            f" {HIERARCHY_WEIGHTS_ANNOTATION} {weights!r}"
            f" [{QUEUE_WEBHOOK} validateHierarchicalAttributes; {QUEUE_VAP}]"
        )
        return problems
    for weight in parts if weights else []:
        # Webhook: strconv.ParseFloat must succeed and the value be > 0. VAP: weight.matches(
        # '^[0-9]+(\.[0-9]+)?$') && double(weight) > 0 (so no signs, exponents, inf or nan).
        go_float = float(weight) if _GO_FLOAT.fullmatch(weight) else None
        if go_float is None or not _VAP_WEIGHT.fullmatch(weight) or math.isnan(go_float) or not go_float > 0:
            problems.append(
                f"hierarchy-weight: {weight!r} in {HIERARCHY_WEIGHTS_ANNOTATION} {weights!r} must be a plain"
                f" decimal number larger than 0 [{QUEUE_WEBHOOK} validateHierarchicalAttributes; {QUEUE_VAP}]"
            )
    return problems


# ---------------------------------------------------------------------------------------------------------
# PodGroup (template)


def podgroup_problems(obj: dict[str, Any]) -> list[str]:
    """Why Volcano would refuse a PodGroup built from this template (Spark's podGroupTemplateFile).

    A template holds apiVersion, kind and spec; metadata may be absent (Spark names the PodGroup, and
    `spark.kubernetes.job.queue`, when set, replaces spec.queue). Not checked: the webhook's
    `checkQueueState` (the queue must exist and be Open), which needs the cluster.
    """
    problems = _type_meta_problems(obj, "PodGroup")
    problems += _metadata_problems(obj, name_required=False)
    problems += _schema_problems(obj, PODGROUP_SCHEMA_FILE, PODGROUP_CRD)
    spec = obj.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}

    # schema.go DecodePodGroup decodes minResources with resource.ParseQuantity.
    problems += _quantities(spec.get("minResources"), "spec.minResources", source=DECODE)[2]

    # validate_podgroup.go validateNetworkTopology: highestTierAllowed and highestTierName exclude each
    # other, in spec.networkTopology and in spec.subGroupPolicy[].networkTopology (upstream reports the
    # first offending policy only).
    def both_tiers(topology: object) -> bool:
        return (
            isinstance(topology, Mapping)
            and topology.get("highestTierAllowed") is not None
            and bool(topology.get("highestTierName"))
        )

    offending = ["spec.networkTopology"] if both_tiers(spec.get("networkTopology")) else []
    policies = spec.get("subGroupPolicy")
    offending += [
        f"spec.subGroupPolicy[{index}].networkTopology"
        for index, policy in enumerate(policies if isinstance(policies, list) else [])
        if both_tiers(_get(policy, "networkTopology"))
    ][:1]
    problems += [
        f"network-topology-tier: {where}: must not specify 'highestTierAllowed' and 'highestTierName'"
        f" simultaneously [{PODGROUP_WEBHOOK} validateNetworkTopology]"
        for where in offending
    ]
    return problems

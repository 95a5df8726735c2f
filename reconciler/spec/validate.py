"""Validate the documents of one file on their own: YAML, kind, model, secrets, rules.

The result of a file depends only on its bytes and on the `FileSettings` (limits
and organisation rules), so it can be cached by blob id. What a document says
about other documents is kept as compact `Facts` for the cross-document checks
of `references.py`; full models are built again only when a caller needs them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from pydantic import BaseModel, ValidationError

from reconciler import __version__
from reconciler.bounded import redact
from reconciler.spec import models
from reconciler.spec.diagnostics import Diagnostic, Severity, YamlPath, closest, error, warning
from reconciler.spec.results import Facts, FileResult
from reconciler.spec.secrets import find_literal_secrets, may_hold_secrets
from reconciler.spec.spark import pool_problems
from reconciler.spec.yamlload import Limits, Locator, load_yaml

KIND_NAMES = tuple(models.KINDS)


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    name: str
    kinds: tuple[str, ...]
    message: str
    severity: str
    schema_json: str


@cache
def rules_digest() -> str:
    """A digest of the validation code itself, so that cached results of a file never outlive
    a change of the rules they were checked by (an upgrade that adds a check sees it at once)."""
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


@dataclasses.dataclass(frozen=True, slots=True)
class FileSettings:
    """Everything besides a file's bytes that its validation depends on."""

    limits: Limits = dataclasses.field(default_factory=Limits)
    rules: tuple[Rule, ...] = ()

    def fingerprint(self) -> str:
        payload = json.dumps(
            [
                __version__,
                rules_digest(),
                dataclasses.asdict(self.limits),
                [dataclasses.astuple(r) for r in self.rules],
            ],
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def settings_from_fleet(fleet: models.Fleet | None) -> FileSettings:
    if fleet is None:
        return FileSettings()
    spec = fleet.spec
    return FileSettings(
        limits=Limits(max_file_bytes=spec.limits.maxFileBytes, max_depth=spec.limits.maxDepth),
        rules=tuple(
            Rule(r.name, tuple(r.kinds), r.message, r.severity, json.dumps(r.schema_, sort_keys=True))
            for r in spec.rules
        ),
    )


def _credential_name(ref: Any) -> str | None:
    return ref if isinstance(ref, str) else None


def facts_of(document: models.Document, index: int) -> Facts:
    name, labels = document.metadata.name, dict(document.metadata.labels)
    if isinstance(document, models.Machine):
        s = document.spec
        hw = s.hardware
        return (
            "Machine",
            name,
            index,
            labels,
            (
                s.site,
                s.rack,
                s.role,
                s.bmc.address,
                s.bmc.port,
                _credential_name(s.bmc.credentialsRef),
                hw.cpus if hw else None,
                hw.memory if hw else None,
                s.config.credential_names() if s.config else (),
            ),
        )
    if isinstance(document, models.VirtualMachine):
        v = document.spec
        secrets = v.config.credential_names() if v.config else ()
        return ("VirtualMachine", name, index, labels, (v.host, v.vcpus, v.memory, v.power, secrets))
    if isinstance(document, models.Cluster):
        c = document.spec
        members = tuple((m.ref, tuple(sorted(m.labels.items()))) for m in c.members)
        return (
            "Cluster",
            name,
            index,
            labels,
            (
                _credential_name(c.credentialsRef),
                members,
                c.scheduler,
                c.yunikorn.fallback,
                isinstance(c.credentialsRef, models.CredentialSource)
                and c.credentialsRef.kubernetesSecret is not None,
            ),
        )
    if isinstance(document, models.SparkPool):
        p = document.spec
        return (
            "SparkPool",
            name,
            index,
            labels,
            (
                p.cluster,
                tuple(sorted(p.nodes.selector.items())),
                p.namespace,
                _pool_taint(name, p),
                p.image is not None,
                p.queue.deserved is not None,
                p.queue.name,
            ),
        )
    return (document.kind_name, name, index, labels, ())


def _pool_taint(name: str, pool: models.SparkPoolSpec) -> tuple[str, str, str]:
    """(key, value, effect) of the taint a pool puts on its nodes (default dedicated=<pool>)."""
    taint = pool.nodes.taint
    if taint is None:
        return ("dedicated", name, "NoSchedule")
    return (taint.key, taint.value, taint.effect)


# --- pydantic errors -> diagnostics ------------------------------------------------------


@cache
def _all_field_names() -> tuple[str, ...]:
    names: set[str] = set()

    def collect(model: type[BaseModel]) -> None:
        for field_name, info in model.model_fields.items():
            names.add(info.alias or field_name)
        for sub in model.__subclasses__():
            collect(sub)

    collect(models.Strict)
    return tuple(sorted(names))


_PATTERN_MESSAGES = {
    models.DNS_LABEL_PATTERN: "must be a DNS-1123 label (a-z, 0-9 and '-', alphanumeric at both ends)",
    models.LABEL_KEY_PATTERN: "is not a label key (optional DNS prefix and /, then 63 letters, digits, -_.)",
    models.IMAGE_PATTERN: "is not a container image (registry/repository:tag or @sha256:digest)",
    models.LABEL_VALUE_PATTERN: "is not a label value (up to 63 letters, digits, -_., alphanumeric at ends)",
}


def _align(loc: Sequence[str | int], value: Any) -> YamlPath:
    """Drop the union tags pydantic adds to an error location, keep the path into the data."""
    path: list[str | int] = []
    for position, part in enumerate(loc):
        last = position == len(loc) - 1
        if isinstance(value, dict) and part in value:
            path.append(part)
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            path.append(part)
            value = value[part]
        elif last and isinstance(value, dict):
            path.append(part)
    return tuple(path)


def _message(err: dict[str, Any], path: YamlPath) -> tuple[str, str, str]:
    kind = err["type"]
    field = ".".join("(empty key)" if p is None else str(p) for p in path) or "document"
    if kind == "extra_forbidden":
        name = str(path[-1]) if path else "?"
        close = closest(name, _all_field_names(), cutoff=0.7)
        hint = (
            f"did you mean {close!r}?"
            if close is not None
            else "remove it; see `fleet schema` for the fields of each kind"
        )
        return "unknown-field", f"unknown field {field!r}", hint
    if kind == "missing":
        return "missing-field", f"required field {field!r} is missing", f"add {str(path[-1])!r}"
    message = str(err["msg"])
    ctx = err.get("ctx") or {}
    friendly = _PATTERN_MESSAGES.get(str(ctx.get("pattern"))) if kind == "string_pattern_mismatch" else None
    if friendly is not None:
        message = friendly
    elif message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return "invalid-value", f"{field}: {message}", "see `fleet schema` for the allowed values"


def _model_diagnostics(
    path: str, index: int, raw: dict[str, Any], exc: ValidationError, address: str | None
) -> list[Diagnostic]:
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        field_path = _align(err["loc"], raw)
        code, message, hint = _message(dict(err), field_path)
        out.append(
            error(code, message, path, address=address, hint=hint, doc_index=index, field_path=field_path)
        )
    return out


# --- organisation rules ------------------------------------------------------------------


@cache
def _validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json))


def _describe_failure(failure: Any) -> str:
    """What a rule wants, from the schema's side only: jsonschema's own messages repeat the
    offending value, which may be a secret."""
    where = ".".join(str(p) for p in failure.absolute_path) or "document"
    if failure.validator == "required":
        return f"{where}: {failure.message}"
    wanted = json.dumps(failure.validator_value, sort_keys=True, default=str)
    if len(wanted) > 80:
        wanted = wanted[:77] + "..."
    return f"{where} does not satisfy {failure.validator} {wanted}"


def _rule_diagnostics(
    path: str, index: int, kind: str, raw: dict[str, Any], rules: Sequence[Rule], address: str
) -> list[Diagnostic]:
    out = []
    for rule in rules:
        if kind not in rule.kinds:
            continue
        validator = _validator(rule.schema_json)
        if validator.is_valid(raw):
            continue
        for failure in validator.iter_errors(raw):
            make = error if rule.severity == "error" else warning
            out.append(
                make(
                    "org-rule",
                    f"rule {rule.name!r}: {rule.message} ({_describe_failure(failure)})",
                    path,
                    address=address,
                    hint="fix the document, or change the rule in fleet.yaml spec.rules",
                    doc_index=index,
                    field_path=tuple(failure.absolute_path),
                )
            )
    return out


# --- one document, one file --------------------------------------------------------------


def _spark_diagnostics(path: str, index: int, pool: models.SparkPool) -> list[Diagnostic]:
    make = {"error": error, "warning": warning}
    return [
        make[p.severity](
            p.code,
            p.message,
            path,
            address=pool.address,
            doc_index=index,
            field_path=p.field_path,
            hint=p.hint,
        )
        for p in pool_problems(pool)
    ]


def _annotation_diagnostics(
    path: str, index: int, raw: dict[str, Any], address: str | None
) -> list[Diagnostic]:
    """fleet's own annotations take only the values fleet knows: a typo must not leave a
    resource someone meant to suspend under reconciliation."""
    meta = raw.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    value = annotations.get(models.RECONCILE_ANNOTATION) if isinstance(annotations, dict) else None
    if not isinstance(value, str) or value in models.RECONCILE_VALUES:
        return []
    close = closest(value.strip().lower(), models.RECONCILE_VALUES, cutoff=0.5)
    return [
        error(
            "invalid-annotation",
            f"annotation {models.RECONCILE_ANNOTATION} is {value!r}; it takes 'disabled' or 'enabled'",
            path,
            address=address,
            doc_index=index,
            field_path=("metadata", "annotations", models.RECONCILE_ANNOTATION),
            hint=(f"did you mean {close!r}? " if close else "")
            + "'disabled' suspends the resource (observed, never changed), as `fleet suspend` does;"
            " 'enabled' or no annotation reconciles it",
        )
    ]


def _address_of(raw: dict[str, Any]) -> str | None:
    kind, meta = raw.get("kind"), raw.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if isinstance(kind, str) and isinstance(name, str):
        return f"{kind.lower()}/{name}"
    return None


def validate_document(
    path: str, index: int, raw: Any, settings: FileSettings, scan_secrets: bool
) -> tuple[models.Document | None, list[Diagnostic]]:
    if not isinstance(raw, dict):
        shape = "a list" if isinstance(raw, list) else f"a {type(raw).__name__} value"
        return None, [
            error(
                "not-a-mapping",
                f"document is {shape}, not a mapping",
                path,
                doc_index=index,
                hint="a spec document is a mapping with apiVersion, kind, metadata and spec",
            )
        ]
    address = _address_of(raw)
    problems: list[Diagnostic] = []
    secrets: list[str] = []
    if scan_secrets:
        for field_path, reason in find_literal_secrets(raw):
            secrets.append(str(_value_at(raw, field_path)))
            problems.append(
                error(
                    "secret-literal",
                    reason,
                    path,
                    address=address,
                    doc_index=index,
                    field_path=field_path,
                    hint="remove it; refer to the secret with credentialsRef (env, file or kubernetesSecret)",
                )
            )
    kind = raw.get("kind")
    if "kind" not in raw:
        return None, [
            *problems,
            error(
                "missing-kind",
                "document has no 'kind'",
                path,
                doc_index=index,
                hint=f"add kind: one of {', '.join(KIND_NAMES)}",
            ),
        ]
    if not isinstance(kind, str) or kind not in models.KINDS:
        close = closest(str(kind), KIND_NAMES)
        hint = f"did you mean {close!r}?" if close is not None else f"use one of {', '.join(KIND_NAMES)}"
        return None, [
            *problems,
            error(
                "unknown-kind",
                f"unknown kind {kind!r}",
                path,
                doc_index=index,
                field_path=("kind",),
                hint=hint,
            ),
        ]
    if raw.get("apiVersion") != models.API_VERSION:
        problems.append(
            error(
                "bad-api-version",
                f"apiVersion is {raw.get('apiVersion')!r}, expected {models.API_VERSION!r}",
                path,
                address=address,
                doc_index=index,
                field_path=("apiVersion",),
                hint=f"set apiVersion: {models.API_VERSION}",
            )
        )
    document: models.Document | None = None
    try:
        document = models.KINDS[kind].model_validate(raw)
    except ValidationError as exc:
        bad_api = any(p.code == "bad-api-version" for p in problems)
        problems.extend(
            d
            for d in _model_diagnostics(path, index, raw, exc, address)
            if not (bad_api and d.field_path == ("apiVersion",))
        )
    if isinstance(document, models.SparkPool):
        problems.extend(_spark_diagnostics(path, index, document))
    problems.extend(_annotation_diagnostics(path, index, raw, address))
    if address is not None and settings.rules:
        problems.extend(_rule_diagnostics(path, index, kind, raw, settings.rules, address))
    if any(p.severity is Severity.ERROR for p in problems):
        document = None
    if secrets:
        problems = [_redacted(p, secrets) for p in problems]
    return document, problems


def _value_at(raw: Any, field_path: YamlPath) -> Any:
    for part in field_path:
        raw = raw[part]
    return raw


def _redacted(diagnostic: Diagnostic, secrets: Sequence[str]) -> Diagnostic:
    """Other checks may quote a value; never when that value is a secret (nor the start or the end
    of one that a shortened message still shows)."""
    message = redact(diagnostic.message, secrets)
    return diagnostic if message == diagnostic.message else dataclasses.replace(diagnostic, message=message)


def _located(diagnostics: list[Diagnostic], data: bytes) -> list[Diagnostic]:
    locate = Locator(data)
    out = []
    for d in diagnostics:
        if d.line == 0:
            line, col = locate(d.doc_index, d.field_path)
            d = dataclasses.replace(d, line=line, col=col)
        out.append(d)
    return out


def _placeholder_facts(raw: Any, index: int) -> Facts | None:
    """An invalid document still claims its name, so references to it do not cascade into errors."""
    if not isinstance(raw, dict) or raw.get("kind") not in models.KINDS:
        return None
    meta = raw.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if raw.get("kind") == "Fleet":
        name = name if isinstance(name, str) else ""
    if not isinstance(name, str):
        return None
    return (str(raw["kind"]), name, index, {}, None)


_KIND_LINE = re.compile(rb"^kind:[ \t]*[\"']?([A-Za-z]+)", re.M)
_NAME_LINE = re.compile(rb"^[ \t]+name:[ \t]*[\"']?([a-z0-9][-a-z0-9]{0,62})[\"']?[ \t]*(?:#.*)?$", re.M)
_DOCUMENT_START = re.compile(rb"^---", re.M)


def _salvaged_facts(data: bytes) -> list[Facts]:
    """The kinds and names a file that does not parse seems to declare, read line by line.

    The file's own error refuses the revision; these placeholders only keep references to its
    documents from being reported as missing too (one syntax error, not one per reference)."""
    facts: list[Facts] = []
    for index, chunk in enumerate(_DOCUMENT_START.split(data)):
        kind, name = _KIND_LINE.search(chunk), _NAME_LINE.search(chunk)
        if kind is None or name is None:
            continue
        kind_name = kind.group(1).decode()
        if kind_name in models.KINDS and kind_name != "Fleet":
            facts.append((kind_name, name.group(1).decode(), index, {}, None))
    return facts


def validate_file(path: str, data: bytes, settings: FileSettings) -> FileResult:
    """Load and validate every document of one file; the valid ones are kept as models."""
    loaded = load_yaml(path, data, settings.limits)
    problems = list(loaded.diagnostics)
    facts: list[Facts] = []
    fleet: models.Fleet | None = None
    scan_secrets = may_hold_secrets(data.decode("utf-8", "replace")) if loaded.documents else False
    kept: list[tuple[int, models.Document]] = []
    for index, raw in enumerate(loaded.documents):
        if raw is None:
            continue
        document, found = validate_document(path, index, raw, settings, scan_secrets)
        problems.extend(found)
        placeholder = _placeholder_facts(raw, index) if document is None else None
        if placeholder is not None:
            facts.append(placeholder)
        if document is not None:
            facts.append(facts_of(document, index))
            if isinstance(document, models.Fleet) and fleet is None:
                fleet = document  # a second Fleet document is reported by the references check
            kept.append((index, document))
    if any(p.code == "yaml-syntax" for p in problems):
        facts.extend(_salvaged_facts(data))
    if problems:
        problems = _located(problems, data)
    return FileResult(path, problems, facts, kept, fleet)


def validate_files(batch: Sequence[tuple[str, bytes]], settings: FileSettings) -> list[FileResult]:
    """Validate several files; the unit of work handed to a worker process."""
    return [validate_file(path, data, settings) for path, data in batch]

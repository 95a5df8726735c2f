"""Apache Spark's own rules for what fleet renders per Spark pool.

fleet renders a `spark-defaults.conf`, driver/executor pod templates, a driver Role and a Role for people
who submit jobs. The lab has no Spark, so this module re-states upstream's rules for tests. Supported
range: `SPARK_VERSIONS` (newest 3.5, 4.0 and 4.1 patch releases whose docs are published).

Where each fact comes from (each pinned to a published artifact of the release):

- Documented keys (`data/spark/documented-keys-<version>.txt`): the property tables (first
  `<td><code>spark.…</code></td>` column) of `docs/configuration.md` and `docs/running-on-kubernetes.md`
  as released, read from the published render in apache/spark-website `site/docs/<version>/…html`
  (commits in `DOCS_SOURCE`). configuration.md pulls in the generated SQL tables
  (`generated-runtime-sql-config-table.html`, `generated-static-sql-config-table.html`); those rows
  were regenerated from the release jars of PyPI `pyspark==<version>` with
  `org.apache.spark.sql.api.python.PythonSQLUtils.listRuntimeSQLConfigs/listStaticSQLConfigs` (what
  `sql/gen-sql-config-docs.py` calls) and spot-checked against the rendered tables.
- Kubernetes API calls, container names, memory overhead and dynamic-allocation rules: the compiled
  classes of the same `pyspark==<version>` wheels (`deps/jars/spark-kubernetes_*.jar`,
  `spark-core_*.jar`), read with `javap -c -p` and the Procyon decompiler; default values and `since`
  versions of config entries via `ConfigEntry.findEntry(key)` on those jars. Paths cited below are
  the Scala sources those classes are compiled from. The Volcano module is not in the PyPI jars
  (built without `-Pvolcano`); its `VolcanoFeatureStep.scala` was read from apache/spark at commit
  `VOLCANO_STEP_COMMIT` (not a release tag).
- fabric8 semantics (what HTTP verb a DSL call sends): kubernetes-client jars shipped in the same
  wheels (`FABRIC8_VERSION`): `BaseOperation.deleteAll` sends one DELETE on the collection URL with the
  label/field selector (Kubernetes verb `deletecollection`; on HTTP 405 it falls back to list + delete
  each), `HasMetadataOperation.edit` = GET (when bound by name) + JSON PATCH, `scale(int)` = GET and
  PUT on the `/scale` subresource, `waitUntilReady` = an informer (list + watch), `serverSideApply` =
  PATCH `application/apply-patch+yaml` (the API server also authorizes `create` when the apply creates
  the object: kubernetes `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go`,
  `createAuthorizerAttributes`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import NamedTuple

SPARK_VERSIONS: tuple[str, ...] = ("v3.5.9", "v4.0.4", "v4.1.3")
"""Newest patch of each supported line whose docs are published (spark-website `site/docs/<v>/`).

PyPI also serves 4.0.5 and 4.1.4 (docs not yet published when this was read); their jars add the keys
`spark.history.fs.eventLog.maxLineLength`, `spark.streaming.raw.maxBlockSizeBytes`,
`spark.ui.actionsViaGetEnabled` (and 4.1.4 `spark.shuffle.service.verifyBlockPathsAtRead`), see
`NEWER_PATCH_NEW_KEYS`. 4.2.x and 4.3.x exist too but are outside the range."""

NEWER_PATCH_NEW_KEYS: Mapping[str, tuple[str, ...]] = {
    # config-key strings present in pyspark==4.0.5 / 4.1.4 jars and absent from 4.0.4 / 4.1.3 jars
    "4.0.5": (
        "spark.history.fs.eventLog.maxLineLength",
        "spark.streaming.raw.maxBlockSizeBytes",
        "spark.ui.actionsViaGetEnabled",
    ),
    "4.1.4": (
        "spark.history.fs.eventLog.maxLineLength",
        "spark.shuffle.service.verifyBlockPathsAtRead",
        "spark.streaming.raw.maxBlockSizeBytes",
        "spark.ui.actionsViaGetEnabled",
    ),
}

SPARK_REPO = "https://github.com/apache/spark"
SPARK_WEBSITE_REPO = "https://github.com/apache/spark-website"

DOCS_SOURCE: Mapping[str, Mapping[str, str]] = {
    # version -> {apache/spark-website path: commit}
    "v3.5.9": {
        "site/docs/3.5.9/configuration.html": "136c8484c513b5f0b38c84b76af9b9ab9dd2d8a5",
        "site/docs/3.5.9/running-on-kubernetes.html": "136c8484c513b5f0b38c84b76af9b9ab9dd2d8a5",
    },
    "v4.0.4": {
        "site/docs/4.0.4/configuration.html": "1d4cda45ac4c08687d656e26ce48c0fdb6cc2e9e",
        "site/docs/4.0.4/running-on-kubernetes.html": "7edc77bc7d8ed2e88b12e5572472f0bc7f3471e6",
    },
    "v4.1.3": {
        "site/docs/4.1.3/configuration.html": "eb0635745600a0476b08c01aee257954f234ccea",
        "site/docs/4.1.3/running-on-kubernetes.html": "eb0635745600a0476b08c01aee257954f234ccea",
    },
}

FABRIC8_VERSION: Mapping[str, str] = {"v3.5.9": "6.7.2", "v4.0.4": "7.1.0", "v4.1.3": "7.4.1"}
VOLCANO_STEP_COMMIT = "07625978f4cce0359edc0ed7fee48f17be27b06b"

DATA_DIR = Path(__file__).parent / "data" / "spark"

# ---------------------------------------------------------------------------------------------------
# Documented keys

OWNER_OF_PREFIX: Mapping[str, str] = {
    # configuration.md "Custom Hadoop/Hive Configuration" (all three versions): "use spark hadoop
    # properties in the form of spark.hadoop.*, and use spark hive properties in the form of
    # spark.hive.* ... adding configuration "spark.hadoop.abc.def=xyz" represents adding hadoop
    # property "abc.def=xyz"". Spark strips the prefix and hands the rest to Hadoop / Hive.
    "spark.hadoop.": "hadoop",
    "spark.hive.": "hive",
    # NVIDIA RAPIDS Accelerator for Apache Spark (plugin com.nvidia.spark.SQLPlugin via spark.plugins);
    # its keys are documented by NVIDIA/spark-rapids docs/configs.md, not by Spark.
    "spark.rapids.": "rapids",
}
"""Key prefixes whose keys are not Spark's own; `undocumented_keys` accepts them in every version."""

PROSE_DOCUMENTED_KEYS: Mapping[str, frozenset[str]] = {
    # running-on-kubernetes "Customized Kubernetes Schedulers" / "Volcano PodGroup Template" sections
    # (identical in the three versions): the key is set in --conf examples and explained in prose,
    # but it is in no property table. It is no ConfigEntry either (VolcanoFeatureStep
    # POD_GROUP_TEMPLATE_FILE_KEY is a plain string), so it has no "Since Version" anywhere; the docs
    # say "Spark on Kubernetes with Volcano as a custom scheduler is supported since Spark v3.3.0".
    # spark.plugins: a ConfigEntry of core (internal/config/package.scala PLUGINS, version 3.0.0,
    # doc "Comma-separated list of class names implementing org.apache.spark.api.plugin.SparkPlugin
    # to load into the application", read from the spark-core jar of each version) that
    # docs/monitoring.md "Advanced Instrumentation" explains; no table of the two pages above lists it.
    version: frozenset({"spark.kubernetes.scheduler.volcano.podGroupTemplateFile", "spark.plugins"})
    for version in SPARK_VERSIONS
}
"""Keys the docs explain only in prose (not exhaustive: only those checked for fleet)."""

KEY_FIRST_APPEARED: Mapping[str, str] = {
    # "Since Version" column of running-on-kubernetes (same in 3.5.9, 4.0.4, 4.1.3), which agrees with
    # ConfigEntry.version() in the jars where the key is a ConfigEntry.
    "spark.kubernetes.driver.podTemplateContainerName": "3.0.0",
    "spark.kubernetes.executor.podTemplateContainerName": "3.0.0",
    "spark.kubernetes.driver.pod.featureSteps": "3.2.0",
    "spark.kubernetes.executor.pod.featureSteps": "3.2.0",
    "spark.kubernetes.authenticate.executor.serviceAccountName": "3.1.0",
    "spark.kubernetes.scheduler.name": "3.3.0",
    "spark.kubernetes.driver.scheduler.name": "3.3.0",
    "spark.kubernetes.executor.scheduler.name": "3.0.0",
    "spark.kubernetes.driver.label.[LabelName]": "2.3.0",
    "spark.kubernetes.executor.label.[LabelName]": "2.3.0",
    # not a ConfigEntry, prose only: "supported since Spark v3.3.0" (Volcano section)
    "spark.kubernetes.scheduler.volcano.podGroupTemplateFile": "3.3.0",
    "spark.driver.minMemoryOverhead": "4.0.0",
    "spark.executor.minMemoryOverhead": "4.0.0",
}

_PLACEHOLDER = re.compile(r"\[[^\]]+\]|\{[^}]+\}")


def _template_regex(template: str) -> re.Pattern[str]:
    """A docs key with placeholders as a regex.

    `[Name]` / `{name}` stand for one dot-free segment, except as the last part of the key, where they
    take the rest (label and annotation keys such as `yunikorn.apache.org/app-id` contain dots);
    `{a|b}` is an alternation.
    """
    parts: list[str] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(template):
        parts.append(re.escape(template[pos : match.start()]))
        inner = match.group()[1:-1]
        if match.group().startswith("{") and "|" in inner:
            parts.append("(?:" + "|".join(re.escape(alt) for alt in inner.split("|")) + ")")
        elif match.end() == len(template):
            parts.append(".+")
        else:
            parts.append("[^.]+")
        pos = match.end()
    parts.append(re.escape(template[pos:]))
    return re.compile("".join(parts))


class DocumentedKeys(NamedTuple):
    exact: frozenset[str]
    templates: tuple[tuple[str, re.Pattern[str]], ...]

    def match(self, key: str) -> str | None:
        """The documented key (or template) that covers `key`, or None."""
        if key in self.exact:
            return key
        for template, pattern in self.templates:
            if pattern.fullmatch(key):
                return template
        return None


def data_file(version: str) -> Path:
    return DATA_DIR / f"documented-keys-{version.removeprefix('v')}.txt"


@cache
def documented_keys(version: str) -> DocumentedKeys:
    if version not in SPARK_VERSIONS:
        raise ValueError(f"unsupported Spark version {version!r}; supported: {SPARK_VERSIONS}")
    keys = [
        line.strip()
        for line in data_file(version).read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    exact = frozenset(k for k in keys if not _PLACEHOLDER.search(k))
    templates = tuple((k, _template_regex(k)) for k in keys if _PLACEHOLDER.search(k))
    return DocumentedKeys(exact, templates)


def key_owner(key: str) -> str:
    """Whose key this is: "spark", or the owner in `OWNER_OF_PREFIX` ("hadoop", "hive", "rapids").

    Spark documents a few keys under `spark.hadoop.` itself (spark.hadoop.cloneConf,
    spark.hadoop.validateOutputSpecs, spark.hadoop.mapreduce.fileoutputcommitter.algorithm.version);
    those are Spark's.
    """
    if any(documented_keys(v).match(key) for v in SPARK_VERSIONS):
        return "spark"
    for prefix, owner in OWNER_OF_PREFIX.items():
        if key.startswith(prefix):
            return owner
    return "spark"


def undocumented_keys(keys: Iterable[str], *, include_prose: bool = False) -> dict[str, list[str]]:
    """For each key, the versions (of `SPARK_VERSIONS`) whose property tables document it nowhere.

    Every given key is in the result; an empty list means documented (or not Spark's, see
    `OWNER_OF_PREFIX`) in every version. With `include_prose`, keys of `PROSE_DOCUMENTED_KEYS` count
    as documented too.
    """
    result: dict[str, list[str]] = {}
    for key in keys:
        if key_owner(key) != "spark":
            result[key] = []
            continue
        result[key] = [
            version
            for version in SPARK_VERSIONS
            if documented_keys(version).match(key) is None
            and not (include_prose and key in PROSE_DOCUMENTED_KEYS[version])
        ]
    return result


# ---------------------------------------------------------------------------------------------------
# Kubernetes API calls


class ApiCall(NamedTuple):
    api_group: str
    resource: str
    verb: str
    spark_source_path: str
    what: str


_K8S = "resource-managers/kubernetes/core/src/main/scala/org/apache/spark/"
_ALLOCATOR = _K8S + "scheduler/cluster/k8s/ExecutorPodsAllocator.scala"
_LIFECYCLE = _K8S + "scheduler/cluster/k8s/ExecutorPodsLifecycleManager.scala"
_WATCH = _K8S + "scheduler/cluster/k8s/ExecutorPodsWatchSnapshotSource.scala"
_POLL = _K8S + "scheduler/cluster/k8s/ExecutorPodsPollingSnapshotSource.scala"
_BACKEND = _K8S + "scheduler/cluster/k8s/KubernetesClusterSchedulerBackend.scala"
_STATEFULSET = _K8S + "scheduler/cluster/k8s/StatefulSetPodsAllocator.scala"
_DIAGNOSTICS = _K8S + "deploy/k8s/SparkKubernetesDiagnosticsSetter.scala"
_SUBMIT = _K8S + "deploy/k8s/submit/KubernetesClientApplication.scala"
_SUBMIT_OPS = _K8S + "deploy/k8s/submit/K8sSubmitOps.scala"
_VOLCANO = (
    "resource-managers/kubernetes/core/volcano/src/main/scala/org/apache/spark/deploy/k8s/features/"
    "VolcanoFeatureStep.scala"
)
_FEATURES = _K8S + "deploy/k8s/features/"

DRIVER_POD_API_CALLS: tuple[ApiCall, ...] = (
    # ExecutorPodsAllocator (default allocator, spark.kubernetes.allocation.pods.allocator=direct)
    ApiCall(
        "",
        "pods",
        "get",
        _ALLOCATOR,
        "driverPod: pods.withName(spark.kubernetes.driver.pod.name).get(), owner of executors/PVCs",
    ),
    ApiCall(
        "",
        "pods",
        "list",
        _ALLOCATOR,
        "start(): pods.withName(driver).waitUntilReady(spark.kubernetes.allocation.driver."
        "readinessTimeout) - a fabric8 informer on the driver pod (list + watch)",
    ),
    ApiCall("", "pods", "watch", _ALLOCATOR, "start(): waitUntilReady informer on the driver pod"),
    ApiCall("", "pods", "create", _ALLOCATOR, "requestNewExecutors: pods.resource(executorPod).create()"),
    ApiCall(
        "",
        "pods",
        "delete",
        _ALLOCATOR,
        "requestNewExecutors: pods.resource(executorPod).delete() when creating its PVCs fails",
    ),
    ApiCall(
        "",
        "pods",
        "deletecollection",
        _ALLOCATOR,
        "onNewSnapshots: withLabel(app, executor role).withLabelIn(exec ids).delete() of timed-out "
        "new / excess pending executors (also withField); stop(): all executor pods of the app",
    ),
    ApiCall(
        "",
        "persistentvolumeclaims",
        "create",
        _ALLOCATOR,
        "requestNewExecutors: OnDemand claims (claimName=OnDemand), owner = driver pod when "
        "spark.kubernetes.driver.ownPersistentVolumeClaim",
    ),
    ApiCall(
        "",
        "persistentvolumeclaims",
        "list",
        _ALLOCATOR,
        "getReusablePVCs: withLabel(spark-app-selector).list() when ownPersistentVolumeClaim and "
        "reusePersistentVolumeClaim (both default true)",
    ),
    # ExecutorPodsWatchSnapshotSource / ExecutorPodsPollingSnapshotSource
    ApiCall(
        "",
        "pods",
        "watch",
        _WATCH,
        "start(): pods.withLabel(spark-app-selector).withLabel(spark-role=executor).watch() "
        "(4.1 adds withoutLabel(spark-exec-inactive))",
    ),
    ApiCall(
        "",
        "pods",
        "list",
        _POLL,
        "every spark.kubernetes.executor.apiPollingInterval: executor pods of the app, without "
        "spark-exec-inactive (resourceVersion=0 if enablePollingWithResourceVersion)",
    ),
    # ExecutorPodsLifecycleManager
    ApiCall(
        "",
        "pods",
        "delete",
        _LIFECYCLE,
        "removeExecutorFromK8s: pods.withName(exec).delete() when spark.kubernetes.executor."
        "deleteOnTermination (default true)",
    ),
    ApiCall(
        "",
        "pods",
        "get",
        _LIFECYCLE,
        "removeExecutorFromK8s: 4.0+ get() before delete (skip if already terminating); the GET of "
        "edit() below",
    ),
    ApiCall(
        "",
        "pods",
        "patch",
        _LIFECYCLE,
        "removeExecutorFromK8s: deleteOnTermination=false -> pods.withName(exec).edit() adds label "
        "spark-exec-inactive=true",
    ),
    # KubernetesClusterSchedulerBackend
    ApiCall(
        "",
        "configmaps",
        "create",
        _BACKEND,
        "start(): executor ConfigMap (spark conf files) unless spark.kubernetes.executor.disableConfigMap",
    ),
    ApiCall(
        "",
        "configmaps",
        "deletecollection",
        _BACKEND,
        "stop(): withLabel(app).withLabel(spark-role=executor).delete() when deleteOnTermination and "
        "not disableConfigMap",
    ),
    ApiCall(
        "",
        "services",
        "deletecollection",
        _BACKEND,
        "stop(): services.withLabel(spark-app-selector).delete() when spark.kubernetes.driver."
        "service.deleteOnTermination (default true)",
    ),
    ApiCall(
        "",
        "persistentvolumeclaims",
        "deletecollection",
        _BACKEND,
        "stop(): withLabel(spark-app-selector).delete() when ownPersistentVolumeClaim",
    ),
    ApiCall(
        "",
        "pods",
        "list",
        _BACKEND,
        "decommission labelling (spark.kubernetes.executor.decommissionLabel set): "
        "withLabel..withLabelIn(ids).resources() lists; doKillExecutors: withField(status.phase="
        "Pending)..list()",
    ),
    ApiCall(
        "",
        "pods",
        "patch",
        _BACKEND,
        "edit(): decommission label on decommissioning executors; KubernetesDriverEndpoint."
        "generateExecID labels StatefulSet pods with spark-exec-id",
    ),
    ApiCall("", "pods", "get", _BACKEND, "generateExecID: pods.withName(pod).edit() reads the pod first"),
    ApiCall(
        "",
        "pods",
        "deletecollection",
        _BACKEND,
        "doKillExecutors: withField(status.phase=Pending).withLabel..withLabelIn(ids).delete()",
    ),
    # StatefulSetPodsAllocator (spark.kubernetes.allocation.pods.allocator=statefulset only)
    ApiCall(
        "apps",
        "statefulsets",
        "create",
        _STATEFULSET,
        "allocator=statefulset: one StatefulSet per resource profile",
    ),
    ApiCall("apps", "statefulsets", "delete", _STATEFULSET, "allocator=statefulset: stop()"),
    ApiCall("apps", "statefulsets", "get", _STATEFULSET, "allocator=statefulset: scale(n) reads back"),
    ApiCall("apps", "statefulsets/scale", "get", _STATEFULSET, "allocator=statefulset: scale(n)"),
    ApiCall(
        "apps",
        "statefulsets/scale",
        "update",
        _STATEFULSET,
        "allocator=statefulset: scale(n) PUTs the scale subresource",
    ),
    ApiCall("", "pods", "get", _STATEFULSET, "allocator=statefulset: driverPod / waitUntilReady"),
    # SparkKubernetesDiagnosticsSetter (4.1+, run by SparkSubmit in the driver pod)
    ApiCall(
        "",
        "pods",
        "get",
        _DIAGNOSTICS,
        "4.1+: spark.kubernetes.driver.annotateExitException=true -> pods.withName(driver).edit()",
    ),
    ApiCall(
        "",
        "pods",
        "patch",
        _DIAGNOSTICS,
        "4.1+: annotateExitException -> annotation spark.exit-exception on the driver's own pod",
    ),
)
"""Every Kubernetes API call the Spark driver makes, all in its own namespace (spark.kubernetes.namespace).

Same calls in v3.5.9, v4.0.4, v4.1.3 except where `what` says "4.0+" / "4.1+" (`CALL_VERSIONS`)."""

CALL_VERSIONS: Mapping[ApiCall, tuple[str, ...]] = {
    call: ("v4.1.3",) if call.spark_source_path == _DIAGNOSTICS else ("v4.0.4", "v4.1.3")
    for call in DRIVER_POD_API_CALLS
    if call.spark_source_path == _DIAGNOSTICS or call.what.startswith("removeExecutorFromK8s: 4.0+")
}
"""Calls not made by every version in `SPARK_VERSIONS` (others: all versions)."""

SUBMITTER_API_CALLS: tuple[ApiCall, ...] = (
    # Client.run (KubernetesClientApplication.scala), cluster mode
    ApiCall(
        "scheduling.volcano.sh",
        "podgroups",
        "patch",
        _VOLCANO,
        "Client.run: resourceList(driverPreKubernetesResources).forceConflicts().serverSideApply() "
        "before the driver pod, again after adding the driver pod as owner; the PodGroup comes from "
        "VolcanoFeatureStep.getAdditionalPreKubernetesResources (name <appId>-podgroup)",
    ),
    ApiCall(
        "scheduling.volcano.sh",
        "podgroups",
        "create",
        _VOLCANO,
        "server-side apply that creates the PodGroup is also authorized as create",
    ),
    ApiCall(
        "scheduling.volcano.sh",
        "podgroups",
        "delete",
        _SUBMIT,
        "Client.run: resourceList(pre-resources).delete() when applying them or creating the driver "
        "pod fails",
    ),
    ApiCall("", "pods", "create", _SUBMIT, "Client.run: pods.inNamespace(ns).resource(driverPod).create()"),
    ApiCall(
        "",
        "pods",
        "delete",
        _SUBMIT,
        "Client.run: pods.resource(driverPod).delete() when applying the other resources fails",
    ),
    ApiCall(
        "",
        "pods",
        "watch",
        _SUBMIT,
        "Client.run with spark.kubernetes.submission.waitAppCompletion (default true): "
        "pods.withName(driver).watch(LoggingPodStatusWatcher), re-watched on HTTP 410",
    ),
    ApiCall("", "pods", "get", _SUBMIT, "Client.run: pods.withName(driver).get() after each watch"),
    ApiCall(
        "",
        "configmaps",
        "patch",
        _SUBMIT,
        "Client.run: serverSideApply of the driver conf ConfigMap (always), executor pod template "
        "(PodTemplateConfigMapStep), HADOOP_CONF_DIR (HadoopConfDriverFeatureStep), krb5.conf "
        "(KerberosConfDriverFeatureStep)",
    ),
    ApiCall("", "configmaps", "create", _SUBMIT, "same ConfigMaps: server-side apply that creates"),
    ApiCall(
        "",
        "services",
        "patch",
        _FEATURES + "DriverServiceFeatureStep.scala",
        "Client.run: serverSideApply of the driver's headless Service",
    ),
    ApiCall(
        "",
        "services",
        "create",
        _FEATURES + "DriverServiceFeatureStep.scala",
        "driver Service: server-side apply that creates",
    ),
    ApiCall(
        "",
        "secrets",
        "patch",
        _FEATURES + "DriverKubernetesCredentialsFeatureStep.scala",
        "Client.run: serverSideApply of the credentials Secret when spark.kubernetes.authenticate."
        "driver.{caCertFile,clientKeyFile,clientCertFile,oauthToken*} are given; also Kerberos "
        "delegation-token Secret (KerberosConfDriverFeatureStep)",
    ),
    ApiCall(
        "",
        "secrets",
        "create",
        _FEATURES + "DriverKubernetesCredentialsFeatureStep.scala",
        "those Secrets: server-side apply that creates",
    ),
    ApiCall(
        "",
        "persistentvolumeclaims",
        "patch",
        _FEATURES + "MountVolumesFeatureStep.scala",
        "Client.run: serverSideApply of the driver's OnDemand PVCs",
    ),
    ApiCall(
        "",
        "persistentvolumeclaims",
        "create",
        _FEATURES + "MountVolumesFeatureStep.scala",
        "driver OnDemand PVCs: server-side apply that creates",
    ),
    # spark-submit --kill / --status (K8sSubmitOps.scala)
    ApiCall("", "pods", "get", _SUBMIT_OPS, "--status/--kill <ns>:<driver pod>: pods.withName(...).get()"),
    ApiCall(
        "",
        "pods",
        "delete",
        _SUBMIT_OPS,
        "--kill: delete the driver pod (withGracePeriod(spark.kubernetes.appKillPodDeletionGracePeriod)"
        " if set); with a glob, each matching pod",
    ),
    ApiCall(
        "",
        "pods",
        "list",
        _SUBMIT_OPS,
        "--kill/--status with a glob: pods.withLabel(spark-role=driver).list(); without a namespace "
        "(none in the submission id nor in the kube context) that list is cluster-wide",
    ),
)
"""Every Kubernetes API call spark-submit makes in cluster mode (and for --kill / --status).

Same in v3.5.9, v4.0.4, v4.1.3. Uses the spark.kubernetes.authenticate.submission.* credentials (or the
kube context). Server-side apply = PATCH (field manager fabric8, force=true)."""


def verbs_by_resource(calls: Iterable[ApiCall]) -> dict[tuple[str, str], frozenset[str]]:
    """(api_group, resource) -> verbs, for comparing with a rendered Role."""
    result: dict[tuple[str, str], set[str]] = {}
    for call in calls:
        result.setdefault((call.api_group, call.resource), set()).add(call.verb)
    return {key: frozenset(verbs) for key, verbs in result.items()}


# ---------------------------------------------------------------------------------------------------
# Containers and memory

SPARK_DEFAULT_CONTAINER_NAMES: Mapping[str, str] = {
    # Constants.scala DEFAULT_DRIVER_CONTAINER_NAME / DEFAULT_EXECUTOR_CONTAINER_NAME (same in the three
    # versions); running-on-kubernetes "Container spec" table: used unless the pod template names the
    # container (spark.kubernetes.{driver,executor}.podTemplateContainerName picks which one, else the
    # first container of the template).
    "driver": "spark-kubernetes-driver",
    "executor": "spark-kubernetes-executor",
}
CONSTANTS_SOURCE = _K8S + "deploy/k8s/Constants.scala"

DEFAULT_MEMORY_OVERHEAD_FACTOR = 0.1
"""spark.kubernetes.memoryOverheadFactor (since 2.4.0) and spark.{driver,executor}.memoryOverheadFactor
(since 3.3.0) default 0.1 (configuration.md / running-on-kubernetes tables, ConfigEntry defaults)."""
NON_JVM_MEMORY_OVERHEAD_FACTOR = 0.4
"""Constants.scala NON_JVM_MEMORY_OVERHEAD_FACTOR: default factor for Python/R main resources."""
MIN_MEMORY_OVERHEAD_MIB = 384
"""Floor of the overhead: ResourceProfile.MEMORY_OVERHEAD_MIN_MIB (hard-coded 384) in 3.5;
spark.{driver,executor}.minMemoryOverhead (default 384m, since 4.0.0) in 4.x."""
MIN_MEMORY_OVERHEAD_KEYS_SINCE = "v4.0.0"

_SIZE_UNITS = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_mib(value: str, default_unit: str = "m") -> int:
    """Spark's byteStringAsMb (JavaUtils.byteStringAs with MiB): `4g` -> 4096; whole numbers only."""
    match = re.fullmatch(r"\s*(-?[0-9]+)\s*([a-zA-Z]*)\s*", value)
    if not match:
        raise ValueError(
            f"Size must be specified as bytes (b), kibibytes (k), mebibytes (m), ... : {value!r}"
        )
    number, unit = int(match.group(1)), (match.group(2).lower() or default_unit)
    unit = unit[:-1] if len(unit) == 2 and unit.endswith("b") else unit
    if unit not in _SIZE_UNITS:
        raise ValueError(f"Invalid suffix: {match.group(2)!r}")
    return number * _SIZE_UNITS[unit] // _SIZE_UNITS["m"]


def memory_overhead_mib(
    conf: Mapping[str, str], role: str, *, version: str = SPARK_VERSIONS[-1], non_jvm: bool = False
) -> int:
    """The memory overhead Spark adds to a driver/executor pod (BasicDriverFeatureStep,
    BasicExecutorFeatureStep + ResourceProfile.calculateOverHeadMemory):
    spark.<role>.memoryOverhead if set, else max(int(factor * spark.<role>.memory MiB), minimum), factor =
    spark.<role>.memoryOverheadFactor if set, else spark.kubernetes.memoryOverheadFactor if set, else 0.4
    for non-JVM (Python/R) apps and 0.1 otherwise."""
    if role not in ("driver", "executor"):
        raise ValueError(f"role must be driver or executor, not {role!r}")
    if f"spark.{role}.memoryOverhead" in conf:
        return parse_mib(conf[f"spark.{role}.memoryOverhead"])
    memory = parse_mib(conf.get(f"spark.{role}.memory", "1g"))
    if f"spark.{role}.memoryOverheadFactor" in conf:
        factor = float(conf[f"spark.{role}.memoryOverheadFactor"])
    elif "spark.kubernetes.memoryOverheadFactor" in conf:
        factor = float(conf["spark.kubernetes.memoryOverheadFactor"])
    else:
        factor = NON_JVM_MEMORY_OVERHEAD_FACTOR if non_jvm else DEFAULT_MEMORY_OVERHEAD_FACTOR
    minimum = MIN_MEMORY_OVERHEAD_MIB
    if version != "v3.5.9" and f"spark.{role}.minMemoryOverhead" in conf:
        minimum = parse_mib(conf[f"spark.{role}.minMemoryOverhead"])
    return max(int(factor * memory), minimum)


# ---------------------------------------------------------------------------------------------------
# Dynamic allocation

EXECUTOR_ALLOCATION_MANAGER_SOURCE = "core/src/main/scala/org/apache/spark/ExecutorAllocationManager.scala"

DYNAMIC_ALLOCATION_DEFAULTS: Mapping[str, Mapping[str, str]] = {
    # ConfigEntry defaults read from the jars; identical in the three versions
    version: {
        "spark.dynamicAllocation.enabled": "false",
        "spark.dynamicAllocation.shuffleTracking.enabled": "true",
        "spark.dynamicAllocation.testing": "false",
        "spark.shuffle.service.enabled": "false",
        "spark.decommission.enabled": "false",
        "spark.storage.decommission.shuffleBlocks.enabled": "true",
        "spark.shuffle.sort.io.plugin.class": "org.apache.spark.shuffle.sort.io.LocalDiskShuffleDataIO",
        "spark.master": "",
    }
    for version in SPARK_VERSIONS
}

NOT_RELIABLE_SHUFFLE_PLUGINS = frozenset(
    {
        # their ShuffleDriverComponents (LocalDiskShuffleDriverComponents) keep the interface default
        # supportsReliableStorage() = false
        "org.apache.spark.shuffle.sort.io.LocalDiskShuffleDataIO",
        "org.apache.spark.shuffle.KubernetesLocalDiskShuffleDataIO",
    }
)

DYNAMIC_ALLOCATION_REFUSAL = (
    "Dynamic allocation of executors requires one of the following conditions: 1) enabling external "
    "shuffle service through spark.shuffle.service.enabled. 2) enabling shuffle tracking through "
    "spark.dynamicAllocation.shuffleTracking.enabled. 3) enabling shuffle blocks decommission through "
    "spark.decommission.enabled and spark.storage.decommission.shuffleBlocks.enabled. 4) (Experimental) "
    "configuring spark.shuffle.sort.io.plugin.class to use a custom ShuffleDataIO who's "
    "ShuffleDriverComponents supports reliable storage."
)
"""ExecutorAllocationManager.validateSettings' SparkException message (same text in the three versions)."""


def _conf_bool(conf: Mapping[str, str], key: str, version: str) -> bool:
    raw = conf.get(key, DYNAMIC_ALLOCATION_DEFAULTS[version][key])
    value = raw.strip().lower()  # ConfigHelpers.toBoolean: s.trim.toBoolean
    if value not in ("true", "false"):
        raise ValueError(f"{key} should be boolean, but was {raw}")
    return value == "true"


def dynamic_allocation_refused(
    conf: Mapping[str, str],
    *,
    version: str = SPARK_VERSIONS[-1],
    reliable_shuffle_plugins: Collection[str] = (),
) -> str | None:
    """Spark's refusal message if SparkContext would refuse this conf's dynamic allocation, else None.

    Utils.isDynamicAllocationEnabled: spark.dynamicAllocation.enabled and (master is not `local` /
    `local[...]` or spark.dynamicAllocation.testing). Then validateSettings: unless
    spark.shuffle.service.enabled or the shuffle IO plugin's driver components support reliable storage,
    one of shuffle tracking, or decommission + decommission of shuffle blocks, or
    spark.dynamicAllocation.testing must hold. A plugin class counts as reliable only if listed in
    `reliable_shuffle_plugins`. (validateSettings' other checks - min/max executors, backlog timeouts,
    allocation ratio - are not modelled.)
    """
    if version not in SPARK_VERSIONS:
        raise ValueError(f"unsupported Spark version {version!r}")
    if not _conf_bool(conf, "spark.dynamicAllocation.enabled", version):
        return None
    testing = _conf_bool(conf, "spark.dynamicAllocation.testing", version)
    master = conf.get("spark.master", "")
    if (master == "local" or master.startswith("local[")) and not testing:
        return None
    plugin = conf.get(
        "spark.shuffle.sort.io.plugin.class",
        DYNAMIC_ALLOCATION_DEFAULTS[version]["spark.shuffle.sort.io.plugin.class"],
    )
    reliable = plugin in reliable_shuffle_plugins and plugin not in NOT_RELIABLE_SHUFFLE_PLUGINS
    if _conf_bool(conf, "spark.shuffle.service.enabled", version) or reliable:
        return None
    if _conf_bool(conf, "spark.dynamicAllocation.shuffleTracking.enabled", version):
        return None
    if _conf_bool(conf, "spark.decommission.enabled", version) and _conf_bool(
        conf, "spark.storage.decommission.shuffleBlocks.enabled", version
    ):
        return None
    if testing:
        return None
    return DYNAMIC_ALLOCATION_REFUSAL

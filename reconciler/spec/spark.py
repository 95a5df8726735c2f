"""What a SparkPool means to Spark and to the schedulers, worked out once for the renderer and
for validation: the Spark keys fleet writes itself, the size of the driver's and executors' pods
as Spark asks Kubernetes for them (memory overhead included), and the checks that refuse a pool
Spark or the scheduler would refuse, or warn of one whose numbers do not add up.

Pure functions of the models. The rules follow Spark 3.5 and 4.0 (`Config.scala`,
`BasicDriverFeatureStep`, `BasicExecutorFeatureStep`, `ResourceProfile`,
`ExecutorAllocationManager.validateSettings`) and Volcano's queue admission; the tests check
them against upstream's documents and code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Literal

from reconciler.spec import models
from reconciler.spec.quantity import canonical_quantity, quantity_value

Role = Literal["driver", "executor"]

# Spark's own container names (Constants.scala DEFAULT_DRIVER_CONTAINER_NAME and
# DEFAULT_EXECUTOR_CONTAINER_NAME); the pod templates name their container so.
CONTAINER_NAMES: Mapping[Role, str] = {
    "driver": "spark-kubernetes-driver",
    "executor": "spark-kubernetes-executor",
}
VOLCANO_FEATURE_STEP = "org.apache.spark.deploy.k8s.features.VolcanoFeatureStep"

# Keys fleet derives from the spec; a pool's spark.defaults may not set them (the spec field to
# change instead). Checked by validation and written by the renderer.
FLEET_KEYS: Mapping[str, str] = {
    "spark.master": "the Cluster's spec.apiServer",
    "spark.kubernetes.namespace": "spec.namespace",
    "spark.kubernetes.container.image": "spec.image (or the Fleet's spec.spark.image)",
    "spark.kubernetes.driver.container.image": "spec.image (or the Fleet's spec.spark.image)",
    "spark.kubernetes.executor.container.image": "spec.image (or the Fleet's spec.spark.image)",
    "spark.kubernetes.authenticate.driver.serviceAccountName": "spec.serviceAccount",
    "spark.kubernetes.authenticate.executor.serviceAccountName": "spec.executorServiceAccount",
    "spark.driver.cores": "spec.spark.driver.cores",
    "spark.driver.memory": "spec.spark.driver.memory",
    "spark.executor.cores": "spec.spark.executor.cores",
    "spark.executor.memory": "spec.spark.executor.memory",
    "spark.dynamicAllocation.enabled": "spec.spark.dynamicAllocation.enabled",
    "spark.dynamicAllocation.minExecutors": "spec.spark.dynamicAllocation.minExecutors",
    "spark.dynamicAllocation.maxExecutors": "spec.spark.dynamicAllocation.maxExecutors",
    "spark.dynamicAllocation.shuffleTracking.enabled": "spec.spark.dynamicAllocation.shuffleTracking",
    "spark.kubernetes.driver.podTemplateFile": "fleet's pod templates",
    "spark.kubernetes.executor.podTemplateFile": "fleet's pod templates",
    "spark.kubernetes.driver.podTemplateContainerName": "fleet's pod templates",
    "spark.kubernetes.executor.podTemplateContainerName": "fleet's pod templates",
    "spark.kubernetes.scheduler.name": "the Cluster's spec.scheduler",
    "spark.kubernetes.scheduler.volcano.podGroupTemplateFile": "the Cluster's spec.scheduler (volcano)",
    "spark.kubernetes.driver.pod.featureSteps": "the Cluster's spec.scheduler (volcano)",
    "spark.kubernetes.executor.pod.featureSteps": "the Cluster's spec.scheduler (volcano)",
    "spark.kubernetes.driver.label.queue": "spec.queue.name",
    "spark.kubernetes.executor.label.queue": "spec.queue.name",
}

# Spark's memory overhead (Config.scala and KubernetesConf): max(factor x memory, minimum), in MiB.
OVERHEAD_FACTOR = Decimal("0.1")
MIN_OVERHEAD_MIB = 384
_MIB = 1024**2


# --- Spark's size strings ----------------------------------------------------------------

_SPARK_SIZE = re.compile(r"^\s*([0-9]+)\s*(b|k|kb|m|mb|g|gb|t|tb|p|pb)?\s*$", re.IGNORECASE)
_SPARK_UNITS = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}


def spark_size(text: str, default_unit: str = "m") -> int | None:
    """Bytes of a Spark size string (`28g`, `512m`, `4096` in `default_unit`); None if it is none."""
    match = _SPARK_SIZE.match(text)
    if match is None:
        return None
    unit = (match.group(2) or default_unit).lower()[0]
    return int(match.group(1)) * _SPARK_UNITS[unit]


def spark_memory(value: str) -> str:
    """A Kubernetes memory quantity as a JVM size Spark reads (`28Gi` -> `28g`), exact."""
    size = math.ceil(quantity_value(value))
    for suffix, unit in (("t", 1024**4), ("g", 1024**3), ("m", 1024**2), ("k", 1024)):
        if size >= unit and size % unit == 0:
            return f"{size // unit}{suffix}"
    return f"{size}b"


def _true(conf: Mapping[str, str], key: str, default: bool = False) -> bool:
    value = conf.get(key)
    return default if value is None else value.strip().lower() == "true"


# --- pod sizes ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class PodSize:
    """What one driver or executor pod requests: cores, memory in bytes (heap and overhead)
    and extended resources such as `nvidia.com/gpu`."""

    cores: Decimal
    memory: int
    overhead: int
    extended: Mapping[str, Decimal]

    def resources(self) -> dict[str, Decimal]:
        return {"cpu": self.cores, "memory": Decimal(self.memory), **self.extended}


def pod_size(pool: models.SparkPool, role: Role) -> PodSize:
    """The requests of a driver or executor pod, as Spark's Basic{Driver,Executor}FeatureStep
    compute them: `spark.kubernetes.<role>.request.cores` or the cores; the heap plus the memory
    overhead (spark.<role>.memoryOverhead, or max(factor x heap, 384 MiB)), PySpark memory and
    off-heap memory when enabled; and spark.<role>.resource.<name>.amount of `<vendor>/<name>`."""
    spec = pool.spec.spark
    conf = spec.defaults
    size = spec.driver if role == "driver" else spec.executor
    cores = Decimal(size.cores)
    request = conf.get(f"spark.kubernetes.{role}.request.cores")
    if request is not None:
        with contextlib.suppress(ValueError):
            cores = quantity_value(request)
    heap = math.ceil(quantity_value(size.memory))
    heap_mib = heap // _MIB
    explicit = conf.get(f"spark.{role}.memoryOverhead")
    overhead = spark_size(explicit) if explicit is not None else None
    if overhead is None:
        factor_text = conf.get(f"spark.{role}.memoryOverheadFactor") or conf.get(
            "spark.kubernetes.memoryOverheadFactor"
        )
        try:
            factor = Decimal(factor_text) if factor_text is not None else OVERHEAD_FACTOR
        except ArithmeticError:
            factor = OVERHEAD_FACTOR
        minimum = spark_size(conf.get(f"spark.{role}.minMemoryOverhead", "")) or MIN_OVERHEAD_MIB * _MIB
        overhead = max(int(factor * heap_mib) * _MIB, minimum)
    extra = 0
    if role == "executor":
        extra += spark_size(conf.get("spark.executor.pyspark.memory", "")) or 0
        if _true(conf, "spark.memory.offHeap.enabled"):
            extra += spark_size(conf.get("spark.memory.offHeap.size", "0"), default_unit="b") or 0
    extended: dict[str, Decimal] = {}
    prefix = f"spark.{role}.resource."
    for key, value in conf.items():
        if key.startswith(prefix) and key.endswith(".amount"):
            name = key[len(prefix) : -len(".amount")]
            vendor = conf.get(f"{prefix}{name}.vendor")
            try:
                amount = Decimal(value)
            except ArithmeticError:
                continue
            if vendor:
                extended[f"{vendor}/{name}"] = amount
    return PodSize(cores, heap + overhead + extra, overhead, dict(sorted(extended.items())))


def driver_min_resources(pool: models.SparkPool) -> dict[str, str]:
    """What a Volcano PodGroup needs before it starts: the driver pod's requests."""
    driver = pod_size(pool, "driver")
    out = {name: canonical_quantity(str(value)) for name, value in driver.resources().items()}
    if driver.memory % 1024 == 0:  # a binary suffix, as people write memory
        out["memory"] = canonical_quantity(f"{driver.memory // 1024}Ki")
    return dict(sorted(out.items()))


# --- checks ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Problem:
    severity: Literal["error", "warning"]
    code: str
    message: str
    field_path: tuple[str | int, ...]
    hint: str


def _show(name: str, value: Decimal) -> str:
    if name == "memory":
        gib = value / 1024**3
        return f"{gib:.0f}Gi" if gib == gib.to_integral_value() else f"{gib:.1f}Gi"
    return f"{value.normalize():f}"


def queue_problems(queue: models.Queue) -> Iterator[Problem]:
    """guaranteed <= deserved <= max for every resource (Volcano's admission webhook refuses a
    Queue otherwise, and YuniKorn's validator a guaranteed above max)."""
    base = ("spec", "queue")
    for name, amount in sorted(queue.guaranteed.items()):
        top = queue.max.get(name)
        if top is not None and quantity_value(amount) > quantity_value(top):
            yield Problem(
                "error",
                "queue-order",
                f"queue {queue.name}: guaranteed {name} {amount} is more than its max {top}",
                (*base, "guaranteed", name),
                "lower the guarantee or raise max; a queue cannot be guaranteed more than it may use",
            )
    if queue.deserved is None:
        return
    for name, amount in sorted(queue.guaranteed.items()):
        if name not in queue.deserved:
            yield Problem(
                "error",
                "queue-order",
                f"queue {queue.name}: deserved has no {name}, which is guaranteed ({amount});"
                " Volcano refuses a deserved share below the guarantee",
                (*base, "deserved"),
                f"add {name} to deserved, at least {amount}",
            )
    for name, amount in sorted(queue.deserved.items()):
        value = quantity_value(amount)
        low, top = queue.guaranteed.get(name), queue.max.get(name)
        if low is not None and value < quantity_value(low):
            yield Problem(
                "error",
                "queue-order",
                f"queue {queue.name}: deserved {name} {amount} is less than guaranteed {low}",
                (*base, "deserved", name),
                "deserved lies between guaranteed and max",
            )
        if top is not None and value > quantity_value(top):
            yield Problem(
                "error",
                "queue-order",
                f"queue {queue.name}: deserved {name} {amount} is more than max {top}",
                (*base, "deserved", name),
                "deserved lies between guaranteed and max",
            )


def fleet_key_problems(pool: models.SparkPool) -> Iterator[Problem]:
    for key in sorted(pool.spec.spark.defaults):
        owner = FLEET_KEYS.get(key)
        if owner is None and re.fullmatch(
            r"spark\.kubernetes\.(driver|executor)\.annotation\.yunikorn\.apache\.org/app-id", key
        ):
            owner = "the Cluster's spec.scheduler (yunikorn)"
        if owner is not None:
            yield Problem(
                "error",
                "spark-key-set-by-fleet",
                f"spark.defaults sets {key}, which fleet derives from {owner}",
                ("spec", "spark", "defaults", key),
                f"remove it from spark.defaults and set {owner} instead",
            )


def dynamic_allocation_problems(pool: models.SparkPool) -> Iterator[Problem]:
    """Spark refuses dynamic allocation at start without somewhere to keep shuffle files
    (ExecutorAllocationManager.validateSettings), and Kubernetes has no external shuffle service."""
    scaling, conf = pool.spec.spark.dynamicAllocation, pool.spec.spark.defaults
    path = ("spec", "spark", "dynamicAllocation", "shuffleTracking")
    if _true(conf, "spark.shuffle.service.enabled"):
        yield Problem(
            "error",
            "no-shuffle-service",
            "spark.defaults enables spark.shuffle.service.enabled, but Kubernetes has no external"
            " shuffle service: executors would fail to register with it",
            ("spec", "spark", "defaults", "spark.shuffle.service.enabled"),
            "remove it; with dynamic allocation, keep spec.spark.dynamicAllocation.shuffleTracking true",
        )
        return
    if not scaling.enabled or scaling.shuffleTracking:
        return
    if _true(conf, "spark.decommission.enabled") and _true(
        conf, "spark.storage.decommission.shuffleBlocks.enabled"
    ):
        return
    if conf.get("spark.shuffle.sort.io.plugin.class"):
        return  # a ShuffleDataIO plugin may keep shuffle data reliably; Spark checks it at start
    yield Problem(
        "error",
        "dynamic-allocation-needs-shuffle-tracking",
        "dynamic allocation without shuffle tracking: Spark refuses to start"
        " (ExecutorAllocationManager.validateSettings: dynamic allocation needs an external shuffle"
        " service, shuffle tracking or shuffle block decommissioning, and Kubernetes has no"
        " external shuffle service)",
        path,
        "set shuffleTracking: true, or dynamicAllocation.enabled: false",
    )


def _quota_limit(quota: Mapping[str, str], name: str) -> tuple[str, Decimal] | None:
    keys = (f"requests.{name}", name) if name in ("cpu", "memory") else (f"requests.{name}",)
    if name == "memory":
        keys = (*keys, "limits.memory")
    found = [(key, quantity_value(quota[key])) for key in keys if key in quota]
    return min(found, key=lambda item: item[1]) if found else None


def capacity_problems(pool: models.SparkPool) -> Iterator[Problem]:
    """Warn when one application at maxExecutors cannot fit the pool's quota or queue max: the
    last executors would wait forever, or be refused by the quota."""
    spec = pool.spec
    driver, executor = pod_size(pool, "driver"), pod_size(pool, "executor")
    count = spec.spark.dynamicAllocation.maxExecutors
    wanted = driver.resources()
    for name, value in executor.resources().items():
        wanted[name] = wanted.get(name, Decimal(0)) + value * count
    per_executor = executor.resources()
    for name in sorted(wanted):
        limits: list[tuple[str, Decimal]] = []
        quota = _quota_limit(spec.quota, name)
        if quota is not None:
            limits.append((f"quota {quota[0]}", quota[1]))
        if name in spec.queue.max:
            limits.append((f"queue max {name}", quantity_value(spec.queue.max[name])))
        if not limits:
            continue
        where, limit = min(limits, key=lambda item: item[1])
        if wanted[name] <= limit:
            continue
        each = per_executor.get(name, Decimal(0))
        fits = int((limit - driver.resources().get(name, Decimal(0))) // each) if each else count
        detail = (
            f" ({spec.spark.executor.memory} and {_show('memory', Decimal(executor.overhead))} overhead each)"
            if name == "memory"
            else ""
        )
        yield Problem(
            "warning",
            "executors-exceed-pool",
            f"one application at maxExecutors ({count}) asks for {_show(name, wanted[name])} {name}"
            f" with its driver{detail}, more than the pool's {where} of {_show(name, limit)}",
            ("spec", "spark", "dynamicAllocation", "maxExecutors"),
            f"lower maxExecutors to {max(fits, 0)} or shrink the executors, or raise the quota and queue max",
        )


def _task_slots(executor_amount: Decimal, task_amount: Decimal) -> int:
    """ResourceProfile: a fractional task amount shares one unit among floor(1 / amount) tasks."""
    if task_amount <= 0:
        return 0
    if task_amount < 1:
        return int(executor_amount) * int(1 / task_amount)
    return int(executor_amount // task_amount)


def _share(parts: int) -> str:
    """1/parts, rounded down to four places so that Spark's floor(1 / amount) gives `parts`."""
    return f"{(Decimal(1) / parts).quantize(Decimal('0.0001'), rounding='ROUND_DOWN').normalize():f}"


def share_problems(pool: models.SparkPool) -> Iterator[Problem]:
    """Warn when an executor resource (a GPU) limits its tasks below its cores, or the reverse:
    Spark runs as many tasks as the scarcest resource allows and the rest sits idle."""
    spark = pool.spec.spark
    conf = spark.defaults
    try:
        task_cpus = int(conf.get("spark.task.cpus", "1"))
    except ValueError:
        return
    if task_cpus < 1:
        return
    by_cores = spark.executor.cores // task_cpus
    prefix = "spark.task.resource."
    for key in sorted(conf):
        if not (key.startswith(prefix) and key.endswith(".amount")):
            continue
        name = key[len(prefix) : -len(".amount")]
        try:
            task_amount = Decimal(conf[key])
            executor_amount = Decimal(conf.get(f"spark.executor.resource.{name}.amount", "0"))
        except ArithmeticError:
            continue
        slots = _task_slots(executor_amount, task_amount)
        path = ("spec", "spark", "defaults", key)
        if slots < by_cores:
            yield Problem(
                "warning",
                "resource-share-idles-cores",
                f"{key} {conf[key]} runs {slots} tasks per executor on its {executor_amount.normalize():f}"
                f" {name}, leaving {by_cores - slots} of its {spark.executor.cores} cores idle",
                path,
                f"set {key} to {_share(by_cores)} (1/{by_cores} of the executor's {name}),"
                f" or the executor cores to {slots * task_cpus}",
            )
        elif slots > by_cores:
            yield Problem(
                "warning",
                "resource-share-idles-cores",
                f"{key} {conf[key]} would run {slots} tasks per executor on its {name}, but its"
                f" {spark.executor.cores} cores run only {by_cores}: part of the {name} sits idle",
                path,
                f"give executors {slots * task_cpus} cores, or raise {key}",
            )


def account_problems(pool: models.SparkPool) -> Iterator[Problem]:
    spec = pool.spec
    if spec.executorServiceAccount == spec.serviceAccount:
        yield Problem(
            "error",
            "executor-account-is-the-drivers",
            f"executorServiceAccount {spec.executorServiceAccount!r} is the driver's serviceAccount;"
            " executors"
            " would get the driver's rights to create and delete pods",
            ("spec", "executorServiceAccount"),
            "give executors an account of their own (the default is spark-executor)",
        )


def pool_problems(pool: models.SparkPool) -> list[Problem]:
    """Everything wrong with one SparkPool on its own (the Cluster's checks are cross-document)."""
    return [
        *account_problems(pool),
        *queue_problems(pool.spec.queue),
        *fleet_key_problems(pool),
        *dynamic_allocation_problems(pool),
        *capacity_problems(pool),
        *share_problems(pool),
    ]

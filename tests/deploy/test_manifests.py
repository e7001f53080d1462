"""What CONTRACT.md ("Deploy") and the operators rely on, read from deploy/'s files: the images
(non-root, /data a volume, `facegate serve`, a health check, the one install route), the
Kubernetes manifests (gRPC probes on grpc.health.v1, non-root, the volume, the TLS Secret as the
TLS folder, the HPA on the Deployment) and the compose file (facegate, PostgreSQL, Prometheus
scraping facegate's metrics port)."""
from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from deploy_files import DEPLOY, ROOT

PACKAGES = ("facegate", "encoder", "gates", "index", "service")


def port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


# ------------------------------------------------------------------------------------- images
@pytest.mark.parametrize("name", ["cpu", "cuda"])
def test_each_image_runs_facegate_serve_as_a_non_root_user_with_data_a_volume(images, name):
    image = images[name][-1]
    assert len(images[name]) >= 2, "multi-stage: the build stage's tools stay out of the image"
    assert image.entrypoint + image.cmd == ["facegate", "serve"]
    uid = image.user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root uid (runAsNonRoot can check it)"
    assert image.volumes == ["/data"] and image.env["FACEGATE_DATA_DIR"] == "/data"
    assert port(image.env["FACEGATE_LISTEN"]) == 50051
    assert image.env["FACEGATE_HEALTH_LISTEN"].startswith("0.0.0.0:")
    assert "FACEGATE_INSECURE" not in image.env and "FACEGATE_TLS_DIR" not in image.env, \
        "the operator chooses plaintext or mutual TLS, not the image"
    assert "facegate health" in image.healthcheck[-1] and "FACEGATE_HEALTH_LISTEN" in image.healthcheck[-1]


def test_the_images_install_by_the_one_route_with_their_torch(images):
    """Both build stages run `./dev install` (torch, facenet-pytorch --no-deps, facegate), the CPU
    image with torch's CPU wheels, the CUDA image on a CUDA base with the CUDA wheels."""
    for name, stages in images.items():
        build = stages[0] if name == "cpu" else stages[1]
        assert any(re.search(r"(^|\s)\./dev install /opt/facegate$", r) for r in build.runs), build.runs
        assert "/opt/facegate/bin" in stages[-1].env["PATH"].split(":")
    assert images["cpu"][0].env["FACEGATE_TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    assert images["cpu"][-1].env["FACEGATE_DEVICE"] == "cpu"
    assert images["cuda"][-1].base.startswith("nvidia/cuda:") and images["cuda"][1].base == images["cuda"][-1].base
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", images["cuda"][1].env["FACEGATE_TORCH_INDEX"])
    assert images["cuda"][-1].env["FACEGATE_DEVICE"] == "cuda"


def test_dev_install_is_the_route_and_refuses_a_call_without_its_folder():
    r = subprocess.run([str(ROOT / "dev"), "install"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "usage: ./dev install DIR" in r.stderr
    dev = (ROOT / "dev").read_text()
    assert "install_into \"$VENV\" -e '.[dev]'" in dev and 'install_into "$target" .' in dev, \
        "./dev setup and ./dev install share one install function"


@pytest.mark.parametrize("name", ["cpu", "cuda"])
def test_the_build_context_holds_what_the_images_copy_and_no_more(name):
    """Each COPY of the build stage names a package (with its shipped weights) or a file the
    install needs, and .dockerignore lets exactly those through."""
    copies = re.findall(r"^COPY (?!--from)(.+) (\S+)$", (DEPLOY / f"Dockerfile.{name}").read_text(), re.M)
    sources = {s.rstrip("/") for srcs, _ in copies for s in srcs.split()}
    assert sources == {"pyproject.toml", "README.md", "dev", *PACKAGES}
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("**")] == "**" and {f"!{s}" for s in sources} <= {
        i.rstrip("/") for i in ignore}


@pytest.mark.slow        # builds facegate's wheel
def test_the_build_context_makes_a_wheel_with_the_shipped_weights(tmp_path):
    """What `./dev install` builds in the image, from just what the Dockerfiles copy: the encoder's
    and the gates' weights inside."""
    import shutil
    import sys
    import zipfile

    context = tmp_path / "src"
    for name in ("pyproject.toml", "README.md", "dev", *PACKAGES):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            context.mkdir(exist_ok=True)
            shutil.copy2(src, context / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path / "dist"), str(context)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    [wheel] = (tmp_path / "dist").glob("facegate-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "encoder/weights/default.pt" in names
    assert {"gates/weights/daynight.pt", "gates/weights/trigger_word.pt"} <= names
    assert "facegate/v1/facegate_pb2.py" in names and "service/cli.py" in names and "service/health.py" in names


# ---------------------------------------------------------------------------------- Kubernetes
def test_every_deployment_container_has_grpc_probes_on_the_health_port(manifests):
    config = manifests.one("ConfigMap", "facegate")["data"]
    deployments = manifests.of_kind("Deployment")
    assert deployments
    for d in deployments:
        for c in d["spec"]["template"]["spec"]["containers"]:
            for probe in ("readinessProbe", "livenessProbe"):
                assert "grpc" in c[probe], f"{c['name']}: {probe} must ask grpc.health.v1"
                assert c[probe]["grpc"]["port"] == port(config["FACEGATE_HEALTH_LISTEN"])
            assert c["readinessProbe"]["grpc"].get("service") == "facegate.v1.FaceGate"
            declared = {p["containerPort"] for p in c["ports"]}
            assert {port(config["FACEGATE_LISTEN"]), port(config["FACEGATE_HEALTH_LISTEN"]),
                    port(config["FACEGATE_METRICS_LISTEN"])} <= declared


def test_every_deployment_runs_non_root_with_resources_and_the_volumes(manifests):
    config = manifests.one("ConfigMap", "facegate")["data"]
    for d in manifests.of_kind("Deployment"):
        pod = d["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in pod["containers"]:
            sc = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
            assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
            mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
            assert config["FACEGATE_DATA_DIR"] in mounts, "the data folder is a volume"
            assert mounts[config["FACEGATE_DATA_DIR"]]["name"] in volumes
            tls = mounts[config["FACEGATE_TLS_DIR"]]
            assert tls["readOnly"] is True and volumes[tls["name"]]["secret"]["secretName"] == "facegate-tls"
            assert {"configMapRef": {"name": "facegate"}} in c["envFrom"]
            store = {e["name"]: e for e in c["env"]}["FACEGATE_STORE"]["valueFrom"]["secretKeyRef"]
            assert store == {"name": "facegate-store", "key": "url"}


def test_the_secrets_hold_the_tls_folder_and_the_store_url(manifests):
    assert set(manifests.one("Secret", "facegate-tls")["stringData"]) == {"ca.crt", "server.crt", "server.key"}
    assert manifests.one("Secret", "facegate-store")["stringData"]["url"].startswith("postgresql://")
    assert not any("FACEGATE_STORE" in d.get("data", {}) for d in manifests.of_kind("ConfigMap")), \
        "the store URL carries a password: a Secret, not the ConfigMap"


def test_the_hpa_scales_the_deployment_and_the_services_select_its_pods(manifests):
    [hpa] = manifests.of_kind("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    deployment = manifests.one("Deployment", hpa["spec"]["scaleTargetRef"]["name"])
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": deployment["apiVersion"], "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    services = manifests.of_kind("Service")
    assert services
    for s in services:
        assert s["spec"]["selector"].items() <= labels.items()
        assert all(p["targetPort"] in ports for p in s["spec"]["ports"])
    assert "grpc" in {p["name"] for s in services for p in s["spec"]["ports"]}


# ------------------------------------------------------------------------------------ compose
def test_compose_runs_facegate_on_postgresql_with_prometheus_scraping_it():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"facegate", "postgres", "prometheus"}
    fg = services["facegate"]
    assert fg["build"]["dockerfile"] == "deploy/Dockerfile.cpu"
    env = fg["environment"]
    assert re.fullmatch(r"postgresql://facegate:\$\{FACEGATE_DB_PASSWORD:\?[^}]*\}@postgres:5432/facegate",
                        env["FACEGATE_STORE"])
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "facegate"
    assert fg["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "facegate-data:/data" in fg["volumes"] and "facegate-data" in compose["volumes"]
    assert all(p.startswith("127.0.0.1:") for s in services.values() for p in s.get("ports", [])), \
        "plaintext facegate and Prometheus are published on this machine's loopback only"
    metrics_port = port(env["FACEGATE_METRICS_LISTEN"])

    mounted = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    config_file = mounted["/etc/prometheus/prometheus.yml"]
    assert (DEPLOY / config_file).resolve() == (DEPLOY / "prometheus.yml").resolve()
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = [t for job in prom["scrape_configs"] if job.get("metrics_path", "/metrics") == "/metrics"
               for sc in job["static_configs"] for t in sc["targets"]]
    assert f"facegate:{metrics_port}" in targets


def test_every_facegate_variable_in_compose_and_kubernetes_names_a_setting(manifests):
    """A misspelt FACEGATE_* variable would be ignored without a word: each must be a Settings
    field, or one of the fields pinned for the other parts of the service (PINNED.md)."""
    from service.settings import Settings

    pinned = {"tls_dir", "insecure", "metrics_listen", "store"}
    config = manifests.one("ConfigMap", "facegate")["data"]
    container = manifests.one("Deployment", "facegate")["spec"]["template"]["spec"]["containers"][0]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["facegate"]["environment"]
    names = {*config, *(e["name"] for e in container["env"]), *compose}
    assert names >= {"FACEGATE_STORE", "FACEGATE_METRICS_LISTEN", "FACEGATE_TLS_DIR", "FACEGATE_INSECURE"}
    for key in names:
        assert key.startswith("FACEGATE_") and key.removeprefix("FACEGATE_").lower() in {*Settings.model_fields,
                                                                                         *pinned}, key

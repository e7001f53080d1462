"""deploy/ as files, for tests/deploy: the images' Dockerfiles read by BuildKit's own parser
(the `dockerfile` package) and the Kubernetes manifests."""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import dockerfile
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILES = {"cpu": DEPLOY / "Dockerfile.cpu", "cuda": DEPLOY / "Dockerfile.cuda"}
K8S = DEPLOY / "k8s"


@dataclass
class Stage:
    """What a Dockerfile's stage sets up (the last stage is the image)."""
    base: str
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)    # ["CMD", ...] as written, exec form
    user: str | None = None
    volumes: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)


def _form(c) -> list[str]:
    """ENTRYPOINT/CMD: the exec form as its list, the shell form as /bin/sh -c (Docker's rule)."""
    return list(c.value) if c.json else ["/bin/sh", "-c", c.value[0]]


def read_stages(path: Path) -> list[Stage]:
    args = {}
    stages: list[Stage] = []
    for c in dockerfile.parse_file(str(path)):
        if c.cmd == "ARG" and not stages:
            name, _, default = c.value[0].partition("=")
            args[name] = default
        elif c.cmd == "FROM":
            base = c.value[0]
            for k, v in args.items():
                base = base.replace("${" + k + "}", v)
            stages.append(Stage(base))
        elif c.cmd == "ENV":
            pairs = c.value
            for k, v in zip(pairs[::2], pairs[1::2]):
                stages[-1].env[k] = shlex.split(v)[0] if v else ""
        elif c.cmd == "ENTRYPOINT":
            stages[-1].entrypoint = _form(c)
            stages[-1].cmd = []              # as Docker does: a new ENTRYPOINT clears an inherited CMD
        elif c.cmd == "CMD":
            stages[-1].cmd = _form(c)
        elif c.cmd == "HEALTHCHECK":
            assert c.value[0] == "CMD", c.original
            stages[-1].healthcheck = list(c.value[1:]) if c.json else ["/bin/sh", "-c", c.value[1]]
        elif c.cmd == "USER":
            stages[-1].user = c.value[0]
        elif c.cmd == "VOLUME":
            stages[-1].volumes += list(c.value)
        elif c.cmd == "RUN":
            stages[-1].runs.append(" ".join(c.value))
    return stages


class Manifests(list):
    """Every document of deploy/k8s/*.yaml, as (file, document)."""

    def __init__(self):
        super().__init__((p, doc) for p in sorted(K8S.glob("*.yaml"))
                         for doc in yaml.safe_load_all(p.read_text()) if doc)

    def of_kind(self, kind: str) -> list[dict]:
        return [doc for _, doc in self if doc["kind"] == kind]

    def one(self, kind: str, name: str) -> dict:
        [doc] = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        return doc

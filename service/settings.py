"""The service's settings: one pydantic-settings class. Precedence: command-line flags, then
environment (FACEGATE_*), then the TOML file given to `serve --config`, then the defaults."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEGATE_", extra="forbid", frozen=True)

    listen: str = "127.0.0.1:50051"
    data_dir: Path = Path("data")
    store: str | None = None                  # postgresql://... shared by replicas; None: data_dir's files
    checkpoint: Path | None = None            # None: the encoder that ships with facegate
    default_site: str = "default"
    identify_k: int = Field(5, ge=1, le=100)
    identify_min_votes: int = Field(2, ge=1)
    max_message_bytes: int = Field(8 * 1024 * 1024, ge=1024)   # gRPC refuses larger: RESOURCE_EXHAUSTED
    max_pixels: int = Field(40_000_000, ge=1)
    max_cluster_photos: int = Field(500, ge=1)
    max_audio_bytes: int = Field(4 * 1024 * 1024, ge=1024)    # 10 s of 16-bit stereo 44.1 kHz is 1.7 MB
    daynight_checkpoint: Path | None = None   # None: the day/night gate that ships with facegate
    trigger_checkpoint: Path | None = None    # None: the trigger-word detector that ships with facegate
    gates: bool = True                        # False: no gated stages (light profile always "day")
    workers: int = Field(2, ge=1)             # threads running the face models
    # Verify/Identify/Cluster requests allowed to wait for a worker; one more is answered
    # RESOURCE_EXHAUSTED ("busy") at once (service/admission.py). Enroll photos wait instead.
    max_queue: int = Field(16, ge=0)
    # Verify/Identify photos of more pixels than this (a 4K camera frame's, 3840 x 2160) run on a
    # worker of their own at a lower CPU priority, behind large_photo_queue waiting places
    # (service/admission.py): uploads never hold the doors' frames up. 0: on the same workers.
    large_photo_pixels: int = Field(3840 * 2160, ge=0)
    large_photo_queue: int = Field(4, ge=0)
    # each model worker looks at its photos (decode, gates, detection, encoder) in a process of its
    # own (service/processes.py): the Python between the models' calls then never waits for another
    # worker's. False: in the server's threads (as micro-batching, batch_max > 1, requires).
    worker_processes: bool = True
    # micro-batching (service/batching.py): concurrent requests' detection and encoding run through
    # the networks together; a batch waits at most batch_window_ms for batch_max requests. Off (1) by
    # default: on 2 shared cores it saved ~10 % CPU per request but no throughput we could measure;
    # with it on, give it workers >= batch_max (e.g. workers 4, batch_max 4).
    batch_window_ms: float = Field(3.0, ge=0, le=100)
    batch_max: int = Field(1, ge=1, le=64)
    grace_seconds: float = 5.0
    tls_dir: Path | None = None               # mutual TLS: DIR's ca.crt, server.crt, server.key (service/auth.py)
    insecure: bool = False                    # without tls_dir, listen beyond loopback anyway (every caller is admin)
    metrics_listen: str | None = None         # HOST:PORT of the Prometheus /metrics endpoint; None: none
    # where the face models and the gates run: cpu, cuda (cuda:N), or auto (cuda when there is one)
    device: str = Field("cpu", pattern=r"^(cpu|auto|cuda(:\d+)?)$")
    # HOST:PORT of a plaintext port that answers only grpc.health.v1 (orchestrators' probes, which
    # cannot present a client certificate); None: health is asked on the service's own port only
    health_listen: str | None = None
    # the template index: flat (exact), hnsw, or auto (flat up to index.vector_index.AUTO_HNSW_ABOVE templates)
    index_kind: Literal["auto", "flat", "hnsw"] = "auto"

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)


def load_settings(config: str | Path | None = None, **overrides) -> Settings:
    """Settings from a TOML file (optional), the environment and explicit overrides (None = not given)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if config is None:
        return Settings(**given)
    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")

    class FileSettings(Settings):
        model_config = SettingsConfigDict(**{**Settings.model_config, "toml_file": path})

    return FileSettings(**given)

"""Settings read from the environment, with the embedded defaults of a laptop install."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path


def _home() -> Path:
    return Path(os.environ.get("OPENMAKER_HOME", "~/.openmaker")).expanduser()


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    storage_root: Path
    region: str = "kr1"
    flavors_file: Path | None = None
    images_file: Path | None = None
    algorithms_file: Path | None = None
    public_url: str = "http://127.0.0.1:10090"
    log_level: str = "INFO"
    # Where runners are: a Ray Jobs API address (the dashboard URL); None = the launcher's
    # local head, whose address the launcher exports before the app starts.
    ray_address: str | None = None
    # Roots that file:// URIs may name; nas://{id}:/ URIs map to these mount roots.
    file_roots: tuple[Path, ...] = ()
    nas_roots: dict[str, Path] = field(default_factory=dict)
    # s3:// through boto3 at this endpoint (None: AWS); obs://{host}/... over http when insecure.
    s3_endpoint_url: str | None = None
    obs_insecure: bool = False
    # The URL runners use to reach the control plane's internal API.
    internal_api_url: str = "http://127.0.0.1:10090"
    # The Python that runs job drivers on the Ray nodes.
    runner_python: str = "python"
    # host:port of the serving gateway as users reach it (a stage URL is {this}/{stage id})
    gateway_host: str = "127.0.0.1:10443"
    # how long an old default stage's pods serve after a default-stage change
    stage_switch_grace_s: float = 15.0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def runner_secret_file(self) -> Path:
        """The secret that runner callbacks are signed with (created by the launcher)."""
        return Path(
            os.environ.get("OPENMAKER_RUNNER_SECRET_FILE", str(self.home / "runner.secret"))
        )

    @classmethod
    def from_env(cls) -> Settings:
        home = _home()
        default_db = f"sqlite:///{home / 'openmaker.db'}"

        def optional_path(name: str) -> Path | None:
            value = os.environ.get(name)
            return Path(value).expanduser() if value else None

        return cls(
            home=home,
            database_url=os.environ.get("OPENMAKER_DATABASE_URL", default_db),
            storage_root=Path(os.environ.get("OPENMAKER_STORAGE_ROOT", str(home / "storage"))),
            region=os.environ.get("OPENMAKER_REGION", "kr1"),
            flavors_file=optional_path("OPENMAKER_FLAVORS_FILE"),
            images_file=optional_path("OPENMAKER_IMAGES_FILE"),
            algorithms_file=optional_path("OPENMAKER_ALGORITHMS_FILE"),
            public_url=os.environ.get("OPENMAKER_PUBLIC_URL", "http://127.0.0.1:10090"),
            log_level=os.environ.get("OPENMAKER_LOG_LEVEL", "INFO"),
            ray_address=os.environ.get("OPENMAKER_RAY_ADDRESS") or _ray_jobs_address(),
            file_roots=_paths(
                os.environ.get("OPENMAKER_FILE_ROOTS"), default=_default_roots(home)
            ),
            nas_roots=_nas_roots(os.environ.get("OPENMAKER_NAS_ROOTS", "")),
            s3_endpoint_url=os.environ.get("OPENMAKER_S3_ENDPOINT_URL") or None,
            obs_insecure=os.environ.get("OPENMAKER_OBS_INSECURE", "") in ("1", "true", "yes"),
            internal_api_url=os.environ.get(
                "OPENMAKER_INTERNAL_API_URL",
                os.environ.get("OPENMAKER_PUBLIC_URL", "http://127.0.0.1:10090"),
            ),
            runner_python=os.environ.get("OPENMAKER_RUNNER_PYTHON", "python"),
            gateway_host=os.environ.get("OPENMAKER_GATEWAY_HOST", "127.0.0.1:10443"),
            stage_switch_grace_s=float(
                os.environ.get("OPENMAKER_STAGE_SWITCH_GRACE_SECONDS", "15")
            ),
        )


def _ray_jobs_address() -> str | None:
    """``RAY_ADDRESS`` as a Jobs API URL: ``http(s)://`` kept, ``ray://host:10001`` and
    ``host:6379`` (GCS addresses) mapped to the dashboard on the same host at port 8265."""
    value = os.environ.get("RAY_ADDRESS", "").strip()
    if not value or value == "auto":
        return None
    if value.startswith(("http://", "https://")):
        return value.rstrip("/")
    host = value.split("://", 1)[-1].rsplit(":", 1)[0]
    return f"http://{host}:8265"


def _default_roots(home: Path) -> tuple[Path, ...]:
    return (Path.home(), Path(tempfile.gettempdir()), home)


def _paths(value: str | None, *, default: tuple[Path, ...]) -> tuple[Path, ...]:
    if value is None:
        return default
    return tuple(Path(p).expanduser().resolve() for p in value.split(os.pathsep) if p)


def _nas_roots(value: str) -> dict[str, Path]:
    """``id=/mnt/a,id2=/mnt/b`` (the NAS ids of ``nas://{id}:/path`` and their mounts)."""
    roots: dict[str, Path] = {}
    for item in value.split(","):
        if "=" in item:
            nas_id, path = item.split("=", 1)
            roots[nas_id.strip()] = Path(path.strip()).expanduser()
    return roots


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()


def reset_settings() -> None:
    """Forget cached settings (tests and the launcher change the environment)."""
    get_settings.cache_clear()

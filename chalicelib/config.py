"""Settings read from the environment, with the embedded defaults of a laptop install."""

from __future__ import annotations

import os
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
    extra: dict[str, str] = field(default_factory=dict)

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
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()


def reset_settings() -> None:
    """Forget cached settings (tests and the launcher change the environment)."""
    get_settings.cache_clear()

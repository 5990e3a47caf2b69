"""Schema migrations (Alembic), run by ``demixer migrate`` and at service start."""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config

from demixer.service.db import Database

__all__ = ["alembic_config", "migrate"]


def alembic_config() -> Config:
    """An Alembic config pointing at the migrations shipped inside the package."""
    config = Config()
    config.set_main_option(
        "script_location", str(resources.files("demixer.service") / "migrations")
    )
    return config


def migrate(db: Database, revision: str = "head") -> None:
    """Bring the database's schema to ``revision`` (idempotent)."""
    config = alembic_config()
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

"""The project's configs through Hydra's public compose API, for what composes without a Hydra
app: launch.py's up-front check and `grok.compose` (a notebook)."""

from contextlib import contextmanager
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

# The default sweeper and launcher register their configs (and sweep_id's resolver) on import.
# Hydra's plugin scan finds them too, but not through an editable install's import hook (the
# grok-launch console script run from another folder).
import hydra_plugins.grok_launchers.sequential_launcher  # noqa: F401
from hydra_plugins.grok_launchers._batch import Checker, groups_of


def conf_dir() -> Path:
    """conf/ of the checkout this module lies in (or of an editable install), else the copy a
    regular install packages as grok/conf (pyproject.toml). An absolute path: Hydra reads a
    relative config_path as a Python package, and there is no package `conf`."""
    root = Path(__file__).resolve().parents[2]
    if (root / "conf" / "config.yaml").is_file() and (root / "grok").is_dir():
        return root / "conf"
    from importlib.resources import files

    return Path(str(files("grok") / "conf"))


CONF = conf_dir()


@contextmanager
def hydra_compose():
    """Hydra's public compose API on conf/: yields its config loader."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        yield GlobalHydra.instance().config_loader()


def checker(loader, remote: bool) -> Checker:
    """A Checker composing jobs as `compose("config", overrides)` does."""
    return Checker(lambda o: compose("config", overrides=o), groups_of(loader),
                   OverridesParser.create(config_loader=loader), remote=remote)

"""Settings and model profiles, from (highest first) flags, environment, the TOML config file, defaults.

Environment: ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` feed the built-in ``default`` profile;
``CHAT_TUI_DB``, ``CHAT_TUI_CONFIG``, ``CHAT_TUI_PROFILE``, ``CHAT_TUI_MODEL``, ``CHAT_TUI_THEME`` are ours.
Nothing here touches the disk except reading the config file: directories are made when first needed.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core.errors import ConfigError

APP_NAME = "chat-tui"
DEMO_PROFILE = "demo"
DEFAULT_PROFILE = "default"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


def config_dir() -> Path:
    from platformdirs import user_config_path

    return user_config_path(APP_NAME)


def data_dir() -> Path:
    from platformdirs import user_data_path

    return user_data_path(APP_NAME)


class Secret:
    """An API key that never shows itself: repr, str and f-strings all print ``***``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Profile:
    """A named way to reach a model: where, which model, with which key and knobs."""

    name: str
    model: str = "gpt-4o-mini"
    base_url: str | None = None
    """None means OpenAI's own API."""
    api_key_env: str | None = "OPENAI_API_KEY"
    """The environment variable holding the key; ``api_key`` from the config file is used when unset."""
    api_key: Secret | None = field(default=None, repr=False)
    temperature: float | None = None
    max_tokens: int | None = None
    system_prompt: str | None = None
    timeout: float = 60.0
    """Seconds to wait for a connection or for the next piece of a stream before giving up."""

    @property
    def is_local(self) -> bool:
        """Local servers (Ollama, llama.cpp, the demo) need no key."""
        return self.base_url is not None and urlsplit(self.base_url).hostname in LOCAL_HOSTS

    def resolve_key(self, environ: Mapping[str, str] | None = None) -> Secret:
        environ = os.environ if environ is None else environ
        if self.api_key_env and environ.get(self.api_key_env):
            return Secret(environ[self.api_key_env])
        if self.api_key is not None:
            return self.api_key
        if self.is_local:
            return Secret("not-needed")
        where = f"set {self.api_key_env}" if self.api_key_env else "add api_key to its config section"
        raise ConfigError(f"No API key for profile '{self.name}': {where} (or run with --demo to try it offline).")


DEFAULT_THEME = "textual-dark"
"""The theme without a choice in the config, the environment or the app (a Textual theme name)."""


@dataclass(frozen=True)
class Settings:
    db_path: Path
    profiles: dict[str, Profile]
    default_profile: str
    config_path: Path
    theme: str = DEFAULT_THEME
    keys: dict[str, str] = field(default_factory=dict)
    """Binding id → key(s), from the ``[keys]`` table of the config file."""
    demo: bool = False
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False, compare=False)

    def profile(self, name: str | None = None) -> Profile:
        name = name or self.default_profile
        try:
            return self.profiles[name]
        except KeyError:
            known = ", ".join(sorted(self.profiles))
            raise ConfigError(f"Unknown profile '{name}'. Known profiles: {known}.") from None

    def with_demo_server(self, base_url: str) -> Settings:
        """Point the demo profile at a running local server."""
        demo = replace(self.profiles[DEMO_PROFILE], base_url=base_url)
        return replace(self, profiles={**self.profiles, DEMO_PROFILE: demo})


_PROFILE_FIELDS = {"model", "base_url", "api_key_env", "temperature", "max_tokens", "system_prompt", "timeout"}


def _check_url(url: str, where: str) -> str:
    """``url`` if it is a server address httpx can reach; else a ConfigError naming ``where`` it was given."""
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number from 0 to 65535
    except ValueError:  # an unclosed [IPv6 bracket, a bad port
        valid = False
    if not valid:
        raise ConfigError(f"{where}: '{url}' is not a server address; write it like http://localhost:11434/v1.")
    return url


def _profile_from_table(name: str, table: Mapping[str, Any], base: Profile | None) -> Profile:
    unknown = set(table) - _PROFILE_FIELDS - {"api_key"}
    if unknown:
        raise ConfigError(f"Profile '{name}' has unknown settings: {', '.join(sorted(unknown))}.")
    values = {k: v for k, v in table.items() if k in _PROFILE_FIELDS}
    if "base_url" in values:
        _check_url(str(values["base_url"]), f"Profile '{name}' base_url")
    if "api_key" in table:
        values["api_key"] = Secret(str(table["api_key"]))
    profile = base or Profile(name=name)
    try:
        return replace(profile, name=name, **values)
    except TypeError as exc:  # pragma: no cover - replace() only raises for unknown fields, filtered above
        raise ConfigError(f"Profile '{name}': {exc}") from None


def _read_config(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigError(f"Cannot read the config file {path}: {exc}") from None


def load_settings(
    *,
    db: str | os.PathLike[str] | None = None,
    profile: str | None = None,
    model: str | None = None,
    base_url: str | None = None,
    config: str | os.PathLike[str] | None = None,
    demo: bool = False,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge flags (the keyword arguments), environment, config file and defaults.

    ``model`` names a profile when one has that name, else overrides the chosen profile's model.
    """
    env = os.environ if environ is None else environ
    config_path = Path(config or env.get("CHAT_TUI_CONFIG") or config_dir() / "config.toml")
    file = _read_config(config_path)

    if env.get("OPENAI_BASE_URL") and not demo:  # the demo never reaches it
        _check_url(env["OPENAI_BASE_URL"], "OPENAI_BASE_URL")
    if base_url:
        _check_url(base_url, "--base-url")
    builtin_default = Profile(name=DEFAULT_PROFILE, base_url=env.get("OPENAI_BASE_URL") or None)
    profiles: dict[str, Profile] = {
        DEFAULT_PROFILE: builtin_default,
        DEMO_PROFILE: Profile(name=DEMO_PROFILE, model="demo", base_url=None, api_key_env=None, timeout=30.0),
    }
    tables = file.get("profiles", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{config_path}: [profiles] must be a table of tables.")
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{config_path}: profiles.{name} must be a table.")
        profiles[name] = _profile_from_table(name, table, profiles.get(name))
    if env.get("OPENAI_BASE_URL"):  # the environment outranks the file's [profiles.default] too
        profiles[DEFAULT_PROFILE] = replace(profiles[DEFAULT_PROFILE], base_url=env["OPENAI_BASE_URL"])

    if demo:
        chosen = DEMO_PROFILE
    else:
        chosen = profile or env.get("CHAT_TUI_PROFILE") or str(file.get("default_profile", DEFAULT_PROFILE))
    model = model or env.get("CHAT_TUI_MODEL")
    if model and model in profiles and not demo:
        chosen, model = model, None
    if chosen not in profiles:
        raise ConfigError(f"Unknown profile '{chosen}'. Known profiles: {', '.join(sorted(profiles))}.")
    if model or base_url:
        current = profiles[chosen]
        profiles[chosen] = replace(current, model=model or current.model, base_url=base_url or current.base_url)

    default_db = data_dir() / ("demo.sqlite3" if demo else "history.sqlite3")
    db_path = Path(db or env.get("CHAT_TUI_DB") or (None if demo else file.get("db")) or default_db)
    keys = file.get("keys", {})
    if not isinstance(keys, dict):
        raise ConfigError(f"{config_path}: [keys] must map binding ids to keys.")
    return Settings(
        db_path=db_path.expanduser(),
        profiles=profiles,
        default_profile=chosen,
        config_path=config_path,
        theme=str(env.get("CHAT_TUI_THEME") or file.get("theme", DEFAULT_THEME)),
        keys={str(k): str(v) for k, v in keys.items()},
        demo=demo,
        environ=env,
    )

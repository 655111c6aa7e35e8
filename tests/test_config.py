"""Settings: flags over environment over the config file over defaults; profiles; keys that never show."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import Profile, Secret, Settings, load_settings
from core.errors import ConfigError

KEY_IN_FILE = "sk-in-the-file-5d1e0b7c"
KEY_IN_ENV = "sk-in-the-env-93a4f2e8"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
db = "{tmp_path / "from-file.db"}"
default_profile = "work"
theme = "nord"

[profiles.work]
model = "work-model"
base_url = "http://work.example/v1"
api_key_env = "WORK_KEY"
temperature = 0.2
max_tokens = 500
system_prompt = "Be brief."
timeout = 12.5

[profiles.home]
model = "home-model"
base_url = "http://home.example/v1"

[profiles.keyed]
base_url = "https://keyed.example/v1"
api_key_env = "KEYED_KEY"
api_key = "{KEY_IN_FILE}"

[profiles.default]
base_url = "http://file-default.example/v1"

[keys]
send = "ctrl+s"
"""
    )
    return path


@pytest.fixture(autouse=True)
def _private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))


def chosen(settings: Settings) -> tuple[str, str, str | None]:
    profile = settings.profile()
    return profile.name, profile.model, profile.base_url


def test_defaults_without_file_or_environment(tmp_path: Path) -> None:
    settings = load_settings(environ={})
    assert settings.config_path == tmp_path / "xdg-config" / "chat-tui" / "config.toml"
    assert settings.db_path == tmp_path / "xdg-data" / "chat-tui" / "history.sqlite3"
    assert chosen(settings) == ("default", "gpt-4o-mini", None)
    assert (settings.theme, settings.keys, settings.demo) == ("textual-dark", {}, False)
    assert not (tmp_path / "xdg-data").exists()  # directories are made when first needed, not by loading settings


def test_the_file_beats_the_defaults(tmp_path: Path, config: Path) -> None:
    settings = load_settings(config=config, environ={})
    assert settings.db_path == tmp_path / "from-file.db"
    assert chosen(settings) == ("work", "work-model", "http://work.example/v1")
    assert settings.profile("default").base_url == "http://file-default.example/v1"
    assert (settings.theme, settings.keys) == ("nord", {"send": "ctrl+s"})


def test_the_environment_beats_the_file(tmp_path: Path, config: Path) -> None:
    environ = {
        "CHAT_TUI_CONFIG": str(config),
        "CHAT_TUI_DB": str(tmp_path / "from-env.db"),
        "CHAT_TUI_PROFILE": "home",
        "CHAT_TUI_MODEL": "env-model",
        "CHAT_TUI_THEME": "gruvbox",
    }
    settings = load_settings(environ=environ)
    assert settings.config_path == config
    assert settings.db_path == tmp_path / "from-env.db"
    assert chosen(settings) == ("home", "env-model", "http://home.example/v1")
    assert settings.theme == "gruvbox"

    with_url = load_settings(environ={**environ, "CHAT_TUI_PROFILE": "default", "OPENAI_BASE_URL": "http://env/v1"})
    assert chosen(with_url) == ("default", "env-model", "http://env/v1")


def test_flags_beat_the_environment(tmp_path: Path, config: Path) -> None:
    environ = {
        "CHAT_TUI_CONFIG": str(tmp_path / "elsewhere.toml"),
        "CHAT_TUI_DB": str(tmp_path / "from-env.db"),
        "CHAT_TUI_PROFILE": "home",
        "CHAT_TUI_MODEL": "env-model",
        "OPENAI_BASE_URL": "http://env/v1",
    }
    settings = load_settings(
        db=tmp_path / "from-flag.db",
        profile="work",
        model="flag-model",
        base_url="http://flag.example/v1",
        config=config,
        environ=environ,
    )
    assert settings.config_path == config
    assert settings.db_path == tmp_path / "from-flag.db"
    assert chosen(settings) == ("work", "flag-model", "http://flag.example/v1")
    assert settings.profile("home").model == "home-model"  # only the chosen profile is changed


def test_a_model_flag_that_names_a_profile_chooses_it(config: Path) -> None:
    assert chosen(load_settings(config=config, model="home", environ={})) == (
        "home",
        "home-model",
        "http://home.example/v1",
    )


def test_demo_uses_its_own_profile_and_database(tmp_path: Path, config: Path) -> None:
    settings = load_settings(config=config, demo=True, environ={"CHAT_TUI_PROFILE": "home"})
    assert settings.demo and settings.default_profile == "demo"
    assert settings.db_path == tmp_path / "xdg-data" / "chat-tui" / "demo.sqlite3"
    assert settings.with_demo_server("http://127.0.0.1:9/v1").profile().base_url == "http://127.0.0.1:9/v1"
    assert settings.profile().base_url is None  # with_demo_server returned a copy


def test_profiles_from_the_file_keep_every_setting(config: Path) -> None:
    work = load_settings(config=config, environ={}).profile("work")
    assert work == Profile(
        name="work",
        model="work-model",
        base_url="http://work.example/v1",
        api_key_env="WORK_KEY",
        temperature=0.2,
        max_tokens=500,
        system_prompt="Be brief.",
        timeout=12.5,
    )


def test_unknown_profiles_are_refused_with_the_known_ones(config: Path) -> None:
    known = "Known profiles: default, demo, home, keyed, work."
    with pytest.raises(ConfigError, match=f"Unknown profile 'nope'. {known}"):
        load_settings(config=config, profile="nope", environ={})
    with pytest.raises(ConfigError, match="Unknown profile 'from-env'"):
        load_settings(config=config, environ={"CHAT_TUI_PROFILE": "from-env"})
    with pytest.raises(ConfigError, match=f"Unknown profile 'later'. {known}"):
        load_settings(config=config, environ={}).profile("later")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[profiles.x]\nmodle = 'typo'\n", "Profile 'x' has unknown settings: modle."),
        ("this is = not toml = at all", "Cannot read the config file"),
        ("profiles = 3\n", "[profiles] must be a table of tables."),
        ("[profiles]\nx = 3\n", "profiles.x must be a table."),
        ("keys = 'ctrl+s'\n", "[keys] must map binding ids to keys."),
    ],
)
def test_a_bad_config_file_is_one_clear_error(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_settings(config=path, environ={})
    assert words in str(refused.value)


def test_where_a_key_comes_from(config: Path) -> None:
    settings = load_settings(config=config, environ={})
    keyed = settings.profile("keyed")
    assert keyed.resolve_key({}).reveal() == KEY_IN_FILE
    assert keyed.resolve_key({"KEYED_KEY": KEY_IN_ENV}).reveal() == KEY_IN_ENV  # the environment first
    assert Profile(name="local", base_url="http://localhost:11434/v1").resolve_key({}).reveal() == "not-needed"
    with pytest.raises(ConfigError, match="set WORK_KEY") as missing:
        settings.profile("work").resolve_key({})
    assert "--demo" in str(missing.value)
    with pytest.raises(ConfigError, match="add api_key to its config section"):
        Profile(name="bare", api_key_env=None).resolve_key({})


def test_a_secret_never_shows_itself(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = Secret(KEY_IN_ENV)
    assert secret.reveal() == KEY_IN_ENV
    shown = [repr(secret), str(secret), f"{secret}", f"{secret!r}", "%s" % secret, format(secret, "")]  # noqa: UP031
    assert all(KEY_IN_ENV not in text and "***" in text for text in shown)
    assert secret == Secret(KEY_IN_ENV) and secret != Secret("other") and secret != KEY_IN_ENV

    settings = load_settings(config=config, environ={"KEYED_KEY": KEY_IN_ENV, "WORK_KEY": KEY_IN_ENV})
    assert settings.profile("keyed").api_key == Secret(KEY_IN_FILE)
    print(settings, settings.profiles, settings.profile("keyed"))
    texts = [capsys.readouterr().out, repr(settings), str(settings.profile("keyed")), str(settings.profiles)]
    for text in texts:
        assert KEY_IN_ENV not in text and KEY_IN_FILE not in text


@pytest.mark.parametrize(
    ("kwargs", "environ", "file", "where"),
    [
        ({"base_url": "notaurl"}, {}, "", "--base-url: 'notaurl'"),
        ({}, {"OPENAI_BASE_URL": "localhost:11434/v1"}, "", "OPENAI_BASE_URL: 'localhost:11434/v1'"),
        ({}, {}, '[profiles.local]\nbase_url = "ftp://x/v1"\n', "Profile 'local' base_url: 'ftp://x/v1'"),
        ({"base_url": "http://[::1/v1"}, {}, "", "--base-url: 'http://[::1/v1'"),
        ({"base_url": "http://localhost:99999/v1"}, {}, "", "--base-url: 'http://localhost:99999/v1'"),
    ],
)
def test_a_server_address_that_is_not_a_url_is_refused_where_it_was_given(
    tmp_path: Path, kwargs: dict[str, str], environ: dict[str, str], file: str, where: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(file)
    with pytest.raises(ConfigError) as caught:
        load_settings(config=config, environ=environ, **kwargs)
    assert str(caught.value) == f"{where} is not a server address; write it like http://localhost:11434/v1."


def test_the_demo_does_not_check_openai_base_url_which_it_never_uses(tmp_path: Path) -> None:
    environ = {"OPENAI_BASE_URL": "localhost:11434"}
    assert load_settings(config=tmp_path / "none.toml", environ=environ, demo=True).demo

"""The [callbacks] section: defaults, the store beside the config file, checked values."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulk_sender.config import CallbacksSettings, load_settings, read_callback_secret
from bulk_sender.errors import ConfigError
from tests.conftest import write_config


def test_no_section_means_no_callbacks(tmp_path: Path) -> None:
    """A config without [callbacks] leaves them off (send does not post or merge)."""
    assert load_settings(write_config(tmp_path / "c.toml", "")).callbacks is None


def test_defaults_put_the_store_beside_the_config(tmp_path: Path) -> None:
    """An empty [callbacks] gives callbacks.db beside the config, 127.0.0.1:8090."""
    (tmp_path / "sub").mkdir()
    config = write_config(tmp_path / "sub" / "c.toml", "", callbacks={"host": "127.0.0.1"})
    callbacks = load_settings(config).callbacks
    assert callbacks == CallbacksSettings(store=str(tmp_path / "sub" / "callbacks.db"))
    assert (callbacks.host, callbacks.port, callbacks.secret_env) == (
        "127.0.0.1", 8090, "BULK_SENDER_CALLBACK_SECRET",
    )  # fmt: skip


def test_a_relative_store_is_taken_from_the_config_directory(tmp_path: Path) -> None:
    """store = "data/cb.db" is under the config's directory, not the working directory."""
    config = write_config(tmp_path / "c.toml", "", callbacks={"store": "data/cb.db"})
    settings = load_settings(config).callbacks
    assert settings is not None and settings.store == str(tmp_path / "data" / "cb.db")


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"port": 70000}, "[callbacks] port"),
        ({"port": "8090"}, "[callbacks] port"),
        ({"secret_env": "not a name"}, "[callbacks] secret_env"),
        ({"store": " "}, "[callbacks] store"),
        ({"stroe": "x.db"}, "[callbacks] stroe"),
    ],
)
def test_wrong_values_name_their_key(tmp_path: Path, values: dict[str, object], key: str) -> None:
    """A wrong or unknown [callbacks] key stops with exit 2's ConfigError naming it."""
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_settings(write_config(tmp_path / "c.toml", "", callbacks=values))


def test_the_secret_comes_only_from_the_environment() -> None:
    """The secret is read from the named variable, refused when empty, never shown."""
    settings = CallbacksSettings(secret_env="MY_SECRET")
    secret = read_callback_secret(settings, {"MY_SECRET": "s3cr3t"})
    assert secret.reveal() == "s3cr3t" and "s3cr3t" not in repr(secret)
    with pytest.raises(ConfigError, match="MY_SECRET"):
        read_callback_secret(settings, {})
    with pytest.raises(ConfigError, match="line break"):
        read_callback_secret(settings, {"MY_SECRET": "a\nb"})

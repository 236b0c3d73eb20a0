"""Configuration values: defaults defined once, validated before anything is opened."""

from __future__ import annotations

import inspect

import pytest

from threadstore import Store, open_store
from threadstore._config import Limits, StoreConfig, Timeouts
from threadstore.sqlite import DEFAULTS, SqliteConfig


def test_open_store_defaults_are_the_configuration_defaults() -> None:
    params = inspect.signature(open_store).parameters
    config = StoreConfig()
    assert params["projection_delay"].default == config.projection_delay == 0.0
    assert params["shutdown_timeout"].default == config.timeouts.shutdown == 5.0
    assert params["max_item_bytes"].default == config.limits.max_item_bytes == 1 << 20
    assert params["max_pending_bytes"].default == config.limits.max_pending_bytes == 64 << 20
    assert params["retry_interval"].default == config.timeouts.retry_interval == 30.0
    assert params["durability"].default == DEFAULTS.durability == "normal"
    assert params["reader_connections"].default == DEFAULTS.reader_connections == 2
    buffer = inspect.signature(Store.subscribe).parameters["buffer"].default
    assert buffer == config.limits.feed_buffer == 256


def test_from_options_builds_the_nested_values() -> None:
    config = StoreConfig.from_options(
        projectors=(),
        projection_delay=0.5,
        shutdown_timeout=1.0,
        max_item_bytes=10,
        max_pending_bytes=20,
        retry=None,
        retry_interval=None,
    )
    assert config.limits == Limits(max_item_bytes=10, max_pending_bytes=20)
    assert config.timeouts == Timeouts(shutdown=1.0, retry_interval=None)
    assert config.projection_delay == 0.5


def test_bad_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="projection_delay and shutdown_timeout"):
        StoreConfig(projection_delay=-1)
    with pytest.raises(ValueError, match="max_item_bytes and max_pending_bytes"):
        Limits(max_pending_bytes=0)
    with pytest.raises(TypeError, match="no name/project"):
        StoreConfig(projectors=(object(),))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="durability must be"):
        SqliteConfig(durability="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reader_connections must be an int >= 1"):
        SqliteConfig(reader_connections=True)

"""Shared test setup: every test starts from an empty gin config, so bindings parsed by one test
(e.g. the default run's warmup) never leak into another's explicit construction."""
import gin
import pytest


@pytest.fixture(autouse=True)
def _fresh_gin_config():
    gin.clear_config()
    yield
    gin.clear_config()

import pytest

from tests.tiny import build_tiny_llama


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A saved tiny Llama + ChatML tokenizer directory, built once per test session."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(params=["embedded", "services"])
def backend(request, tmp_path, monkeypatch):
    """A migrated studio database for in-process tests, on each backend."""
    from models_db.migrate import upgrade
    from tests.backends import backend_env, in_process

    with backend_env(request.param, tmp_path / "home") as env:
        with in_process(monkeypatch, env) as settings:
            upgrade()
            yield settings

import pytest

from tests.tiny import build_tiny_llama


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A saved tiny Llama + ChatML tokenizer directory, built once per test session."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))

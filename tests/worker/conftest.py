import pytest

from tests.tiny import build_tiny_bert


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A saved tiny 2-label BERT + tokenizer directory, built once per test session."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), num_labels=2)

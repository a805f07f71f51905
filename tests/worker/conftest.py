import pytest

from tests.tiny import build_tiny_bert


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A saved tiny 2-label BERT + tokenizer directory, built once per test session."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), num_labels=2)


@pytest.fixture
def trained_models(monkeypatch):
    """The model each Trainer.train call leaves in memory, in order (the recipe runs unchanged)."""
    from transformers import Trainer

    models = []
    real = Trainer.train

    def train(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        models.append(self.model)
        return out

    monkeypatch.setattr(Trainer, "train", train)
    return models

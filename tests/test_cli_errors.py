"""Bad input through the CLI: a clear message naming the file/row/field, a non-zero exit, nothing half-written."""
import json

import pytest

from tests.backends import backend_env
from tests.cli import Cli, write_instruction_jsonl


@pytest.fixture
def cli(tmp_path):
    with backend_env("embedded", tmp_path / "home") as env:
        c = Cli(env)
        c.run("db", "upgrade")
        yield c


def test_empty_file(cli, tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_text("")
    p = cli.run("dataset", "add", str(f), ok=False)
    assert p.returncode == 2 and "empty.jsonl" in p.stderr and "Traceback" not in p.stderr
    assert cli.json("dataset", "list")["datasets"] == []


def test_bad_rows_refused_unless_dropped_explicitly(cli, tmp_path):
    f = tmp_path / "some_bad.jsonl"
    write_instruction_jsonl(f, 5)
    with open(f, "a") as out:
        out.write(json.dumps({"instruction": "q", "output": ""}) + "\n")
        out.write("{not json\n")
    p = cli.run("dataset", "add", str(f), ok=False)
    assert p.returncode == 2 and "--drop-bad-rows" in p.stderr and "7" in p.stderr  # names the bad line
    assert cli.json("dataset", "list")["datasets"] == []
    ds = cli.json("dataset", "add", str(f), "--drop-bad-rows")["dataset"]
    assert ds["rows"] == 5 and ds["dropped_rows"] == 2


def test_same_content_reuses_the_version(cli, tmp_path):
    f = tmp_path / "a.jsonl"
    write_instruction_jsonl(f, 6)
    first = cli.json("dataset", "add", str(f))
    again = cli.json("dataset", "add", str(f))
    assert again["reused"] and again["dataset"]["id"] == first["dataset"]["id"]


def test_model_path_that_is_not_a_model(cli, tmp_path):
    (tmp_path / "notamodel").mkdir()
    p = cli.run("models", "import", str(tmp_path / "notamodel"), ok=False)
    assert p.returncode == 2 and "config.json" in p.stderr
    assert cli.json("models", "list")["models"] == []


def test_pickle_only_model_is_refused(cli, tmp_path):
    d = tmp_path / "pickled"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "llama"}')
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04")
    p = cli.run("models", "import", str(d), ok=False)
    assert p.returncode == 2 and "safetensors" in p.stderr and "pickle" in p.stderr


@pytest.mark.parametrize("setting,needle", [
    ("bogus=1", "unknown setting 'bogus'"),
    ("r=0", "r"),
    ("learning_rate=abc", "learning_rate"),
    ("lora_dropout=-0.1", "lora_dropout"),
    ("max_seq_length=2", "max_seq_length"),
])
def test_bad_settings_fail_before_queueing(cli, tiny_llama_dir, tmp_path, setting, needle):
    cli.json("models", "import", str(tiny_llama_dir), "--name", "tiny")
    f = tmp_path / "d.jsonl"
    write_instruction_jsonl(f, 6)
    ds = cli.json("dataset", "add", str(f))["dataset"]
    p = cli.run("train", "--model", "tiny", "--dataset", str(ds["id"]), "--set", setting, ok=False)
    assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr
    assert cli.json("jobs", "list")["jobs"] == []  # nothing was queued


def test_unknown_model_and_dataset(cli):
    p = cli.run("train", "--model", "nope", "--dataset", "1", ok=False)
    assert p.returncode == 2 and "nope" in p.stderr

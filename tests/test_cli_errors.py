"""Bad input through the CLI: a clear message naming the file/row/field, a non-zero exit, nothing half-written."""
import json
import shutil

import pytest

from tests.backends import backend_env
from tests.cli import Cli, write_instruction_jsonl


@pytest.fixture(scope="module")
def migrated_home(tmp_path_factory):
    """An embedded studio home migrated once by `studio db upgrade`; each test starts from a copy."""
    home = tmp_path_factory.mktemp("cli_errors") / "home"
    with backend_env("embedded", home) as env:
        Cli(env).run("db", "upgrade")
    return home


@pytest.fixture
def cli(tmp_path, migrated_home):
    with backend_env("embedded", tmp_path / "home") as env:
        shutil.copytree(migrated_home, tmp_path / "home")
        yield Cli(env)


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory, tiny_llama_dir):
    """A studio with the tiny model and a 6-row data set, shared by the bad-settings cases: none of them
    may queue anything, and each checks that the queue is still empty."""
    root = tmp_path_factory.mktemp("bad_settings")
    with backend_env("embedded", root / "home") as env:
        c = Cli(env)
        c.run("db", "upgrade")
        c.json("models", "import", str(tiny_llama_dir), "--name", "tiny")
        write_instruction_jsonl(root / "d.jsonl", 6)
        yield c, c.json("dataset", "add", str(root / "d.jsonl"))["dataset"]["id"]


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
def test_bad_settings_fail_before_queueing(model_and_data, setting, needle):
    cli, dataset_id = model_and_data
    p = cli.run("train", "--model", "tiny", "--dataset", str(dataset_id), "--set", setting, ok=False)
    assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr
    assert cli.json("jobs", "list")["jobs"] == []  # nothing was queued


def test_unknown_model_and_dataset(cli):
    p = cli.run("train", "--model", "nope", "--dataset", "1", ok=False)
    assert p.returncode == 2 and "nope" in p.stderr


@pytest.mark.parametrize("kind", ["embedded", "services"])
def test_before_the_schema_exists_no_sql_reaches_the_person(kind, tmp_path):
    # `studio dataset list` on a new home once printed raw SQL and an SQLAlchemy link
    with backend_env(kind, tmp_path / "home") as env:
        cli = Cli(env)
        p = cli.run("dataset", "list", "--json", ok=False)
        assert "SELECT" not in p.stderr and "sqlalche.me" not in p.stderr and "Traceback" not in p.stderr
        if kind == "embedded":  # SQLite under STUDIO_HOME: created on first use
            assert p.returncode == 0 and json.loads(p.stdout)["datasets"] == []
            assert "first use: creating the database" in p.stderr
            assert cli.run("advise", "--params-b", "1", "--json").returncode == 0
        else:  # a server database is never migrated behind its operator's back: one line says what to do
            assert p.returncode == 2 and p.stderr.count("\n") == 1
            assert "has no studio tables yet: run `studio db upgrade` first" in p.stderr and "postgres" in p.stderr

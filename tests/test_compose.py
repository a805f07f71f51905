"""docker-compose.yml: the services production needs, each with a health check and a restart policy, one
worker per GPU with its device reservation, every command a real `studio` CLI command, and the file
valid for docker compose itself (`docker compose config -q`)."""
import importlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from studio.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {"POSTGRES_PASSWORD": "test-pg-secret", "REDIS_PASSWORD": "test-redis-secret"}


@pytest.fixture(scope="module")
def spec():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def gpu_devices(service: dict) -> list[dict]:
    return service["deploy"]["resources"]["reservations"]["devices"]


def test_services_health_checks_restart_policies_and_volumes(spec):
    services = spec["services"]
    assert {"postgres", "redis", "studio", "worker-gpu0", "worker-gpu1", "worker-interactive"} <= set(services)
    for name, svc in services.items():
        assert svc["restart"] == "unless-stopped", name
        test = svc["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"][1]
    assert "redis-cli ping" in services["redis"]["healthcheck"]["test"][1]
    assert "http://127.0.0.1:7860/" in " ".join(services["studio"]["healthcheck"]["test"])
    for name in (n for n in services if n.startswith("worker")):
        test = services[name]["healthcheck"]["test"]
        assert test[-2:] == ["-m", "worker.health"], name
        importlib.import_module("worker.health")  # the module the check runs exists
        assert services[name]["depends_on"]["studio"]["condition"] == "service_healthy"  # migrated first
    declared = set(spec["volumes"])
    for name, svc in services.items():
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            assert source in declared, f"{name} mounts {source}, not a named volume"


def test_one_worker_per_gpu_with_its_device_and_cuda_visible_devices(spec):
    services = spec["services"]
    seen = []
    for name in ("worker-gpu0", "worker-gpu1"):
        (dev,) = gpu_devices(services[name])
        assert dev["driver"] == "nvidia" and "gpu" in dev["capabilities"] and len(dev["device_ids"]) == 1
        seen += dev["device_ids"]
        # inside the container the one reserved GPU is device 0
        assert services[name]["environment"]["CUDA_VISIBLE_DEVICES"] == "0"
    assert seen == ["0", "1"]
    (pair,) = gpu_devices(services["worker-gpus01"])
    assert pair["device_ids"] == ["0", "1"] and services["worker-gpus01"]["environment"]["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert "multi-gpu" in services["worker-gpus01"]["profiles"]


def test_secrets_come_from_the_environment(spec):
    text = (ROOT / "docker-compose.yml").read_text()
    assert "${POSTGRES_PASSWORD:?" in text and "${REDIS_PASSWORD:?" in text
    env = spec["services"]["studio"]["environment"]
    assert "${POSTGRES_PASSWORD" in env["STUDIO_DATABASE_URL"] and "${REDIS_PASSWORD" in env["STUDIO_BROKER_URL"]


def test_every_command_is_a_studio_cli_command(spec):
    parser = build_parser()
    for name, svc in spec["services"].items():
        cmd = svc.get("command")
        if not cmd or cmd[0] != "studio":
            continue
        args = parser.parse_args(cmd[1:])  # raises SystemExit on an unknown command or flag
        assert callable(args.fn), name
    assert spec["services"]["worker-interactive"]["command"][-2:] == ["--queues", "interactive"]


def compose_command() -> list[str] | None:
    """`docker compose` (the v2 plugin) or `docker-compose`; None without either."""
    if shutil.which("docker"):
        ok = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0
        if ok:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_config_accepts_the_file():
    cmd = compose_command()
    if cmd is None:
        if shutil.which("docker"):
            pytest.fail("the docker CLI is here but neither `docker compose` nor `docker-compose` is: "
                        "apt-get install docker-compose (or the compose plugin)")
        pytest.skip("no docker CLI on this machine")
    env = {**os.environ, **SECRETS}
    p = subprocess.run([*cmd, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], env=env, check=False,
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    # without the secrets compose refuses to start, naming what to set
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    p = subprocess.run([*cmd, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], env=env, check=False,
                       capture_output=True, text=True, timeout=60, cwd="/")
    assert p.returncode != 0 and "set POSTGRES_PASSWORD in .env" in p.stderr


def test_the_image_installs_every_extra_the_docs_say_it_has():
    """docs/production.md names the image's extras; the Dockerfile's pip line installs exactly those, and
    each is an extra pyproject.toml defines (a typo there installs nothing, silently)."""
    import tomllib

    docs = (ROOT / "docs" / "production.md").read_text()
    said = re.search(r"The image has the extras ((?:`[\w-]+`(?:,? and |, )?)+)", docs)
    assert said, "docs/production.md no longer says which extras the image has"
    documented = set(re.findall(r"`([\w-]+)`", said.group(1)))
    installs = re.findall(r'pip install [^&\n]*-e "\.\[([\w,-]+)\]"', (ROOT / "Dockerfile").read_text())
    assert len(installs) == 1, f"expected one `pip install -e \".[extras]\"` in the Dockerfile, found {installs}"
    installed = set(installs[0].split(","))
    defined = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    assert {"onnx", "s3"} <= documented == installed <= defined, (documented, installed, defined)

"""docker-compose.yml parses, and every command it runs is a real `studio` CLI command."""
from pathlib import Path

import yaml

from studio.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def test_compose_services_and_commands():
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = spec["services"]
    assert {"postgres", "redis", "studio", "worker-gpu0"} <= set(services)
    gpu = services["worker-gpu0"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert "gpu" in gpu["capabilities"]
    parser = build_parser()
    for name in ("studio", "worker-gpu0"):
        cmd = services[name]["command"]
        assert cmd[0] == "studio"
        args = parser.parse_args(cmd[1:])  # raises SystemExit on an unknown command or flag
        assert callable(args.fn)

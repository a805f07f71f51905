"""The worker layer's own commands: ``python -m worker serve | import-model | export | llama-cpp``.

The studio's CLI hands these over to a process of their own (studio/cli/handoff.py), because the studio
never imports the worker: serving a queue, importing a model and exporting a version need torch.
``import-model`` and ``export`` print one JSON object on stdout (the result, or ``{"error": ...}`` with exit
status 2); their progress goes to stderr, which the studio passes through to the person.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from studio.auth import cli_acting
from worker.errors import UserFacingError

ERROR_EXIT = 2  # a message written for the person; the studio's CLI prints it as its own error


def cmd_serve(args) -> dict | None:
    from worker.consumer import main

    main(queues=args.queues, gpus=args.gpus)
    return None


def cmd_import_model(args) -> dict:
    """Import a model folder or GGUF file, or one of the demo models (which are not imported twice)."""
    from models_db import queries as q
    from models_db import session_scope
    from worker.importer import DEMO_ENCODER_NAME, DEMO_NAME, demo_encoder_dir, demo_gguf, register

    if args.demo:
        src, name = demo_gguf(), args.name or DEMO_NAME
    elif args.demo_encoder:
        src, name = demo_encoder_dir(), args.name or DEMO_ENCODER_NAME
    else:
        src, name = Path(args.path), args.name
    if args.demo or args.demo_encoder:
        with session_scope() as db:
            existing = q.model_by_ref(db, name)
            if existing:
                return {"model_id": existing.id, "imported": False}
    print(f"importing {src} ...", file=sys.stderr)
    model_id, _ = register(src, name)
    return {"model_id": model_id, "imported": True}


def cmd_export(args) -> dict:
    from worker.export import export_version

    out = export_version(args.version_id, Path(args.out), format=args.format, say=lambda m: print(m, file=sys.stderr))
    return {"out": str(out)}


def cmd_llama_cpp(args) -> dict:
    """Unpack llama.cpp (GGUF exports' converter) from llama-cpp-python's sdist; --build: llama-quantize too."""
    from worker.gguf import fetch

    return {"llama_cpp_dir": str(fetch(build=args.build, say=lambda m: print(m, file=sys.stderr)))}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("serve", help="consume the queues (what `studio worker` runs)")
    sp.add_argument("--queues"), sp.add_argument("--gpus")
    sp.set_defaults(fn=cmd_serve)
    sp = sub.add_parser("import-model", help="import a base model (what `studio models import` runs)")
    sp.add_argument("--path"), sp.add_argument("--name")
    sp.add_argument("--demo", action="store_true"), sp.add_argument("--demo-encoder", action="store_true")
    sp.set_defaults(fn=cmd_import_model)
    sp = sub.add_parser("export", help="write a version to a folder (what `studio versions export` runs)")
    sp.add_argument("version_id", type=int), sp.add_argument("out"), sp.add_argument("format")
    sp.set_defaults(fn=cmd_export)
    sp = sub.add_parser("llama-cpp", help="unpack llama.cpp (the GGUF converter) from llama-cpp-python's sdist")
    sp.add_argument("--build", action="store_true", help="also build llama-quantize (for gguf-q4_k_m; minutes)")
    sp.set_defaults(fn=cmd_llama_cpp)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "serve":
        with cli_acting(False):  # a worker acts for every owner
            args.fn(args)
        return 0
    try:
        with cli_acting(True):  # as the account the studio's CLI acts for (STUDIO_USER, else the admin)
            result = args.fn(args)
    except UserFacingError as e:
        print(json.dumps({"error": str(e)}))
        return ERROR_EXIT
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

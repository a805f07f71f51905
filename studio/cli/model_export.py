"""`studio models export`: a base model as it is (no version), converted to GGUF with an Ollama Modelfile (or half
precision, bitsandbytes, ONNX) by a worker's export job, the same job a version's download runs: the same checks,
fidelity record and zip (worker/export_base.py). Registered under `studio models` by studio/cli/system.py."""
from __future__ import annotations

import sys
import zipfile
from pathlib import Path

from models_db import JobState, session_scope
from models_db import queries as q
from studio import exports, operations, store
from studio.cli.common import CliError, _job_line, emit, wait_for


def cmd_models_export(args):
    """Queue the export job (refused before queuing when the format converts nothing or the workers lack the
    memory); ``--wait`` follows it, ``--out DIR`` (which waits) unpacks the zip there."""
    with session_scope() as db:
        base = q.model_by_ref(db, args.model)  # only the models this person may use (models_db.access)
        if base is None:
            raise CliError(f"no base model {args.model!r} (studio models list)")
        base_id = base.id
    job = operations.submit_export(None, base_model_id=base_id, format=args.format)
    if not args.json:
        print(f"export job {job.id} [{job.state}]", file=sys.stderr)
    if args.wait or args.out:
        job = wait_for(job.id, quiet=args.json)
    out = operations.job_json(job)
    text = _job_line(job)
    if job.state == JobState.succeeded:
        result = job.result or {}
        zip_path = store.local(result["zip"], into_home=True)  # built on another machine: fetched from the store
        out.update(zip_path=str(zip_path), fidelity=result.get("fidelity"))
        record = result.get("fidelity") or {}
        verdict = "verified" if record.get("verified") else f"NOT verified: {record.get('reason')}"
        text += f"\n  {zip_path} ({result.get('format')}); {verdict}"
        if args.out:
            target = Path(args.out).resolve()
            with zipfile.ZipFile(zip_path) as z:
                z.extractall(target)
            out["out"] = str(target)
            text += f"\n  unpacked into {target}"
    emit(args, out, text)
    if (args.wait or args.out) and job.state != JobState.succeeded:
        sys.exit(1)


def register(g, add) -> None:
    sp = add(g, "export", cmd_models_export, "export a base model as it is (GGUF + Ollama Modelfile, ...) as a zip")
    sp.add_argument("model", help="model id or name")
    # every format name is taken, so that one a base has no use for (adapter, merged) is refused with the reason
    sp.add_argument("--format", default="gguf-f16", choices=list(exports.FORMATS),
                    help=f"one of {', '.join(exports.base_formats())} (default gguf-f16); adapter and merged are "
                         "for versions (a base has nothing trained to merge)")
    sp.add_argument("--wait", action="store_true", help="wait for the job, with a progress bar on stderr")
    sp.add_argument("--out", help="wait, then unpack the zip into this folder")

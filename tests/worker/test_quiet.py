"""Known harmless library messages stay out of the job log; everything else still reaches it."""
import logging
import warnings

from worker.quiet import HARMLESS, quiet_known_messages


def test_known_harmless_messages_are_dropped_and_others_kept(caplog):
    quiet_known_messages()
    log = logging.getLogger("bitsandbytes.backends.cpu.ops")  # where bitsandbytes says it, at import
    with caplog.at_level(logging.WARNING, logger="bitsandbytes.backends.cpu.ops"):
        log.warning("Failed to load CPU gemm_4bit_forward from kernels-community: Kernel repository ...")
        log.warning("Something the person should see")
    assert [r.getMessage() for r in caplog.records] == ["Something the person should see"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        quiet_known_messages()  # catch_warnings reset the filters: install again inside
        warnings.warn("`gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
        warnings.warn("a real deprecation", FutureWarning)
    assert [str(w.message) for w in seen] == ["a real deprecation"]
    assert all(why for *_, why in HARMLESS)  # each exception says why it is harmless

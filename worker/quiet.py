"""Library messages that alarm without informing, kept out of the job log.

Each entry is one known message that is harmless for the studio's jobs, with why. Anything else a
library says still reaches the log: this is a list of exceptions, not a volume knob."""
from __future__ import annotations

import logging
import re
import warnings

# (logger or warning category, the message's start, why it is harmless here)
HARMLESS = (
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community",
     "bitsandbytes' optional hub kernel; no hub here, the built-in 4-bit CPU kernel runs instead"),
    (FutureWarning, "`gradient_checkpointing` is deprecated",
     "transformers' rename to activation_checkpointing; the studio's option works either way"),
    (FutureWarning, "`is_gradient_checkpointing` is deprecated", "the same rename, read by the Trainer"),
    (FutureWarning, "`past_key_values` is deprecated", "transformers 5.25's rename to cache; peft still passes it"),
    (UserWarning, "bitsandbytes::gemv_4bit: an autograd kernel was not registered",
     "PyTorch's note on bitsandbytes' 4-bit kernels; their gradients are defined by bitsandbytes itself"),
)


class _DropHarmless(logging.Filter):
    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.starts)


def quiet_known_messages() -> None:
    """Install the filters (once per process, before the recipe imports the libraries)."""
    for source, start, _why in HARMLESS:
        if isinstance(source, str):
            logger = logging.getLogger(source)
            if not any(isinstance(f, _DropHarmless) and start in f.starts for f in logger.filters):
                logger.addFilter(_DropHarmless((start,)))
                for handler in logging.getLogger().handlers:
                    handler.addFilter(_DropHarmless((start,)))
        else:
            warnings.filterwarnings("ignore", message=re.escape(start), category=source)

"""Reading a downloaded torch pickle without running it: torch's weights-only unpickler with
an explicit allow-list, and its refusal (or any other read error) as one line.

The one home for `torch.load` of files from elsewhere (released diffs, released adapters)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ADVICE = ("Weights only load failed", "Check the documentation of torch.load")


class WeightsOnlyError(Exception):
    """A file torch's weights-only unpickler would not (or could not) read; the message is one line."""


def refusal_reason(err: BaseException) -> str:
    """torch's refusal as one line: the unpickler's own reason, whole, without torch's advice
    or terminal escapes.

    The reason follows "WeightsUnpickler error:" on its line ("Unsupported global: ...") or, for
    an opcode the unpickler cannot read, in the next paragraph ("Unsupported operand 149");
    without the marker it is a paragraph between the advice ("Trying to load unsupported
    GLOBAL posix.system whose module posix is blocked.")."""
    text = _ANSI.sub("", str(err))
    marker = text.find("WeightsUnpickler error:")
    if marker >= 0:
        text = text[marker:]
    reasons = [part for part in text.split("\n\n") if part.strip() and not part.strip().startswith(_ADVICE)]
    text = "\n".join(reasons) or text
    return " ".join(text.split()) or type(err).__name__


def load_weights_only(path: str | Path, allowed: Sequence[Any] = ()) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU with only ``allowed`` globals added to
    torch's own allow-list; raises WeightsOnlyError with the reason in one line."""
    try:
        # torch warns about any pickle protocol but 2 before it reads on; the one-line error is
        # what the user needs if the file is refused, and nothing if it loads.
        with torch.serialization.safe_globals(list(allowed)), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (weights-only refusals and corrupt files alike)
        raise WeightsOnlyError(refusal_reason(err)) from None

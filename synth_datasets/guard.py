"""How every command of this package ends, the CLI's and the scripts': exit 2 for usage or
configuration (nothing was sent), 1 for a failure, 130 when interrupted, each one line on stderr
in the command line's words; the tokens this process holds masked in what it prints.

Its own module, below ``testing/``, because the reference server's ``serve`` command runs through
it too, while the CLI's flags (``flags.py``) are built from the engines of ``testing/``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence

from .config import flag
from .errors import ConfigurationError, SynthError, UsageError, scrub

__all__ = ["in_cli_words", "run_guarded"]


# Keywords of library functions that the command line spells otherwise than ``--<keyword>``.
_SPELLED = {"n": "--ngram", "concurrency": "--actors"}  # report's --ngram, ray_expand.py's


def in_cli_words(message: str, *options: str | None) -> str:
    """A library error naming keywords ``options`` (the one at fault, and any other it names:
    ``ConfigurationError.also``) in the words of the command line: their flags (``pass
    model_id=`` -> ``pass --model-id``). The token has no flag: it comes from
    COLLINEAR_API_KEY, or from the bundled server with ``--local``."""
    for option in filter(None, options):
        if option == "api_key":
            message = message.replace("pass api_key=", "use --local (the offline reference server)")
            continue
        # A publishing keyword (allow_offline_data=True) is spelled as its flag too; not inside
        # quotes: a column may be named like an option.
        spelled = _SPELLED.get(option) or flag(option)
        message = re.sub(rf"(?<!['\"-])\b{option}\b(?!['\"-])(=True)?=?", spelled, message)
    return message


def run_guarded(
    prog: str,
    command: Callable[[argparse.Namespace], int],
    args: argparse.Namespace,
    *,
    verbose: bool = False,
    describe: Callable[[BaseException], str] | None = None,
) -> int:
    """Run a command the way every entry point here does: exit 2 for usage or configuration
    (nothing was sent), 1 for a failure, each as one line on stderr (a traceback with -v); the
    command itself returns ``cli.BUDGET_EXIT`` (``cli.budget_exit``) when it stopped at its budget.

    ``describe`` words the errors that are not ours (Ray's, say). A server may quote back the
    token it was sent (the Hub's errors and debug logs of its headers do): the tokens this
    process holds are masked in what it prints.
    """
    tokens = _tokens(args)
    masking = _Masking(tokens)
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(masking)
    # A run stopped at its budget ends with the command's own line (flags, BUDGET_EXIT): the
    # library's warning, in Python's terms, would say it twice.
    budget_log = logging.getLogger("synth_datasets.budget")
    budget_level = budget_log.level
    budget_log.setLevel(logging.ERROR)
    try:
        return command(args)
    except KeyboardInterrupt:
        print(
            f"{prog}: interrupted; answered requests are cached, rerun to resume", file=sys.stderr
        )
        return 130
    except Exception as exc:
        scrub(exc, *tokens)
        code = 2 if isinstance(exc, (UsageError, ConfigurationError)) else 1
        if verbose:
            traceback.print_exc()
        if describe is not None and not isinstance(exc, (UsageError, SynthError)):
            message = describe(exc)
        else:
            prefix = "" if isinstance(exc, (UsageError, SynthError)) else f"{type(exc).__name__}: "
            message = prefix + " ".join(str(exc).split())
            named = (getattr(exc, "option", None), *getattr(exc, "also", ()))
            message = in_cli_words(message, *named)
        print(f"{prog}: error: {message}", file=sys.stderr)
        return code
    finally:
        budget_log.setLevel(budget_level)
        for handler in handlers:
            handler.removeFilter(masking)


def _tokens(args: argparse.Namespace) -> list[str]:
    """The API and Hub tokens this process may hold (too short to be one: not masked)."""
    from huggingface_hub import get_token

    found = (
        getattr(args, "hf_token", None),
        os.environ.get("HF_TOKEN"),
        get_token(),
        os.environ.get("COLLINEAR_API_KEY"),
    )
    return [token.strip() for token in found if token and len(token.strip()) >= 8]


class _Masking(logging.Filter):
    """Masks the tokens in each record a handler prints."""

    def __init__(self, tokens: Sequence[str]) -> None:
        super().__init__()
        self.tokens = tokens

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = message
        for token in self.tokens:
            masked = masked.replace(token, "***")
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            scrub(record.exc_info[1], *self.tokens)
            record.exc_text = None
        return True

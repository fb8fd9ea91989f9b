"""Library messages that are not the user's business, moved to finexl's debug log.

transformers warns on every CLIP load that torchvision is missing and it uses its PIL image processor instead: the
PIL processor is the one finexl means to use (torchvision is deliberately absent, see ``finexl/compat.py``), so the
warning says nothing a user can act on. Such records are logged again at DEBUG under ``finexl.logs`` (for a caller
that logs at that level) and dropped from the library's own output. Anything else a library says still reaches the
user.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

# (the library logger that emits it, a part of the message): each one a message a user cannot act on
NOT_THE_USERS = (("transformers.utils.import_utils", "requires torchvision (not installed)"),)


class _ToDebug(logging.Filter):
    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.fragment in message:
            logger.debug("%s: %s", record.name, message)
            return False
        return True


def quiet_library_warnings() -> None:
    """Install the filters of :data:`NOT_THE_USERS` (once; importing no library). Called by the CLI."""
    for name, fragment in NOT_THE_USERS:
        target = logging.getLogger(name)
        if not any(isinstance(f, _ToDebug) and f.fragment == fragment for f in target.filters):
            target.addFilter(_ToDebug(fragment))


def honour_hub_progress_switch() -> None:
    """diffusers' loading bars follow ``HF_HUB_DISABLE_PROGRESS_BARS`` as transformers' and the hub's do (diffusers
    itself ignores it): the one switch for every loading bar. The CLI sets it unless ``-v``."""

    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").upper() in ("1", "ON", "YES", "TRUE"):
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()

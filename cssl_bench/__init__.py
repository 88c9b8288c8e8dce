"""cssl-bench: contrastive and siamese self-supervised learning benchmark.

Importing the package sets ``OMP_WAIT_POLICY=PASSIVE`` (unless the user set it) before torch is
imported anywhere below: with OpenMP's default busy-waiting, a neighbour process on a small CPU
machine makes torch an order of magnitude slower.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"


class UserError(Exception):
    """An error caused by the user's input: the CLI prints its message on one line and exits non-zero."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code

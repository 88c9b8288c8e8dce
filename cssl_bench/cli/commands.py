"""Imports every command module so that each registers its commands on ``app``."""

from cssl_bench.cli import (  # noqa: F401
    data_cmd,
    evaluate_cmd,
    import_cmd,
    misc_cmd,
    probe_cmd,
    table_cmd,
    train_cmd,
    transfer_cmd,
)

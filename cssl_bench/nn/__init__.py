"""Reusable network blocks: split / global batch norm (``norm``), collectives usable inside a model
(``distributed``), MLP heads (``heads``) and backbones (``backbones``). Imports nothing above ``config``."""

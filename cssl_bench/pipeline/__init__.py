"""The pipeline layer: plans and runs the pretrainings and probes a paper table needs (``reproduce``).

It sits above ``train`` and ``eval`` and below ``cli``; the torch-free ``results`` package (store, table
specs, renderers) never imports it.
"""

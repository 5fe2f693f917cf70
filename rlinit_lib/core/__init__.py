"""The leaf layer: what every study uses and nothing study-specific.

``params`` (parameter checks, config fields), ``runtime`` (device, seeds and random streams, environment
record), ``data`` (image datasets held as resident tensors, with train / validation / test splits),
``store`` (the run store, and ``read_upstream`` for another notebook's results), ``trials`` (the unit of
work and its executors), ``tracking`` (wandb that never stops a run), ``stats`` (the one interval
function and tests), ``verdicts`` (the words every comparison reads), ``plots`` (the band plot),
``notebook`` (notebook helpers, the Report, the paragraph every notebook shows), ``precision`` (fp32 / bf16),
``study`` (the study protocol and ``run``, the one function that runs any study). Imports no other part of ``rlinit_lib``.
"""

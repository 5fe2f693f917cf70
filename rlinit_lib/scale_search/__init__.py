"""Study 1, the dissertation's scale search, and its checks (notebooks 01, 02 and 05).

``networks`` (SimpleCNN, Table 3.1), ``training`` (the 7-epoch proxy, Sec. 4.2.1), ``batched`` (many
children at once), ``child`` (the child-training fields and the one-child trial), ``scale_env``
(ScaleEnv, Sec. 3.4), ``reinforce`` (the Sec. 3.5 agent), ``strategies`` (REINFORCE and the
alternatives behind one ask/tell interface), ``search`` (notebook 01), ``proxy_fidelity`` and
``fidelity_stats`` (notebook 02), ``strategy_comparison`` (notebook 05), ``plotting`` (their
figures), ``explorer`` (the interactive scale explorer).
"""

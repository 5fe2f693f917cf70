"""Study 1, the dissertation's scale search, and its checks (notebooks 01, 02 and 05).

``scale_env`` (ScaleEnv, Sec. 3.4), ``reinforce`` (the Sec. 3.5 agent), ``strategies`` (REINFORCE and the
alternatives behind one ask/tell interface), ``search`` (notebook 01), ``proxy_fidelity`` and
``fidelity_stats`` (notebook 02), ``strategy_comparison`` (notebook 05), ``plotting`` (their figures),
``explorer`` (the interactive scale explorer). The child network and its training live one layer below, in
``rlinit_lib.children``.
"""

"""Study 3, searching initialisation formulas (notebook 07; issue 27).

``grammar`` (the search space: per-layer formulas ``sigma_l = f(fan_in, fan_out, l, L, g)`` as prefix token
sequences under a length bound, canonicalised with sympy), ``searchers`` (REINFORCE over token sequences,
regularised evolution and random search behind one ask/tell interface, with JSON state for resuming),
``testbeds`` (plain deep networks where initialisation decides, and one short training of a candidate),
``rewards`` (validation accuracy and the dissertation's richer signals), ``experiment`` (notebook 07).
"""

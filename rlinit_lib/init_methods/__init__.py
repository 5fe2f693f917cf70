"""Study 1's follow-up: the searched scale against the initialisers practitioners use (notebook 06).

``experiment`` (the arms: PyTorch default, Xavier, He, the analytic SiLU gains, the searched scale, LSUV,
GradInit, MetaInit; width transfer; the report).
"""

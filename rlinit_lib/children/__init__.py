"""The child networks and how they train: the shared layer below the studies.

``networks`` (SimpleCNN, the dissertation's Table 3.1), ``training`` (one child: the 7-epoch proxy of
Sec. 4.2.1, evaluated on validation and test), ``batched`` (many children at once, one stacked model),
``child`` (the child-training fields every image study shares, and the one-child trial).
"""

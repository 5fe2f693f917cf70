"""The object of study shared by every study: weight initialisers (scaled He-normal, Xavier, PyTorch's
default; the dissertation's Sec. 3.3) and the signal-propagation theory of where the He scale should
sit for an activation. Imports only ``rlinit_lib.core``."""

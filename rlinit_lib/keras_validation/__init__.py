"""Study 1, Phase 2: the VGG-style Swish CNN of Table 4.1 in Keras 3 on the torch backend (notebook
03). ``model`` builds the network and ``ScaledHeNormal``; ``experiment`` runs scales over seeds,
compares them (Table 5.1 extended) and checks the transfer from the proxy (notebook 02)."""

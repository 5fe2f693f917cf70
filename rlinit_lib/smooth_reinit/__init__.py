"""Study 2, smooth re-initialisation (notebook 04).

``noise`` (the weight-noise hook, shrink-and-perturb, layer reset), ``dqn`` (minimalRL's DQN, one
run, the faithful path), ``cartpole_vec`` (CartPole for K environments at once), ``dqn_batched``
(many DQN runs together, identical returns), ``char_gpt`` (the character-level GPT),
``experiment`` (variants, controls, trials and the report of notebook 04).
"""

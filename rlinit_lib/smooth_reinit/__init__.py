"""Study 2, smooth re-initialisation (notebook 04).

``tasks`` (the tasks: CartPole-v1, Acrobot-v1, MinAtar Breakout; their reference environments, Q-networks,
budgets and score normalisation), ``cartpole_vec``, ``acrobot_vec``, ``minatar_vec`` (each task for K
environments at once, equal to its reference step for step), ``noise`` (the weight-noise hook,
shrink-and-perturb, layer reset), ``exploration`` (NoisyNet, adaptive parameter-space noise),
``plasticity`` (the Q-network's one forward, ReDo, soft shrink-and-perturb, the diagnostics), ``dqn``
(minimalRL's DQN with every arm, one run, the faithful path), ``dqn_batched`` (many DQN runs together,
identical returns), ``methods`` (per-run measures, rliable's aggregates, the correction family, the
exploration-or-plasticity reading), ``char_gpt`` (the character-level GPT), ``experiment`` (variants,
controls, tasks, trials and the report of notebook 04).
"""

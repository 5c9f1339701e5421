"""Reward modelling: `align rm` and its methods.

    train.py        `align rm`: the config, the pairwise loss of a batch, the run (start here)
    fit.py          the optimizer loop every reward model trains with (`align rm`, ensemble members)
    data.py         preference pairs loaded, tokenized and laid out for the reward model
    evaluate.py     scoring pairs: accuracy, loss, reward gap
    denoise.py      strength-aware denoising: flip, soft labels, margins, discard
    contrastive/    SimCSE / SwAV terms added to the pairwise loss, feature separability
    strength/       `align strength`: ensembles, preference strength, annotated and cleaned data
The losses themselves are pure functions in `align.losses`.
"""

"""Contrastive reward-model training (Wang et al. 2024, "Secrets of RLHF Part II", §4).

    term.py          the term added to the pairwise loss (SimCSE, SwAV) and the model wrapper that trains it
    separability.py  how distinct chosen and rejected features are on held-out pairs
    report.py        the report section: PCA of the features, the loss curves
The losses themselves (SimCSE, SwAV, Sinkhorn-Knopp) are pure functions in `align.losses`.
"""

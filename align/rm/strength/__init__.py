"""Preference strength from reward-model ensembles (Wang et al. 2024, "Secrets of RLHF Part II", §2).

    annotate.py     `align strength`: train the ensemble, annotate every pair, write cleaned data
    ensemble.py     members (in-sample, out-of-fold, cheap bootstrap heads) and strength statistics
    report.py       report.md: strength histogram, groups, slice accuracy, estimators compared
"""

"""`align ppo`: PPO-max against a reward model and/or a domain reward.

    config.py   every knob with its meaning and default
    train.py    the run: data, models, evaluation, the step loop, outputs
    step.py     one PPO step in five numbered phases
    losses.py   the pure pieces (KL, GAE, clipped losses, whitening, reward normalisation)
    rollout.py  experience as tensors, rewards from an RM and/or the domain
    models.py   policy, reference, critic, reward model
    data.py     prompts and PPO-ptx texts
    report.py   report.md with the training curves
"""
from align.ppo.config import Config
from align.ppo.train import run, train_ppo

__all__ = ["Config", "run", "train_ppo"]

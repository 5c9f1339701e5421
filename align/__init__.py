"""align: reward-model-centred RLHF (preference strength, denoising, contrastive RM, MetaRM, PPO-max)."""

__version__ = "0.1.0"

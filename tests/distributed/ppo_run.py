"""`align ppo` on tiny-llama with a programmatic reward, for tests/test_distributed.py.

    python ppo_run.py OUTPUT_DIR ROLLOUT BATCH [drop]        (under torchrun for several processes)

The reward counts the letter e (plus the prompt's number mod 3); with `drop`, process 1 gives no reward to its first sample of every
step (as a sandbox error would), so the processes hold different numbers of scored samples.
Greedy rollouts (temperature 0) make the sampled experience a function of the weights alone.
"""
import os
import sys

from align.ppo import Config, train_ppo
from align.types import Prompt, RewardOutput

output_dir, rollout, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
drop = len(sys.argv) > 4 and sys.argv[4] == "drop"
rank = int(os.environ.get("RANK", "0"))


def count_e(prompts, completions, **meta):
    # the prompt's number mod 3 makes rewards differ within a batch even when the tiny random policy answers
    # every prompt alike (its greedy answer is newlines), so every step has advantages to learn from
    outputs = [RewardOutput(reward=float(c.count("e") + int(p.id) % 3), parts={"length": len(c)})
               for p, c in zip(prompts, completions)]
    if drop and rank == 1:
        outputs[0] = RewardOutput(reward=None, parts={"status": "sandbox_error"})
    return outputs


config = Config(model="tiny-llama", output_dir=output_dir, domain_reward=True, rollout_batch_size=rollout,
                batch_size=batch, grad_accum=2, ppo_epochs=2, max_new_tokens=6, temperature=0.0,
                learning_rate=3e-3, critic_learning_rate=1e-3, kl_coef=0.01, max_steps=3, save_steps=0,
                log_steps=1, progress=False, report=False, precision="fp32", seed=0)
# prompts of one token length: one process pads a batch of 4 to the same width as two processes pad their 2,
# so the runs differ only by the order of sums (different padding shifts logits by ~1e-7, which Adam's
# per-coordinate normalisation amplifies over a few steps at this learning rate)
prompts = [Prompt(prompt=f"Say something, number {10 + i}.", id=str(i)) for i in range(16)]
train_ppo(config, prompts=prompts, reward_fn=count_e)

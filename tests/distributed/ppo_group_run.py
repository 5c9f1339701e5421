"""`align ppo` with group sampling and a critic-free estimator on tiny-llama, for tests/test_ppo_critic_free.py.

    python ppo_group_run.py OUTPUT_DIR ROLLOUT BATCH ADVANTAGE [single-pass]   (under torchrun for several processes)

Two completions per prompt, greedy (so the experience is a function of the weights alone and both members of a
group are the same text); the reward counts the letter e and adds 0.5 to the second member of each group, so the
group statistics are not trivial, and masks that member's last token out of the policy loss (FGO), so the two
members' gradients do not cancel; the first member of prompts 1 and 6 gets no reward (as a sandbox error would),
the same samples whatever the number of processes. `single-pass`: one epoch of one micro-batch per step (the update
reuses step 3's forward) instead of two epochs of accumulated micro-batches.
"""
import sys

from align.ppo import Config, train_ppo
from align.types import Prompt, RewardOutput

output_dir, rollout, batch, advantage = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
single_pass = sys.argv[5:] == ["single-pass"]
GROUP = 2


def count_e(prompts, completions, completion_offsets, **meta):
    outputs = []
    for i, (prompt, completion, offsets) in enumerate(zip(prompts, completions, completion_offsets)):
        member = i % GROUP  # a process's samples are whole groups, in order
        dropped = prompt.id in ("1", "6") and member == 0
        mask = [1] * (len(offsets) - 1) + [0] if member == 1 else None
        outputs.append(RewardOutput(reward=None if dropped else completion.count("e") + 0.5 * member, token_mask=mask))
    return outputs


config = Config(model="tiny-llama", output_dir=output_dir, domain_reward=True, rollout_batch_size=rollout,
                samples_per_prompt=GROUP, advantage=advantage, batch_size=batch,
                grad_accum=1 if single_pass else 2, ppo_epochs=1 if single_pass else 2,
                max_new_tokens=6, temperature=0.0, learning_rate=3e-3, kl_coef=0.05, max_steps=3, save_steps=0,
                log_steps=1, progress=False, report=False, precision="fp32", seed=0)
prompts = [Prompt(prompt=f"Say something, number {i}.", id=str(i)) for i in range(16)]
train_ppo(config, prompts=prompts, reward_fn=count_e)

"""From a training config to per-GPU memory: which models the run holds, how each is held (trained in
full, LoRA on a frozen base, frozen), and the working memory of each phase of a step.

Peak per GPU = Σ persistent state of every model (weights, gradients, optimizer, buffers)
             + max over phases of the phase's working memory + `ALLOWANCE`.
Gradients count as persistent (they live from the first micro-batch to the optimizer step).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from align.plan import memory as M
from align.plan.shapes import ModelShape, find_config, is_classifier_config, model_shape
from align.registry import get_domain
from align.types import Placeable


@dataclass(frozen=True)
class Held:
    """One model of the run and how it is held."""

    role: str
    shape: ModelShape
    training: str
    """`full`, `lora` or `frozen`."""
    trainable: int = 0
    trainable_linear: int = 0
    added: int = 0
    """Parameters on top of the built model: LoRA adapters, a value head."""
    prepared: bool = True
    """Handed to `accelerator.prepare` (sharded by ZeRO-3 / FSDP); frozen extras are not."""
    note: str = ""
    """Where the model comes from, when it is not the obvious (`the reward model's backbone + value head`)."""
    lora_r: int = 0
    heads: int = 0
    """Head parameters that train in full next to the adapters (a reward or value head)."""

    @property
    def params(self) -> int:
        return self.shape.params + self.added

    @property
    def frozen(self) -> int:
        return self.params - self.trainable


@dataclass(frozen=True)
class Run:
    """What does not depend on the model: precision, strategy, checkpointing, --model-config."""

    bf16: bool
    strategy: M.Strategy
    checkpointing: bool
    model_config: str | None = None


@dataclass
class Phase:
    name: str
    items: list[tuple[str, int]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(b for _, b in self.items)


# --------------------------------------------------------------------------- holding a model


def full(role: str, shape: ModelShape, added: int = 0, note: str = "") -> Held:
    return Held(role, shape, "full", shape.params + added, shape.linear_params + added, added, note=note)


def frozen(role: str, shape: ModelShape, note: str = "") -> Held:
    return Held(role, shape, "frozen", prepared=False, note=note)


def lora(role: str, shape: ModelShape, options, trained_head: int = 0, added: int = 0, note: str = "") -> Held:
    """Adapters on `options.target_modules`; `trained_head` parameters of the model (a reward head) and
    `added` ones (a value head) train in full."""
    adapters = M.lora_params(shape.lora_shapes(list(options.target_modules)), options.r)
    trainable = adapters + trained_head + added
    return Held(role, shape, "lora", trainable, trainable, adapters + added, note=note, lora_r=options.r,
                heads=trained_head + added)


def shape_of(name: str, key: str, kind: str, run: Run, num_labels: int | None = None) -> ModelShape:
    source = find_config(name, key, run.model_config)
    if kind == "sequence_classification" and num_labels is None and not is_classifier_config(source):
        num_labels = 1  # a plain backbone config standing in for a saved reward model: one head
    return model_shape(source, kind, num_labels)


# --------------------------------------------------------------------------- state and activations


def state_rows(held: Held, run: Run) -> list[tuple[str, int, int]]:
    """(label, params, bytes per GPU) of one model's persistent state."""
    s, bf16, t = run.strategy, run.bf16, held.trainable
    half = "bf16" if bf16 else "fp32"
    per = f" / {s.processes}"
    if held.training == "frozen":
        what = f"{half}, frozen"
    elif held.training == "lora":
        adapters = half if s.kind == "deepspeed" else "fp32"  # DeepSpeed casts the whole module
        what = f"{half} base, frozen + {adapters} LoRA r={held.lora_r}" + (" + head" if held.heads else "")
    elif s.kind == "deepspeed":
        what = f"{half} module" + (per if s.zero_stage == 3 else "")
    elif s.kind == "fsdp":
        what = f"fp32 shards{per}"
    else:
        what = "fp32 master weights" + (", bf16 autocast" if bf16 else "")
    rows = [(f"{held.role} weights ({what})", held.params,
             M.weight_bytes(t, held.frozen, s, bf16, held.prepared))]
    if not t:
        return rows
    sharded_grads = s.kind == "fsdp" or (s.kind == "deepspeed" and s.zero_stage >= 2)
    grad_dtype = half if s.kind == "deepspeed" else "fp32"
    rows.append((f"{held.role} gradients ({grad_dtype}{per if sharded_grads else ''})", t,
                 M.gradient_bytes(t, s, bf16)))
    master = " + fp32 master weights" if s.kind == "deepspeed" and bf16 else ""
    sharded_state = s.kind == "fsdp" or (s.kind == "deepspeed" and s.zero_stage >= 1)
    offloaded = s.offload_optimizer if s.kind == "deepspeed" else s.offload_params
    rows.append(((f"{held.role} optimizer (AdamW m, v fp32{master}{per if sharded_state else ''}"
                 f"{', offloaded to CPU' if offloaded else ''})"), t, M.optimizer_bytes(t, s, bf16)))
    buffers = M.buffer_bytes(t, held.params, s, bf16, held.shape.layer_params, held.shape.root_params)
    if buffers:
        name = {"ddp": "DDP gradient buckets", "deepspeed": f"ZeRO-{s.zero_stage} communication buckets",
                "fsdp": "FSDP gathered bf16 parameters"}[s.kind]
        rows.append((f"{held.role} {name}", None, buffers))
    return rows


def fp32_residual(held: Held, run: Run) -> bool:
    """fp32 master weights under autocast (one GPU / DDP, full training): fp32 embeddings, fp32 residual."""
    return run.bf16 and held.training == "full" and run.strategy.kind in ("single", "ddp")


def layer_bytes(shape: ModelShape, fp32: bool = False) -> int:
    if shape.gated_mlp:
        return M.swiglu_layer_bytes(shape.hidden, shape.intermediate, fp32)
    return M.gelu_layer_bytes(shape.hidden, shape.intermediate, shape.dropout, fp32)


def train_items(held: Held, run: Run, rows: int, length: int, logit_positions: int = 0,
                checkpointing: bool | None = None) -> list[tuple[str, int]]:
    """Working memory of one forward+backward of `rows` × `length` tokens through `held`."""
    ckpt = run.checkpointing if checkpointing is None else checkpointing
    fp32 = fp32_residual(held, run)
    tokens = rows * length
    scale = 1 if run.bf16 else 2
    acts = scale * M.training_activation_bytes(tokens, held.shape.layers, layer_bytes(held.shape, fp32),
                                               M.checkpoint_bytes(held.shape.hidden, fp32), ckpt)
    items = [((f"{held.role} activations, {rows} × {length} tokens"
              f"{', checkpointed' if ckpt else ''}"), acts)]
    if logit_positions:
        items.append((f"{held.role} logits, {logit_positions} positions × {held.shape.vocab} (fp32 loss)",
                      M.logits_bytes(logit_positions, held.shape.vocab, 2 if run.bf16 else 4, 2)))
    copies = M.autocast_copy_bytes(held.trainable_linear, run.strategy, run.bf16)
    if copies:
        items.append((f"{held.role} autocast bf16 copies of trained weights", copies))
    return items


def pass_items(held: Held, run: Run, rows: int, length: int, logit_positions: int = 0,
               fp32_buffers: int = 2) -> list[tuple[str, int]]:
    """Working memory of one no-grad pass."""
    scale = 1 if run.bf16 else 2
    items = [(f"{held.role} no-grad pass, {rows} × {length} tokens",
              scale * M.inference_bytes(rows * length, layer_bytes(held.shape)))]
    if logit_positions:
        items.append((f"{held.role} logits, {logit_positions} positions × {held.shape.vocab}",
                      M.logits_bytes(logit_positions, held.shape.vocab, 2 if run.bf16 else 4, fp32_buffers)))
    return items


def largest(*candidates: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return max(candidates, key=lambda items: sum(b for _, b in items))


# --------------------------------------------------------------------------- the commands


def plan_rm(config, run: Run, num_labels: int | None = None, role: str = "reward model") -> tuple[list, list]:
    """`align rm` (and each `align strength` member): a sequence classifier over chosen+rejected."""
    shape = shape_of(config.model, "model", "sequence_classification", run, num_labels or len(config.heads))
    options = getattr(config, "lora", None)
    held = (lora(role, shape, options, trained_head=shape.head_params) if options is not None and options.enabled
            else full(role, shape))
    views = 2 if getattr(getattr(config, "contrastive", None), "enabled", False) else 1
    train = train_items(held, run, views * 2 * config.batch_size, config.max_length)
    if views == 2:
        train[0] = (train[0][0] + " (2 contrastive views)", train[0][1])
    phases = [Phase(f"train step ({config.batch_size} pairs = {2 * config.batch_size} sequences)", train),
              Phase(f"evaluation ({config.eval_batch_size} pairs, no grad)",
                    pass_items(held, run, 2 * config.eval_batch_size, config.max_length))]
    return [held], phases


def plan_strength(config, run: Run) -> tuple[list, list]:
    """`align strength`: members train one after another, so one RM at a time (plus its scoring pass)."""
    labels = config.members if config.mode == "cheap" else len(config.heads)
    models, phases = plan_rm(config, run, labels, role="ensemble member")
    note = (f"{config.members} bootstrap heads on one backbone, trained once" if config.mode == "cheap"
            else f"{config.members} members trained one after another: one in memory at a time")
    return [dataclasses.replace(models[0], note=note)], phases


def plan_sft(config, run: Run) -> tuple[list, list]:
    shape = shape_of(config.model, "model", "causal_lm", run)
    options = config.lora
    held = lora("policy", shape, options) if options.enabled else full("policy", shape)
    phases = [Phase(f"train step ({config.batch_size} × {config.max_length} tokens)",
                    train_items(held, run, config.batch_size, config.max_length,
                                config.batch_size * config.max_length)),
              Phase("evaluation (no grad)", pass_items(held, run, config.eval_batch_size, config.max_length,
                                                       config.eval_batch_size * config.max_length))]
    return [held], phases


def _translation_rm(config) -> tuple[str | None, int, int]:
    """The model a domain's reward runs (the translation domain's `domain_options.reward_model`), its scoring
    batch and length, for a domain that is `Placeable`."""
    if not config.domain_reward:
        return None, 0, 0
    domain = get_domain(config.domain, **config.domain_options)
    return domain.scoring_model() if isinstance(domain, Placeable) else (None, 0, 0)


def plan_ppo(config, run: Run) -> tuple[list, list]:
    """`align ppo`: policy, reference (a frozen copy without LoRA), critic, reward model(s)."""
    from align.config import ConfigError

    if run.strategy.kind == "deepspeed":
        raise ConfigError(f"{run.strategy.source}: align ppo prepares two models (policy, critic) and accelerate's "
                          "DeepSpeed integration takes one per Accelerator; use MULTI_GPU (DDP) with lora.enabled=true")
    policy_shape = shape_of(config.model, "model", "causal_lm", run)
    options = config.lora
    policy = lora("policy", policy_shape, options) if options.enabled else full("policy", policy_shape)
    models = [policy]
    if not options.enabled:
        models.append(frozen("reference", policy_shape, "a frozen copy of the policy"))
    rm = rm_shape = None
    if config.reward_model:
        rm_shape = shape_of(config.reward_model, "reward_model", "sequence_classification", run)
        rm = frozen("reward model", rm_shape)
        models.append(rm)
    domain_rm_name, domain_batch, domain_length = _translation_rm(config)
    domain_rm = None
    if domain_rm_name:
        domain_rm = frozen("translation reward model",
                           shape_of(domain_rm_name, "domain_options.reward_model", "sequence_classification", run))
        models.append(domain_rm)
    critic = None  # a critic-free estimator (advantage=grpo|rloo|reinforce++) loads no critic
    if not config.critic_free:
        from_rm = config.critic_model == "reward_model" or (config.critic_model == "auto" and rm is not None)
        critic_name, critic_key = (config.reward_model, "reward_model") if from_rm else (config.model, "model")
        backbone = shape_of(critic_name, critic_key, "backbone", run)
        head = backbone.hidden + 1
        source = "the reward model's backbone" if from_rm else "the policy's backbone"
        critic = (lora("critic", backbone, options, added=head, note=f"{source} + value head") if options.enabled
                  else full("critic", backbone, added=head, note=f"{source} + value head"))
        models.insert(1, critic)

    prompt, new = config.max_prompt_length, config.max_new_tokens
    length, rollouts = prompt + new, config.rollout_samples
    kv_dtype = 4 if not run.bf16 or (policy.training == "full" and run.strategy.kind != "fsdp") else 2
    generation = Phase(f"generation ({config.generation_batch_size} prompts, KV cache)", [
        (f"KV cache, {config.generation_batch_size} × {length} tokens ({'bf16' if kv_dtype == 2 else 'fp32'})",
         M.kv_cache_bytes(config.generation_batch_size * length, policy_shape.layers, policy_shape.kv_heads,
                          policy_shape.head_dim, kv_dtype)),
        *pass_items(policy, run, config.generation_batch_size, prompt),
        (f"policy prompt logits, {config.generation_batch_size} × {prompt} positions",
         M.logits_bytes(config.generation_batch_size * prompt, policy_shape.vocab, kv_dtype, 0))])
    scoring = [pass_items(rm, run, config.reward_batch_size, config.reward_max_length)] if rm else []
    if domain_rm:
        scoring.append(pass_items(domain_rm, run, domain_batch, domain_length))
    critic_items = [pass_items(critic, run, rollouts, length)] if critic else []
    experience = largest(pass_items(policy, run, rollouts, length, rollouts * (new + 1), fp32_buffers=3),
                         *critic_items)
    micro = config.batch_size
    update = largest(*([train_items(critic, run, micro, length)] if critic else []),
                     train_items(policy, run, micro, length, micro * (new + 1)),
                     *([train_items(policy, run, config.ptx_batch_size, config.max_length,
                                    config.ptx_batch_size * config.max_length)] if config.ptx_coef > 0 else []))
    phases = [generation]
    if scoring:
        phases.append(Phase("scoring (reward model, no grad)", largest(*scoring)))
    passes = "log-probs, entropy, values" if critic else "log-probs, entropy"
    phases += [Phase(f"experience ({rollouts} rollouts: {passes}; no grad)", experience),
               Phase(f"update ({micro} × {length}-token micro-batches)", update)]
    return models, phases


PLANNERS = {"rm": plan_rm, "sft": plan_sft, "ppo": plan_ppo, "strength": plan_strength}

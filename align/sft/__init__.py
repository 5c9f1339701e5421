"""`align sft`: supervised fine-tuning (`train`: the config, the loss and the loop; `data`: examples,
packing, collation)."""

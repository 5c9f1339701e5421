"""Evaluation: `align eval` (`evaluate`: a domain's own evaluation, or a reward model's accuracy on a
preference file) and the statistics behind verdicts (`stats`)."""

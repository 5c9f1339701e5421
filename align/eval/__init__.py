"""Evaluation: `align eval` (`evaluate`: a domain's own evaluation, or a reward model's accuracy on a
preference file; `compare`: win / tie / lose of two policies under a judge from `judges`) and the statistics
behind verdicts (`stats`)."""

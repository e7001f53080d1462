"""Face detection and alignment, the 128-d encoder, triplet training and evaluation.

Nothing heavy is imported here: importing `encoder` loads no model."""

"""Small helpers shared by the recipe's building blocks: atomic file output, Kaldi tables, job launching."""

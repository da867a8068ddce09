"""Building blocks shared by the model plugins (embeddings, attention, encoder/decoder stacks, decomposition)."""

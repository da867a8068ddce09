"""The steps of a cell, each a function with typed inputs and outputs: train, prune, measure."""

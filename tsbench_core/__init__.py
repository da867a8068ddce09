"""tsbench: a plugin-based benchmark registry for pruning Transformer time-series forecasters."""

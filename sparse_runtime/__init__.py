"""The inference backend: runtime plugins, ONNX export with static shapes, deploy forms."""

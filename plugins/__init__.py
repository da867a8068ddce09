"""tsbench's built-in plugins, one family per package, registered through the same hooks as third parties."""

"""Everything supd runs. supctl never imports this package, so it starts fast."""

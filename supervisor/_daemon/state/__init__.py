"""Stored state: the durable store, delivery to children, and replay after every start."""

"""The engine every method shares: typed params (config), errors, the model loader,
parameter sets and snapshots, the Trainer runner and the one run choreography (runs),
the shared optimizer, composition and zero-shot scoring, atomic writes."""

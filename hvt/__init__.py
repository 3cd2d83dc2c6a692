"""haltingvt: train, evaluate, register and run HaltingVT, the adaptive token-halting video transformer."""

__version__ = "0.1.0"

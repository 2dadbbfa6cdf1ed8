"""kdbench: a benchmark harness for knowledge-distillation methods (seeded, paired, costed)."""

__version__ = "0.1.0"

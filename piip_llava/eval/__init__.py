"""Evaluation: LLaVA-1.5 benchmarks (questions, batched generation, official scorers), lmms-eval plugin."""

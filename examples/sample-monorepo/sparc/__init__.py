"""SPARC: a toy task decomposer that asks an LLM when it has to."""

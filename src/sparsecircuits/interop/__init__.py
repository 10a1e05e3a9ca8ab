"""Bridges to the field's other tools: the attribution-graph JSON that circuit-tracer and
Neuronpedia load, and Hugging Face Hub sources for released models."""

"""Bridges to the field's other tools: OpenAI's released checkpoint format, the
attribution-graph JSON that circuit-tracer and Neuronpedia load, and Hugging Face Hub
sources for released models."""

"""How learner and memory state is stored: tensors (safetensors) and JSON, never arbitrary pickles."""

"""A local server speaking the Gemini Live wire protocol, for offline runs and tests."""

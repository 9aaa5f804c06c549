"""The voice gateway: widget WebSocket calls relayed to Gemini Live sessions (docs/protocol.md)."""

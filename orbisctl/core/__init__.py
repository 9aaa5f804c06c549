"""The foundation every other part of orbisctl and backups may import: errors, the config
model, the install model, the secret registry, atomic file writes, progress reporting and the
Docker/Compose adapter. Nothing here imports anything above it (pyproject's import-linter
contract)."""

"""Zero-downtime rotation of the install's secrets (`orbisctl rotate-keys`, issue 7).

- `secretfiles`: atomic 0600 secret files, staging of new/old values, fingerprints
- `journal`: the on-disk journal of a rotation in progress, and the history (audit trail)
- `ports`: what the running stack must do for a rotation (roll services, administer stores)
- `direct`: those ports over direct connections to PostgreSQL, Redis and the Gemini endpoint
- `steps`: steps, their context and the journaled step runner
- `strategies`: the steps of each secret's rotation
- `core`: plan / rotate / resume / abort / status, called by `orbisctl.commands.rotate`
"""

"""Small, fast probes run by container HEALTHCHECKs and reused by `orbisctl doctor`."""

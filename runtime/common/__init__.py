"""Code shared by the runtime services: settings, database, redis, logging, metrics, keys."""

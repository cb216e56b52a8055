"""Runtime foundation shared by every service: settings, logging, db, redis, probes, metrics."""

"""Above the services: what builds and runs them all (the dev stack, the in-process and process
runners, the embedded PostgreSQL/Redis/Anvil, and the composition of the eleven apps)."""

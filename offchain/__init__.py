"""Credit-as-a-Service off-chain backend."""

"""`python -m offchain.chain.sender`."""

from offchain.chain.sender.runner import main

main()

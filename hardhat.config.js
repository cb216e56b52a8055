// Hardhat Network as a second, independent EVM for the system journeys (docs/CHAINS.md):
//   npx hardhat node --port 8545
// Interval mining (a block every 2 s, no automine) like a real chain; the dev mnemonic's
// accounts, so the dev roles of offchain/platform/devkeys.py are funded as on Anvil.
// Hardhat 2 (pinned in package.json): Hardhat 3 needs Node 22.
const blockTimeMs = Number(process.env.HARDHAT_BLOCK_TIME_MS || 2000);

module.exports = {
  networks: {
    hardhat: {
      chainId: 31337,
      hardfork: "cancun",
      mining: { auto: false, interval: blockTimeMs },
      accounts: {
        mnemonic: "test test test test test test test test test test test junk",
        count: 20,
        accountsBalance: "10000000000000000000000",
      },
    },
  },
};

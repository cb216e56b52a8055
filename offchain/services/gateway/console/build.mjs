// Bundles the consoles' ES modules (viem included once per page) into static/: `make setup` runs it.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "static");
mkdirSync(out, { recursive: true });
// Chunk names carry a content hash: clear the previous build's (keep .gitignore).
for (const name of readdirSync(out)) if (name !== ".gitignore") rmSync(join(out, name));
await build({
  entryPoints: ["signer", "auditor", "operator"].map((name) => join(here, "src", `${name}.js`)),
  bundle: true,
  format: "esm",
  splitting: true,
  minify: true,
  target: "es2022",
  outdir: out,
  chunkNames: "chunk-[hash]",
  logLevel: "warning",
});
copyFileSync(join(here, "src", "console.css"), join(out, "console.css"));

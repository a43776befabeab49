// Compiles the service (src/**/*.ts) to plain JavaScript in dist/, so that `npm start` and the images run
// `node dist/main.js` without a TypeScript loader in the process (tsx stays for development and tests).
//
//   npx tsx scripts/build-dist.ts        (npm run build; npm start runs it first)
//
// esbuild, file by file (no bundling): the output keeps src/'s layout, so every `import.meta.url`-relative
// path (projectRoot, models/models.json, the addons' lookup) resolves exactly as under tsx, and
// node-llama-cpp and the .node addons load from node_modules as before. esbuild rather than tsc: it comes
// with tsx, a production dependency, so the build works after `npm ci --omit=dev` (the images) where
// typescript is absent, and it takes well under a second. Types are checked by `npm run typecheck`, not here.
import { cpSync, readdirSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const srcDir = path.join(root, "src");
export const distDir = path.join(root, "dist");

type EsbuildApi = {
  build(options: Record<string, unknown>): Promise<{ errors: unknown[]; warnings: unknown[] }>;
};

/** esbuild as tsx resolves it (tsx depends on it; our package.json does not name it). */
function loadEsbuild(): EsbuildApi {
  const fromTsx = createRequire(createRequire(import.meta.url).resolve("tsx/package.json"));
  return fromTsx("esbuild") as EsbuildApi;
}

function typeScriptFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith(".ts") && !e.name.endsWith(".d.ts"))
    .map((e) => path.join(e.parentPath, e.name));
}

export async function buildDist(): Promise<string> {
  const started = performance.now();
  rmSync(distDir, { recursive: true, force: true });
  const entryPoints = typeScriptFiles(srcDir);
  await loadEsbuild().build({
    entryPoints, outdir: distDir, outbase: srcDir, bundle: false, platform: "node", format: "esm", target: "node20",
    tsconfig: path.join(root, "tsconfig.json"), logLevel: "warning",
  });
  // The playground's static files are served from next to the compiled routes (src/http/public -> dist/http/public).
  cpSync(path.join(srcDir, "http", "public"), path.join(distDir, "http", "public"), { recursive: true });
  return `dist/: ${entryPoints.length} files compiled in ${((performance.now() - started) / 1000).toFixed(2)} s`;
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    console.log(await buildDist());
  } catch (error) {
    console.error(`build-dist failed: ${error instanceof Error ? error.message : String(error)}`);
    process.exitCode = 1;
  }
}

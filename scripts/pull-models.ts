// Downloads the configured chat and embedding models into MODELS_DIR and checks every file against
// models/models.json (size and sha256), so a container image (BAKE_MODELS=1) or a Kubernetes init
// container starts the service with known-good files. Files already there are verified, not fetched again.
//
//   MODELS_DIR=/models npx tsx scripts/pull-models.ts      (npm run pull-models)
//
// Exit 0: every model present and verified; 1: a download or a check failed (the message says which).
import { pathToFileURL } from "node:url";
import { ConfigError, loadConfig } from "../src/config.ts";
import { ModelFileError, resolveModelFile, sha256File } from "../src/engine/modelFiles.ts";

export async function pullModels(env: NodeJS.ProcessEnv = process.env, log: (line: string) => void = (l) => console.error(l)): Promise<void> {
  const config = loadConfig(env);
  for (const [envName, setting] of [["LLM_MODEL", config.llmModel], ["EMBED_MODEL", config.embedModel]] as const) {
    // resolveModelFile downloads a missing file (sha256 checked) and checks an existing one's size only.
    const resolved = await resolveModelFile(setting, { modelsDir: config.modelsDir, allowDownload: true, envName, log });
    const expected = resolved.entry?.sha256 ?? null;
    if (expected === null) {
      log(`${envName}: ${resolved.path} (no sha256 in the manifest: not verified)`);
      continue;
    }
    const actual = await sha256File(resolved.path);
    if (actual !== expected) {
      throw new ModelFileError(`${resolved.path}: sha256 ${actual}, models.json says ${expected}. Delete the file and pull again.`);
    }
    log(`${envName}: ${resolved.name} ok (${resolved.path}, sha256 ${actual.slice(0, 12)}…)`);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  try {
    await pullModels();
  } catch (error) {
    if (error instanceof ConfigError || error instanceof ModelFileError) {
      console.error(error.message);
      process.exit(1);
    }
    throw error;
  }
}
